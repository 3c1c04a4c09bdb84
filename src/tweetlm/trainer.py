"""The HF Trainer as tweetlm drives it: a Trainer whose data loaders are tweetlm's (length-grouped,
balanced batches; packed or padded rows), and the callback that reports progress and stops a run on
Ctrl-C or at its time limit. Imported only when training (it imports torch and transformers).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import EvalLoopOutput

from tweetlm import distributed
from tweetlm.dataset import EpochBatches, PostDataset, collate, pack
from tweetlm.events import Evaluated, EventHandler, Logged, Started, Step
from tweetlm.fused import add_weight_grad
from tweetlm.loss import BUFFERS, CHUNK_TOKENS, causal_lm_loss
from tweetlm.optim import MasterAdamW

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
GLIBC_START = 128 * 1024  # both thresholds' values when a process starts


class Heap:
    """glibc's heap while training: free pages are kept from one step to the next, up to `pool` bytes.

    A step's blocks under the mmap threshold (activations of micro-batches, attention weights' gradients)
    come from the heap. Giving its free pages back after every step (`malloc_trim`, as tweetlm did until
    2026-12-05) made the kernel page them in again at the next one; kept, the next step reuses them. They
    fragment as batch shapes change, so what the heap keeps grows over a run: once the resident memory is
    more than `pool` bytes above where the last trim left it, the free pages go back (docs/performance.md
    has what each costs)."""

    POOL = 256 << 20

    def __init__(self, libc: Any = None, pool: int = POOL) -> None:
        self.libc = libc
        self.pool = pool
        self.steady: int | None = None  # resident bytes after the last trim
        self.trims = 0

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)
            self.steady = resident_bytes()
            self.trims += 1

    def after_step(self) -> None:
        if self.libc is not None and (self.steady is None or resident_bytes() - self.steady > self.pool):
            self.trim()


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def training_heap(threshold: int = 1 << 20) -> Iterator[Heap]:
    """glibc's allocator for training: blocks of `threshold` bytes and more get maps of their own, given back
    to the system when freed (glibc raises its threshold as large blocks are freed, up to 32 MB, after which
    training's activations and gradients, of ever-changing sizes, come from a heap that fragments and keeps
    what was freed: 0.7 GB on a long run); the heap is trimmed only when `Heap` says so, not by `free`.
    On leaving, the loss's kept buffers are freed, both thresholds return to glibc's starting values and
    the heap is trimmed. A
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment wins. Off glibc nothing changes."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc
        libc = None
    settings = {
        "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, threshold),
        "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 1 << 30),  # never, but when `Heap` trims
    }
    ours = [setting for variable, setting in settings.items() if variable not in os.environ] if libc else []
    for param, value in ours:
        libc.mallopt(param, value)
    heap = Heap(libc)
    try:
        yield heap
    finally:
        BUFFERS.release()
        for param, _ in ours:
            libc.mallopt(param, GLIBC_START)
        heap.trim()


# Posts a validation batch, whatever the training batch. The Trainer's validation loss is the mean of its
# batches' mean token losses (weighted by posts), so it depends on how the posts are batched: evaluated in
# the training batch size, 32-post runs read 0.36 lower than 16-post runs on Jack_L_Lance's base model
# (4.724 against 5.087). Fixed at HuggingTweets' 16, runs of any batch size compare, and with every figure
# measured before 2026-12-05 night (which trained, and so evaluated, in batches of 16).
EVAL_BATCH_POSTS = 16


@dataclass
class TrainData:
    """The encoded posts of a run: what the Trainer's loaders serve, and what the run records of them."""

    train_set: PostDataset
    val_set: PostDataset
    sampler: EpochBatches
    mix: dict[str, Any]
    pad_id: int
    batch_size: int
    packing_length: int | None  # rows of this many tokens when packing, else None (padded rows)
    steps_per_epoch: int
    tokens_per_epoch: int

    def collate_train(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        if self.packing_length:
            return pack(batch, self.pad_id, self.packing_length)
        return collate(batch, self.pad_id)

    def collate_eval(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id)


@dataclass
class Pace:
    """Where a run is in its learning-rate schedule: the larger of its share of the planned steps and,
    under a time budget, its share of the time the budget leaves for training. The rate follows this
    progress (warmup, then constant, linear or cosine decay), so a run the budget cuts short still
    finishes its schedule, decayed to zero, by the deadline instead of stopping at a high rate.

    `Control` measures the time share after each step (the same on every process) and ends the
    training when it reaches 1."""

    shape: str  # constant | linear | cosine
    warmup: float  # fraction of the progress
    planned_steps: int = 1
    time_progress: float = 0.0

    def progress(self, step: int) -> float:
        return min(1.0, max(step / max(self.planned_steps, 1), self.time_progress))

    def factor(self, step: int) -> float:
        """The learning rate at optimizer step `step`, as a fraction of the peak."""
        p = self.progress(step)
        if p < self.warmup:
            return p / self.warmup
        q = (p - self.warmup) / (1 - self.warmup)
        if self.shape == "cosine":
            return 0.5 * (1 + math.cos(math.pi * q))
        return 1 - q if self.shape == "linear" else 1.0


class TweetlmTrainer(Trainer):
    """The Trainer with tweetlm's batches: training batches from `EpochBatches`, validation batches of
    posts sorted by length (less padding, the same loss).

    Under several processes each takes its own share of both (the sampler shards by rank), and the
    validation loss is summed over all of them: the loss of the whole validation set, as one process
    computes it (the mean of the batches' losses).

    With `chunked_loss` the loss is computed from the final hidden states a chunk of tokens at a time
    (`tweetlm.loss`), where the model can be called in parts: one process, not compiled.

    The learning rate follows `pace` (steps, or the time budget, whichever is further along).

    A checkpoint taken at an evaluation holds the model only (the best is reloaded at the end): the
    optimizer state (masters and moments, 1.6 GB for SmolLM2-135M) is written only when the run stops to
    be resumed (`stop` set: Ctrl-C, a cancel). A run killed outright resumes from its last evaluation's
    weights with a fresh optimizer."""

    def __init__(
        self,
        *args: Any,
        data: TrainData,
        pace: Pace,
        stop: threading.Event | None = None,
        chunked_loss: bool = False,
        micro_batch_tokens: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.data = data
        self.pace = pace
        self.stop = stop or threading.Event()
        self.chunked_loss = chunked_loss
        self.micro_batch_tokens = micro_batch_tokens

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        self.args.save_only_model = not self.stop.is_set()
        super()._save_checkpoint(model, trial)

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            pace = self.pace
            pace.planned_steps = num_training_steps

            def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict skips it
                return pace.factor(step)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """A batch of more padded tokens than `micro_batch_tokens` goes forward and backward in parts of
        rows: each part's loss is its targets' summed loss over the whole batch's `num_items_in_batch`, so
        the gradients add up to the whole batch's, at a fraction of its activation memory. One process
        only (under DDP every backward would all-reduce)."""
        parts = split_rows(inputs, self.micro_batch_tokens)
        if len(parts) == 1 or num_items_in_batch is None or self.args.world_size > 1:
            return super().training_step(model, inputs, num_items_in_batch)
        step = super().training_step
        return torch.stack([step(model, part, num_items_in_batch) for part in parts]).sum()

    def _clip_grad_norm(self, model: torch.nn.Module) -> torch.Tensor:
        """The Trainer's gradient clipping, done by MasterAdamW inside its fused update (`MasterAdamW.clip`)."""
        inner = getattr(self.optimizer, "optimizer", self.optimizer)  # under accelerate's wrapper
        if isinstance(inner, MasterAdamW):
            return inner.clip(self.args.max_grad_norm)
        return super()._clip_grad_norm(model)  # type: ignore[no-any-return]

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        causal = direct_model(model, self.accelerator.unwrap_model(model)) if self.chunked_loss else None
        if causal is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = hidden_state_loss(causal, inputs, num_items_in_batch, autocast=self.accelerator.autocast())
        return (loss, {"loss": loss}) if return_outputs else loss

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        loader = torch.utils.data.DataLoader(
            self.data.train_set, batch_sampler=self.data.sampler, collate_fn=self.data.collate_train
        )
        return self._prepared(loader)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        val_set, size = self.data.val_set, EVAL_BATCH_POSTS
        order = sorted(range(len(val_set)), key=lambda i: len(val_set.sequences[i]))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        share = batches[self.args.process_index :: self.args.world_size]
        loader = torch.utils.data.DataLoader(val_set, batch_sampler=share, collate_fn=self.data.collate_eval)
        return self._prepared(loader)

    def _prepared(self, loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
        if self.args.world_size == 1:
            return self.accelerator.prepare(loader)
        from accelerate.data_loader import prepare_data_loader

        # The batches are this process's share already: on its device, not sharded again.
        return prepare_data_loader(loader, self.args.device, num_processes=1, process_index=0, put_on_device=True)

    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        if self.args.world_size == 1:
            return super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.args.device)  # summed losses, batches
        for inputs in dataloader:
            loss, _, _ = self.prediction_step(self.model, inputs, prediction_loss_only=True)
            total += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=total.device)])
        torch.distributed.all_reduce(total)
        metrics = {f"{metric_key_prefix}_loss": (total[0] / total[1]).item()}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(self.data.val_set))


def split_rows(inputs: dict[str, Any], max_tokens: int) -> list[dict[str, Any]]:
    """`inputs` cut into the fewest consecutive groups of rows of at most `max_tokens` padded tokens each
    (at least one row a group), as even as they go (16 rows that fit 10 at a time: 8 + 8, not 10 + 6);
    every tensor with a row per input row is cut, anything else is shared."""
    ids = inputs.get("input_ids")
    if not max_tokens or not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.numel() <= max_tokens:
        return [inputs]
    rows, width = ids.shape
    fits = max(1, max_tokens // width)
    per_part = math.ceil(rows / math.ceil(rows / fits))
    parts = []
    for start in range(0, rows, per_part):
        part = {}
        for key, value in inputs.items():
            cut = isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows
            part[key] = value[start : start + per_part] if cut else value
        parts.append(part)
    return parts


def direct_model(model: torch.nn.Module, unwrapped: torch.nn.Module) -> Any | None:
    """The causal LM that `hidden_state_loss` calls in parts (a LoRA model's base, its adapters in
    place), or None when `model` must be called whole: wrapped for several processes (which sync the
    gradients in its forward) or compiled (`unwrapped` is then another module), or with no linear head."""
    if unwrapped is not model:
        return None
    get_base_model = getattr(model, "get_base_model", None)  # peft
    causal = get_base_model() if callable(get_base_model) else model
    head = getattr(causal, "get_output_embeddings", lambda: None)()
    return causal if isinstance(head, torch.nn.Linear) else None


def hidden_state_loss(
    causal: Any,
    inputs: dict[str, Any],
    num_items: torch.Tensor | int | None = None,
    chunk: int = CHUNK_TOKENS,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """The causal-LM loss of `inputs` (input ids, mask or position ids, labels): the decoder's final hidden
    states, then the chunked loss through the output head (tied to the embeddings or not).

    The decoder runs within `autocast` (the Accelerator's, under `--precision amp`: calling the decoder
    directly bypasses the autocast that accelerate wraps the whole model's forward in); the loss runs
    outside it, in the head's dtype, as accelerate hands the model's outputs back in fp32."""
    features = {k: v for k, v in inputs.items() if k != "labels"}
    head = causal.get_output_embeddings()
    with autocast or contextlib.nullcontext():
        hidden = causal.get_decoder()(**features).last_hidden_state  # as the whole model calls it
        add = add_weight_grad(head.weight)  # None under autocast, as for the decoder's linear maps
    return causal_lm_loss(hidden.to(head.weight.dtype), head, inputs["labels"], num_items, chunk, add)


class Control(TrainerCallback, ExportableState):  # type: ignore[misc]
    """Progress events (start, step, eval, log), the evaluations within an epoch, the time budget, the
    stop flag (Ctrl-C, a cancel button) and early stopping.

    The Trainer evaluates (and saves a checkpoint) at the end of each epoch; this adds evaluations with
    checkpoints within it, `evals_per_epoch` an epoch in all (less one that the budget's final evaluation
    would follow within a quarter of an interval). Setting `stop` or reaching the time budget
    makes the Trainer end the epoch early, which evaluates and saves a checkpoint (once: not again at a
    step just evaluated). With a `patience`, training stops once that many evaluations in a row have not
    bettered the best validation loss; it reads the Trainer's log, which a resumed run restores, so it
    counts the evaluations before an interruption. `stopped_by` says which ended the run ("early_stop",
    "time_limit"), if one did.

    A time budget (`deadline`, on `time.monotonic()`'s clock) is for everything up to the saved run:
    training ends early enough to leave the time that a final evaluation (with its checkpoint) and the
    saving took before, measured on the evaluations so far. `pace` then gets the share of the training
    time used after each step; a resumed run continues from the share its checkpoint recorded."""

    SAVE_SECONDS = 15.0  # reloading the best checkpoint and writing the run folder (of a short budget: 10%)

    def __init__(
        self,
        emit: EventHandler,
        stop: threading.Event,
        data: TrainData,
        pace: Pace,
        deadline: float | None = None,
        patience: int | None = None,
        evals_per_epoch: int = 1,
        heap: Heap | None = None,
    ) -> None:
        self.emit = emit
        self.heap = heap or Heap()
        self.stop = stop
        self.data = data
        self.pace = pace
        self.deadline = deadline
        self.patience = patience
        self.evals_per_epoch = evals_per_epoch
        self.stopped_by: str | None = None
        self.evaluated_at: int | None = None  # the step of the latest evaluation
        self.t0 = time.monotonic()
        self.step0 = 0
        self.progress0 = 0.0  # the time share a resumed run had used
        self.eval_started: float | None = None
        self.eval_seconds = 0.0  # the longest evaluation so far, with its checkpoint and sample predictions
        self.save_seconds = self.SAVE_SECONDS

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"time_progress": self.pace.time_progress}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step0 = state.global_step
        self.t0 = time.monotonic()  # a resume's checkpoint loading is no part of the pace
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, dict):
            self.progress0 = self.pace.time_progress = float(saved.get("attributes", {}).get("time_progress", 0.0))
        self.eval_started = self.t0 if args.eval_on_start else None
        if self.deadline is not None:
            self.save_seconds = min(self.SAVE_SECONDS, 0.1 * max(0.0, self.deadline - self.t0))
        self.emit(Started(state.max_steps, state.global_step, self.data.steps_per_epoch, self.data.tokens_per_epoch))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.eval_started is not None:  # an evaluation (and its checkpoint) ran since the last step
            now = time.monotonic()
            self.eval_seconds = max(self.eval_seconds, now - self.eval_started)
            self.eval_started = None
            if state.global_step == self.step0:  # the base model's evaluation is no part of the training
                self.t0 = now

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.heap.after_step()
        now = time.monotonic()
        elapsed = now - self.t0
        done = state.global_step - self.step0
        share = self.time_share(now)
        # Every process takes the same decisions: a stop (Ctrl-C) on one is one on all, the largest share
        # of the time budget counts.
        stopping, share = distributed.max_over_ranks(float(self.stop.is_set()), share)
        self.pace.time_progress = share
        stopped, timed_out = stopping > 0, share >= 1.0
        if stopped:
            self.stop.set()
        if timed_out and not stopped:
            self.stopped_by = "time_limit"
        if timed_out or stopped:
            control.should_training_stop = True
        if self.evaluates_within_epoch(state.global_step) and not self.budget_ends_soon(now, elapsed / max(done, 1)):
            control.should_evaluate = True
            control.should_save = args.save_strategy != "no"
        if control.should_evaluate or control.should_training_stop:
            self.eval_started = now
        left = (state.max_steps - state.global_step) * elapsed / max(done, 1)
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - now))
        tokens = self.data.tokens_per_epoch * done / self.data.steps_per_epoch
        self.emit(
            Step(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch,
                elapsed=elapsed,
                eta=left,
                tokens_per_s=tokens / max(elapsed, 1e-9),
                loss=next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
            )
        )

    def time_share(self, now: float) -> float:
        """The share of the budget's training time used (0 without a budget): training ends where the
        final evaluation and the saving still fit before the deadline."""
        if self.deadline is None:
            return 0.0
        end = self.training_end(self.deadline)
        if end <= self.t0:
            return 1.0
        return self.progress0 + (1 - self.progress0) * (now - self.t0) / (end - self.t0)

    def budget_ends_soon(self, now: float, step_seconds: float) -> bool:
        """Whether the time budget ends training within a quarter of an evaluation interval after an
        evaluation started now: the final evaluation follows so soon that this one would only take its
        time from training (the lowest learning rates, where the loss is still falling)."""
        if self.deadline is None:
            return False
        interval = step_seconds * self.data.steps_per_epoch / self.evals_per_epoch
        return self.training_end(self.deadline) - now - self.eval_seconds < interval / 4

    def training_end(self, deadline: float) -> float:
        """When training ends for the final evaluation and the saving to fit before `deadline`."""
        return deadline - self.eval_seconds - self.save_seconds

    def evaluates_within_epoch(self, step: int) -> bool:
        """Whether the training evaluates after optimizer step `step` (counted over all epochs) before its
        epoch's end: at the first step at or past each 1/evals_per_epoch of the epoch."""
        per_epoch = self.data.steps_per_epoch
        within = step % per_epoch
        return (
            within > 0 and within * self.evals_per_epoch // per_epoch > (within - 1) * self.evals_per_epoch // per_epoch
        )

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.evaluated_at == state.global_step:  # stopped right after an evaluation within the epoch
            control.should_evaluate = control.should_save = False
        elif self.eval_started is None:  # the epoch's own evaluation follows
            self.eval_started = time.monotonic()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kw: Any) -> None:
        loss = metrics["eval_loss"]
        self.evaluated_at = state.global_step
        self.emit(Evaluated(state.global_step, state.epoch or 0.0, loss, math.exp(min(loss, 50))))
        if self.patience is None or state.global_step == 0 or control.should_training_stop:
            return
        if evals_since_best([h["eval_loss"] for h in trained_evaluations(state.log_history)]) >= self.patience:
            control.should_training_stop = True
            self.stopped_by = "early_stop"

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float], **kw: Any) -> None:
        if "loss" in logs:
            self.emit(Logged(state.global_step, logs["loss"], dict(logs)))


def trained_evaluations(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations in the Trainer's log after training steps (not the base model's, at step 0)."""
    return [h for h in log_history if "eval_loss" in h and h.get("step", 0) > 0]


def evals_since_best(losses: list[float]) -> int:
    """How many of `losses`, in order, came after the lowest (its first occurrence; NaN is never lowest)."""
    if not losses:
        return 0
    best = min(range(len(losses)), key=lambda i: (math.isnan(losses[i]), losses[i]))
    return len(losses) - 1 - best
