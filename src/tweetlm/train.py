"""Fine-tune a base model on the curated posts of one or more accounts, with the HF Trainer.

`train(config)` writes a self-describing run folder (see `tweetlm.runs`): the model and tokenizer
(`save_pretrained`), a generation config, a model card, `run.json` and `posts.json`. It is written under a
temporary name and renamed at the very end, so a failed run leaves no half-written folder; an interrupted
one leaves a checkpoint that `resume=True` continues. `train_trial(config)` trains and evaluates the same
way but keeps nothing (a sweep's trial).

Read top to bottom, a run is: `open_destination` (where it is written), `load_datasets`, `build_model`,
`build_data`, `training_arguments`, `make_trainer`, `fit`, `measure`, and `save_run`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import __version__, distributed, paths
from tweetlm.curate import CurateConfig, curate_account, mixed_languages
from tweetlm.dataset import (
    EpochBatches,
    PostDataset,
    Split,
    balance,
    check_enough_posts,
    data_hash,
    encode_posts,
    parse_mix,
    split_posts,
)
from tweetlm.errors import InputError, TrainingError
from tweetlm.events import Curated, Done, EarlyStopOff, EventHandler, Interrupting, Leftover, Loading, Stopped, ignore
from tweetlm.models import (
    PRECISIONS,
    BaseModel,
    check_base_model,
    load_model,
    load_tokenizer,
    quiet_progress,
    resolve_base_model,
    resolve_precision,
)
from tweetlm.options import option
from tweetlm.runs import (
    CHECKPOINTS,
    RESUME_FILE,
    BaseModelInfo,
    Metrics,
    RunFolder,
    RunInfo,
    RunPosts,
    Stopping,
    folder_prefix,
)
from tweetlm.sampling import generation_config
from tweetlm.store import Dataset, Store
from tweetlm.tracking import parse_report_to, prediction_callback, tracker_args

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments

    from tweetlm.trainer import Heap, TrainData, TweetlmTrainer

log = logging.getLogger("tweetlm")

SCHEDULERS = ("constant", "linear", "cosine")
ATTENTIONS = ("auto", "eager", "sdpa")
SAVE_DTYPES = ("auto", "bf16", "fp32")
# `tweetlm train --recipe NAME`: what each named recipe changes from TrainConfig's defaults (which are
# the "tweetlm" recipe, chosen for a CPU in docs/performance.md). Options given with it still win.
RECIPES: dict[str, dict[str, Any]] = {
    "tweetlm": {},
    # HuggingTweets' recipe, chosen with a sweep on 15 accounts on a GPU: 4 epochs at a low peak rate, no
    # time budget, no early stopping, evaluated once an epoch; the best epoch is kept.
    "huggingtweets": {
        "epochs": 4.0,
        "learning_rate": 1.372e-4,
        "batch_size": 16,
        "scheduler": "cosine",
        "warmup": 0.0,
        "max_minutes": None,
        "early_stop": False,
        "evals_per_epoch": 1,
    },
}
# Early stopping compares validation losses of the same posts from one evaluation to the next. Below this
# many posts (a few hundred tokens) a post or two decide whether the loss "improved", so a run would stop,
# or go on, by chance: it trains its fixed schedule instead. `split_posts` holds out at least 20 posts
# from an account of 60 or more, so only smaller accounts fall below it.
MIN_VALIDATION_TO_STOP = 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on. Defaults are HuggingTweets' sweep result where it has one."""

    accounts: tuple[str, ...]
    base_model: str = option(
        "smollm2",
        "Embedded 'smollm2', an HF model id (gpt2, ...) or a folder.",
        "--base-model",
        "-m",
        label="base model",
    )
    epochs: float = option(2.0, "Passes over the training posts (at most).", "--epochs", label="epochs")
    learning_rate: float = option(2e-4, "Peak learning rate.", "--learning-rate", "--lr", label="learning rate")
    scheduler: str = option("cosine", "constant, linear or cosine.", "--scheduler")
    warmup: float = option(0.0, "Warmup as a fraction of the steps.", "--warmup")
    grad_accum: int = option(1, "Gradient accumulation steps.", "--grad-accum")
    batch_size: int = option(16, "Posts per batch.", "--batch-size", "-b", label="batch size")
    max_length: int = option(128, "Tokens per post (longer ones are cut).", "--max-length", label="tokens per post")
    weight_decay: float = option(0.0, "AdamW weight decay.", "--weight-decay")
    precision: str = option(
        "auto",
        "auto (bf16 where the CPU/GPU supports it), bf16 (bf16 weights, fp32 master copy), amp (autocast) or fp32.",
        "--precision",
        label="precision",
    )
    group_by_length: bool = option(
        True, "Batch posts of similar length (less padding).", "--group-by-length/--no-group-by-length"
    )
    freeze_layers: int = option(
        0, "Freeze this many lower layers and the input embeddings (a tied head still trains).", "--freeze-layers"
    )
    train_layers: str = option(
        "all",
        "Which blocks train: all, top:N or bottom:N (then only those N blocks train; embeddings, head and "
        "final norm are frozen).",
        "--train-layers",
    )
    mix: str = option(
        "",
        "Weights of the accounts in each epoch, e.g. alice=0.7,bob=0.3 (default: balanced).",
        "--mix",
    )
    seed: int = option(42, "Seed of the split, the order and the initialisation.", "--seed", label="seed")
    max_steps: int | None = option(
        None, "Stop after this many optimizer steps.", "--max-steps", label="max steps (0: no limit)"
    )
    max_minutes: float | None = option(
        4.5,
        "Time budget of the run in minutes, model load to saved run: the learning-rate schedule is fitted "
        "to it, so a run it cuts short still decays to its end; 0: none.",
        "--max-minutes",
        label="time budget (minutes, 0: none)",
    )
    report_to: str = option(
        "trackio",
        "Trackers, comma-separated: trackio (local, in TWEETLM_HOME; `tweetlm dashboard`), wandb, mlflow, "
        "tensorboard; or none.",
        "--report-to",
    )
    keep_checkpoints: bool = option(False, "Keep the Trainer checkpoints in the run folder.", "--keep-checkpoints")
    batch_tokens: int = option(
        0, "Tokens per batch (posts of similar length) instead of --batch-size posts; 0: off.", "--batch-tokens"
    )
    packing: bool = option(
        False, "Pack each batch's posts into rows (attention stays within a post).", "--packing/--no-packing"
    )
    freeze_embeddings: bool = option(
        False, "Freeze the token embeddings (and an output head tied to them).", "--freeze-embeddings"
    )
    lora_rank: int = option(0, "Train LoRA adapters of this rank instead of all weights.", "--lora-rank")
    lora_alpha: float = option(32.0, "LoRA scale numerator (scale = alpha / rank).", "--lora-alpha")
    lora_learning_rate: float = option(1e-3, "Peak learning rate of the LoRA adapters.", "--lora-lr")
    threads: int = option(0, "CPU threads for torch (0: its default, one per core).", "--threads")
    compile: bool = option(False, "torch.compile the model (minutes of compiling on a CPU).", "--compile")
    attention: str = option("auto", "auto (eager on CPU), eager or sdpa.", "--attention")
    save_dtype: str = option(
        "auto", "Weights as saved: auto (bf16 when trained in bf16, half the size), bf16 or fp32.", "--save-dtype"
    )
    evals_per_epoch: int = option(
        2, "Validation evaluations (each a checkpoint) per epoch; the best is kept.", "--evals-per-epoch"
    )
    early_stop: bool = option(
        True,
        "Stop when the validation loss has not improved for --patience evaluations (keeps the best).",
        "--early-stop/--no-early-stop",
    )
    early_stop_patience: int = option(
        2, "Evaluations without a better validation loss before stopping early.", "--patience"
    )
    micro_batch_tokens: int | None = option(
        None,
        "Split a batch holding more padded tokens than this into parts whose gradients add up to the same "
        "step (bounds memory on accounts of long posts); 0: never split; default: 512 on a CPU, 256 on "
        "a GPU.",
        "--micro-batch-tokens",
    )
    chunked_loss: bool = option(
        True,
        "Compute the loss a chunk of tokens at a time, never the whole batch's logits (less memory; used in "
        "one process without --compile).",
        "--chunked-loss/--no-chunked-loss",
    )
    fused_blocks: bool = option(
        True,
        "Run the RMSNorms and MLPs of Llama-family models (SmolLM2, Llama, Mistral, Qwen2/3) as functions that "
        "keep 44% fewer activations for the backward pass, the same numbers (not with --precision amp); in one "
        "process, linear maps add their weights' gradients in place.",
        "--fused-blocks/--no-fused-blocks",
    )

    def __post_init__(self) -> None:
        checks = [
            (bool(self.accounts), "accounts", "name at least one account"),
            (self.epochs > 0, "epochs", "must be > 0"),
            (0 < self.learning_rate < 1, "learning_rate", "must be in (0, 1)"),
            (self.scheduler in SCHEDULERS, "scheduler", f"must be one of {', '.join(SCHEDULERS)}"),
            (0 <= self.warmup < 1, "warmup", "must be in [0, 1)"),
            (self.grad_accum >= 1, "grad_accum", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.max_length >= 8, "max_length", "must be >= 8"),
            (self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}"),
            (self.freeze_layers >= 0, "freeze_layers", "must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1"),
            (self.max_minutes is None or self.max_minutes >= 0, "max_minutes", "must be >= 0 (0: no budget)"),
            (not self.batch_tokens or self.batch_tokens >= self.max_length, "batch_tokens", "0 or >= max_length"),
            (
                self.micro_batch_tokens is None or self.micro_batch_tokens >= 0,
                "micro_batch_tokens",
                "must be >= 0 (0: never split)",
            ),
            (self.lora_rank >= 0, "lora_rank", "must be >= 0"),
            (self.lora_alpha > 0, "lora_alpha", "must be > 0"),
            (0 < self.lora_learning_rate < 1, "lora_learning_rate", "must be in (0, 1)"),
            (self.threads >= 0, "threads", "must be >= 0 (0: torch's default)"),
            (self.attention in ATTENTIONS, "attention", f"must be one of {', '.join(ATTENTIONS)}"),
            (self.save_dtype in SAVE_DTYPES, "save_dtype", f"must be one of {', '.join(SAVE_DTYPES)}"),
            (self.evals_per_epoch >= 1, "evals_per_epoch", "must be >= 1"),
            (self.early_stop_patience >= 1, "early_stop_patience", "must be >= 1"),
            (not (self.lora_rank and self.freeze_embeddings), "freeze_embeddings", "LoRA already freezes them"),
            (
                self.train_layers == "all" or not self.freeze_layers,
                "train_layers",
                "give it or freeze_layers, not both",
            ),
        ]
        if self.max_minutes == 0:
            object.__setattr__(self, "max_minutes", None)  # 0 is the flag's and the form's "no budget"
        parse_report_to(self.report_to)  # raises InputError naming the option
        parse_train_layers(self.train_layers)
        parse_mix(self.mix, self.accounts)
        for ok, name, why in checks:
            if not ok:
                raise InputError(f"{name}={getattr(self, name)!r}: {why}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["accounts"] = tuple(values["accounts"])
        return cls(**values)


@dataclass
class RunResult:
    run_dir: Path
    metrics: Metrics


class TrainingInterrupted(TrainingError):
    def __init__(self, partial_dir: Path, step: int, accounts: tuple[str, ...]) -> None:
        super().__init__(
            f"interrupted at step {step}: checkpoint saved in {partial_dir}; "
            f"continue with `tweetlm train {' '.join(accounts)} --resume`"
        )
        self.partial_dir = partial_dir


@dataclass(frozen=True)
class Destination:
    """Where a run is written: `work` while it trains; `final` once it is done, or None for a trial,
    which keeps nothing (no checkpoints, no run folder; `work` is a temporary folder)."""

    work: Path
    final: Path | None
    resume: bool = False

    @property
    def trial(self) -> bool:
        return self.final is None

    @property
    def name(self) -> str:
        return (self.final or self.work).name


@dataclass
class Hooks:
    """What the caller adds to a run: an event handler, extra HF callbacks, a flag that stops it."""

    emit: EventHandler = ignore
    callbacks: Sequence[TrainerCallback] = ()
    stop: threading.Event = field(default_factory=threading.Event)


# ---- the entry points ------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    store: Store | None = None,
    on_event: EventHandler | None = None,
    output: Path | None = None,
    resume: bool = False,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    stop: threading.Event | None = None,
    splits: dict[str, Split] | None = None,
) -> RunResult:
    """Train and write the run folder (`output`, or a new one under runs/); returns its path and metrics.

    `splits` replaces the seeded split of each account's curated posts (`tweetlm update` trains on the
    new posts and a replay of older ones).

    `callbacks` are extra HF TrainerCallbacks (trackers, sweep pruners); setting `stop` stops the run
    like Ctrl-C does (a checkpoint, then TrainingInterrupted). `resume` continues the newest interrupted
    run of `config.accounts` (its own config, not this one).

    Under `torchrun` or `accelerate launch` every process calls this: the main one chooses the folder,
    emits the events and writes the run; the others train their share and return the same result."""
    distributed.init()
    config, dest = distributed.from_main(lambda: open_destination(config, output, resume))
    hooks = Hooks(_main_only(on_event), callbacks, stop or threading.Event())
    metrics, run_dir = _run(config, store, dest, hooks, splits)
    assert run_dir is not None
    return RunResult(run_dir, metrics)


def open_destination(config: TrainConfig, output: Path | None, resume: bool) -> tuple[TrainConfig, Destination]:
    """Where a run is written (and, resuming, the config it was started with)."""
    if resume:
        work, saved = RunFolder.partial(tuple(config.accounts))
        return TrainConfig.from_dict(saved["config"]), Destination(work, Path(saved["final_dir"]), resume=True)
    final = output or RunFolder.new(config.accounts).path
    if final.exists():
        raise InputError(f"{final} already exists: choose another output folder")
    check_can_create(final, "--output" if output else "the run folder")  # before any model loads
    return config, Destination(RunFolder(final).partial_path, final)


def _main_only(on_event: EventHandler | None) -> EventHandler:
    return (on_event or ignore) if distributed.is_main() else ignore


def train_trial(
    config: TrainConfig,
    store: Store | None = None,
    on_event: EventHandler | None = None,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    stop: threading.Event | None = None,
) -> Metrics:
    """Train and evaluate as `train` does, keeping nothing: a sweep's trial. Returns the metrics."""
    work = Path(tempfile.mkdtemp(prefix="tweetlm-trial-"))
    hooks = Hooks(_main_only(on_event), callbacks, stop or threading.Event())
    try:
        metrics, _ = _run(config, store, Destination(work, None), hooks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return metrics


# oneDNN, which runs the bf16 matmuls on a CPU, keeps the kernels it builds for each new shape in two caches of
# 1,024 (its own, and the one of PyTorch's ideep layer): with batches of ever-changing lengths they held 0.7 GB
# more after 40 steps on an AMX Xeon (a whole run: peak RSS up to 4.08 GB). 128 each cost no time there
# (docs/performance.md). Both are read at the process's first bf16 matmul: a value in the environment wins,
# and a process that ran one before training keeps the caches it has.
KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}


def bound_kernel_caches() -> None:
    for name, value in KERNEL_CACHES.items():
        os.environ.setdefault(name, value)


def default_micro_batch_tokens() -> int:
    """The micro-batch size when none is given: 512 tokens on a CPU. AMX computes a matmul of a few hundred
    rows at a fifth of its peak, so larger parts pay there (20% less time a step than 256 on the account of
    the longest posts); on a CPU with only AVX512-BF16 512 took 8-10% less time a step than 256 in repeated
    runs (docs/performance.md), for 0.05-0.1 GB more at the peak. 256 on a GPU (not measured there)."""
    import torch

    return 256 if torch.cuda.is_available() else 512


def _run(
    config: TrainConfig, store: Store | None, dest: Destination, hooks: Hooks, splits: dict[str, Split] | None = None
) -> tuple[Metrics, Path | None]:
    bound_kernel_caches()
    check_base_model(config.base_model)  # fails fast, before data is prepared or a model loads
    # A curation done here is undone if the data then proves too small: a failed run changes nothing.
    # Under several processes the main one curates what needs it; the others then read its dataset.
    with distributed.main_first(), _opened(store) as opened, opened.transaction():
        datasets = load_datasets(opened, config.accounts, hooks.emit)
    if not dest.trial and not dest.resume and distributed.is_main():
        tidy_partials(config.accounts, hooks.emit)
    with _torch_threads(config.threads):
        return _train(config, datasets, dest, hooks, splits)


def _train(
    config: TrainConfig,
    datasets: dict[str, Dataset],
    dest: Destination,
    hooks: Hooks,
    given_splits: dict[str, Split] | None = None,
) -> tuple[Metrics, Path | None]:
    from tweetlm.fused import fused_blocks
    from tweetlm.trainer import training_heap

    started = time.monotonic()
    if config.micro_batch_tokens is None:  # recorded in run.json as chosen
        config = dataclasses.replace(config, micro_batch_tokens=default_micro_batch_tokens())
    splits = given_splits or {account: split_posts(ds.texts, config.seed) for account, ds in datasets.items()}
    with distributed.main_first():  # the main process dequantizes the embedded model; the others wait
        base = resolve_base_model(config.base_model)
    precision = resolve_precision(config.precision)
    hooks.emit(Loading(base.name, precision))
    model, tokenizer = build_model(config, base, precision)
    data = build_data(config, splits, tokenizer)
    patience, why_off = early_stopping(config, len(data.val_set))
    if config.early_stop and why_off:
        hooks.emit(EarlyStopOff(f"early stopping {why_off}: training the fixed schedule"))
    dest.work.mkdir(parents=True, exist_ok=True)
    if not dest.resume and not dest.trial and distributed.is_main():
        paths.write_json(
            dest.work / RESUME_FILE,
            {"config": config.to_dict(), "final_dir": str(dest.final), "tweetlm": __version__, "pid": os.getpid()},
        )
    args = training_arguments(config, dest, data, precision)
    # Sample predictions go to the run folder or a tracker: a trial that keeps neither skips them.
    keeps_samples = not dest.trial or bool(parse_report_to(config.report_to))
    predictions = [prediction_callback(config.to_dict(), datasets, splits, dest.work)] if keeps_samples else []
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    callbacks = [*predictions, *hooks.callbacks]
    # One process: the gradients added in place skip the weights' hooks, which DDP's all-reduce is.
    in_place = args.world_size == 1 and not config.compile
    with training_heap() as heap, fused_blocks(model, enabled=config.fused_blocks, grads_in_place=in_place):
        trainer = make_trainer(model, tokenizer, args, data, config, hooks, callbacks, patience, deadline, heap)
        fit(trainer, dest, hooks, config.accounts)
    distributed.barrier()  # every process has reloaded the best evaluation before the folder moves
    metrics = measure(trainer, data, dest, time.monotonic() - started)
    metrics.stopping = stopping(trainer, config, patience, why_off)
    hooks.emit(Stopped(metrics.stopping))
    run_dir = dest.final
    if dest.final is not None and distributed.is_main():
        save_run(_plain_model(trainer.model), tokenizer, config, base, precision, datasets, splits, data, metrics, dest)
    distributed.barrier()
    hooks.emit(Done(str(run_dir) if run_dir else None, metrics))
    return metrics, run_dir


@contextmanager
def _opened(store: Store | None) -> Iterator[Store]:
    """`store`, or the default store, opened for the block and closed after it."""
    if store is not None:
        yield store
        return
    with Store(create=False) as own:
        yield own


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if not threads and distributed.world_size() > 1 and not torch.cuda.is_available():
        threads = distributed.cpu_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)


# ---- the steps of a run ----------------------------------------------------------------------------


def load_datasets(store: Store, accounts: tuple[str, ...], on_event: EventHandler) -> dict[str, Dataset]:
    """The latest curated dataset of each account (curating with defaults if it never was)."""
    datasets: dict[str, Dataset] = {}
    events: list[Curated] = []
    for name in accounts:
        account = store.resolve_account(name)
        dataset = store.dataset(account)
        if dataset is None:
            dataset, report = curate_account(store, account, CurateConfig())
            events.append(Curated(account, report.to_dict(), dataset.hash))
        check_enough_posts(dataset.n_posts)
        if warning := mixed_languages(dataset):
            log.warning(warning)
        datasets[account] = dataset
    if len(set(datasets)) != len(accounts):
        raise InputError("an account is named twice")
    for event in events:  # said once the data has passed its checks
        on_event(event)
    return datasets


def parse_train_layers(spec: str) -> tuple[str, int] | None:
    """`all` -> None; `top:N` / `bottom:N` -> ("top", N) / ("bottom", N)."""
    if spec == "all":
        return None
    end, _, count = spec.partition(":")
    if end not in ("top", "bottom") or not count.isdigit() or int(count) < 1:
        raise InputError(f"train_layers={spec!r}: give all, top:N or bottom:N (N >= 1)")
    return end, int(count)


def trained_layers(config: TrainConfig, n_layers: int) -> list[int]:
    """The indices of the blocks that train: those above `freeze_layers`, or the `train_layers` end."""
    chosen = parse_train_layers(config.train_layers)
    if chosen is None:
        if config.freeze_layers > n_layers:
            raise InputError(f"freeze_layers={config.freeze_layers}: the model has only {n_layers} layers")
        return list(range(config.freeze_layers, n_layers))
    end, count = chosen
    if count > n_layers:
        raise InputError(f"train_layers={config.train_layers}: the model has only {n_layers} layers")
    return list(range(n_layers - count, n_layers)) if end == "top" else list(range(count))


def check_can_create(folder: Path, what: str) -> None:
    """Fail now, before any model loads, if `folder` cannot be created: probe its nearest existing
    parent with a temporary folder, removed at once (nothing is left behind)."""
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {folder}: {parent} is not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".tweetlm-probe-", dir=parent)).rmdir()
    except OSError as exc:
        raise InputError(f"{what} {folder}: cannot create a folder in {parent} ({exc.strerror})") from None


STALE_DAYS = 14  # an interrupted run's checkpoint older than this is removed by the next training


def tidy_partials(accounts: tuple[str, ...], emit: EventHandler) -> None:
    """Deal with the hidden `.partial` folders that killed trainings of these accounts left behind:
    remove those without a checkpoint (or older than STALE_DAYS), and point at `--resume` for the rest.
    A folder whose training process is still alive is left alone."""
    runs = paths.runs_dir()
    if not runs.is_dir():
        return
    prefix = folder_prefix(accounts) + "-"
    for folder in sorted(p for p in runs.glob(".*.partial") if p.name[1:].startswith(prefix) and p.is_dir()):
        try:
            saved = json.loads((folder / RESUME_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        pid = saved.get("pid") if isinstance(saved, dict) else None
        if isinstance(pid, int) and _alive(pid):
            continue
        age = (time.time() - _newest_mtime(folder)) / 86400
        checkpoints = sorted((folder / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: p.stat().st_mtime)
        if saved is None and age < 1 / 24:
            continue  # no resume file yet and recent: a training that is only starting
        if checkpoints and saved is not None and age < STALE_DAYS:
            step = checkpoints[-1].name.rsplit("-", 1)[-1]
            emit(
                Leftover(
                    f"an interrupted training of {', '.join(accounts)} left a checkpoint at step {step} in "
                    f"{folder}: `tweetlm train {' '.join(accounts)} --resume` continues it (training anew meanwhile)"
                )
            )
            continue
        why = f"older than {STALE_DAYS} days" if checkpoints else "no checkpoint in it"
        shutil.rmtree(folder, ignore_errors=True)
        emit(Leftover(f"removed {folder}, left by a killed training ({why})"))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for item in folder.rglob("*"):
        try:
            newest = max(newest, item.stat().st_mtime)
        except OSError:
            continue
    return newest


def prepare_model(model: PreTrainedModel, config: TrainConfig) -> PreTrainedModel:
    """Freeze what the config freezes, or wrap the model with LoRA adapters (on the blocks that train);
    returns the model to train."""
    layers = _decoder_layers(model)
    trained = trained_layers(config, len(layers))
    if not config.lora_rank:
        if config.train_layers == "all":
            freeze_lower_layers(model, config.freeze_layers, config.freeze_embeddings)
        else:
            model.requires_grad_(False)
            for index in trained:
                layers[index].requires_grad_(True)
        sparse_tied_embedding(model)
        return model
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    # Every linear map inside a block (attention and MLP), by its name there: q_proj, ..., or GPT-2's c_attn, ...
    maps = {
        name.rsplit(".", 1)[-1]: m for name, m in layers[0].named_modules() if isinstance(m, torch.nn.Linear | Conv1D)
    }
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=sorted(maps),
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in maps.values()),  # GPT-2 stores its weights transposed
        layers_to_transform=trained if len(trained) < len(layers) else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)  # type: ignore[return-value]


def freeze_lower_layers(model: PreTrainedModel, n_layers: int, embeddings: bool = False) -> int:
    """Freeze the lowest `n_layers` blocks and the input embeddings (with them, or alone with
    `embeddings`); returns the trainable parameters.

    A tied output head shares the embedding matrix: frozen layers keep it trainable for the head, and
    detach the embedding output, so the backward pass still stops at the lowest trainable layer.
    `embeddings=True` freezes the matrix, head included.
    """
    layers = _decoder_layers(model)
    if n_layers > len(layers):
        raise InputError(f"freeze_layers={n_layers}: the model has only {len(layers)} layers")
    embed = model.get_input_embeddings()
    if n_layers or embeddings:
        embed.requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)
    if n_layers and not embeddings and getattr(model.config, "tie_word_embeddings", False):
        embed.requires_grad_(True)
        embed.register_forward_hook(_detach_output)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sparse_tied_embedding(model: PreTrainedModel) -> bool:
    """Where the output head is tied to a trained input embedding (a plain `nn.Embedding`), the embedding
    sends its gradient back as the batch's rows (`loss.RowsEmbedding`), which autograd adds to the head's
    dense gradient. An untied embedding stays as it is: its gradient would be sparse itself, which AdamW
    and gradient clipping do not take. Returns whether it was switched."""
    import torch

    from tweetlm.loss import RowsEmbedding

    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = type(embed) is torch.nn.Embedding and head is not None and head.weight is embed.weight
    if tied and embed.weight.requires_grad and embed.max_norm is None and not embed.scale_grad_by_freq:
        embed.__class__ = RowsEmbedding  # the same module and weight (a state dict saves alike)
        return True
    return False


def _detach_output(module: Any, inputs: Any, output: Any) -> Any:
    return output.detach()


def _decoder_layers(model: PreTrainedModel) -> list[Any]:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            return list(module)
    raise InputError("cannot find the model's layers to freeze")


def build_model(
    config: TrainConfig, base: BaseModel, precision: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the tokenizer and the model in the run's precision, pick the attention kernel, then freeze
    layers or add LoRA adapters (`prepare_model`)."""
    import torch
    import transformers

    tokenizer = load_tokenizer(base.path)
    transformers.set_seed(config.seed)
    model = load_model(base.path, dtype=torch.bfloat16 if precision == "bf16" else None)
    if config.attention == "eager" or (config.attention == "auto" and not torch.cuda.is_available()):
        model.set_attn_implementation("eager")  # on CPU, faster than sdpa's backward for post-sized rows
    elif config.attention == "sdpa":
        model.set_attn_implementation("sdpa")
    return prepare_model(model, config), tokenizer


def build_data(config: TrainConfig, splits: dict[str, Split], tokenizer: PreTrainedTokenizerBase) -> TrainData:
    """Encode each account's posts, balance the accounts, and plan the epochs' batches."""
    from tweetlm.trainer import TrainData

    train_seqs: list[list[int]] = []
    groups: list[int] = []
    val_seqs: list[list[int]] = []
    for index, split in enumerate(splits.values()):
        seqs = encode_posts(tokenizer, split.train, config.max_length)
        train_seqs += seqs
        groups += [index] * len(seqs)
        val_seqs += encode_posts(tokenizer, split.validation, config.max_length)
    mix = balance({a: len(s.train) for a, s in splits.items()}, weights=parse_mix(config.mix, list(splits)))
    sampler = EpochBatches(
        [len(s) for s in train_seqs],
        groups,
        [mix.per_epoch[a] for a in splits],
        config.batch_size,
        config.seed,
        config.group_by_length,
        config.batch_tokens,
        rank=distributed.rank(),
        world=distributed.world_size(),
    )
    return TrainData(
        train_set=PostDataset(train_seqs, groups),
        val_set=PostDataset(val_seqs),
        sampler=sampler,
        mix=mix.to_dict(),
        pad_id=tokenizer.pad_token_id,
        batch_size=config.batch_size,
        packing_length=config.max_length if config.packing else None,
        steps_per_epoch=max(1, math.ceil(len(sampler) / config.grad_accum)),
        tokens_per_epoch=sum(len(train_seqs[i]) for batch in sampler.batches(0) for i in batch),
    )


def early_stopping(config: TrainConfig, validation_posts: int) -> tuple[int | None, str | None]:
    """The patience of the run's early stopping, or None and why it is off."""
    if not config.early_stop:
        return None, "off (--no-early-stop)"
    if validation_posts < MIN_VALIDATION_TO_STOP:
        return None, (
            f"off: {validation_posts} validation posts are too few to judge an improvement "
            f"(it needs {MIN_VALIDATION_TO_STOP})"
        )
    return config.early_stop_patience, None


def training_arguments(config: TrainConfig, dest: Destination, data: TrainData, precision: str) -> TrainingArguments:
    """The HF TrainingArguments of a run: an evaluation before training and at the end of each epoch (the
    `Control` callback adds those within an epoch), each with a checkpoint, and the best evaluation's
    checkpoint kept and reloaded at the end (a trial keeps no checkpoint)."""
    import torch
    from transformers import TrainingArguments

    from tweetlm.trainer import EVAL_BATCH_POSTS

    return TrainingArguments(
        output_dir=str(dest.work / CHECKPOINTS),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lora_learning_rate if config.lora_rank else config.learning_rate,
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=config.grad_accum,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=EVAL_BATCH_POSTS,
        eval_strategy="epoch",
        save_strategy="no" if dest.trial else "epoch",
        eval_on_start=not dest.resume,
        load_best_model_at_end=not dest.trial,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        # The best checkpoint and the latest (or the one before it, when the latest is the best): 1 would
        # delete a latest that is not the best once training stops, and --resume would redo its steps.
        save_total_limit=2,
        logging_steps=max(1, min(10, data.steps_per_epoch // 4)),
        **tracker_args(config.report_to),
        run_name=dest.name,
        bf16=precision == "amp",  # autocast; "bf16" computes in bf16 weights, updated by MasterAdamW
        torch_compile=config.compile,
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        average_tokens_across_devices=False,
        # Frozen weights need no gradient, so DDP never waits on an unused one: skip its extra graph walk.
        ddp_find_unused_parameters=False,
    )


def make_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: TrainingArguments,
    data: TrainData,
    config: TrainConfig,
    hooks: Hooks,
    callbacks: list[TrainerCallback],
    patience: int | None = None,
    deadline: float | None = None,
    heap: Heap | None = None,
) -> TweetlmTrainer:
    """The Trainer, with MasterAdamW, the learning rate following `Pace` (steps or the time budget ending
    at `deadline`), tweetlm's progress callback (early stopping after `patience` evaluations without a
    better validation loss) and the given ones (no printed logs)."""
    from transformers.trainer_callback import PrinterCallback

    from tweetlm.optim import MasterAdamW
    from tweetlm.trainer import Control, Pace, TweetlmTrainer

    pace = Pace(config.scheduler, config.warmup)
    optimizer = {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    trainer = TweetlmTrainer(
        model=model,
        args=args,
        data=data,
        pace=pace,
        stop=hooks.stop,
        chunked_loss=config.chunked_loss,
        micro_batch_tokens=config.micro_batch_tokens,
        train_dataset=data.train_set,
        eval_dataset=data.val_set,
        processing_class=tokenizer,
        data_collator=data.collate_eval,
        optimizer_cls_and_kwargs=(MasterAdamW, {**optimizer, "fused": True}),
        callbacks=[
            Control(hooks.emit, hooks.stop, data, pace, deadline, patience, config.evals_per_epoch, heap),
            *callbacks,
        ],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def fit(trainer: TweetlmTrainer, dest: Destination, hooks: Hooks, accounts: tuple[str, ...]) -> None:
    """Run the Trainer: Ctrl-C stops after the step (a checkpoint, then TrainingInterrupted; twice
    aborts), and out-of-memory or a full disk become TrainingErrors that say what to change."""
    import torch

    def on_sigint(signum: int, frame: Any) -> None:
        if hooks.stop.is_set():
            raise KeyboardInterrupt
        hooks.stop.set()
        hooks.emit(Interrupting("stopping after this step and saving a checkpoint (Ctrl-C again to abort)"))

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    trainer_log = logging.getLogger("transformers.trainer")
    trainer_log.addFilter(_tied_head_notice)
    try:
        with quiet_progress():  # checkpoints and the best evaluation's reload would flash bars under tweetlm's
            trainer.train(resume_from_checkpoint=True if dest.resume else None)
    except torch.OutOfMemoryError as exc:  # type: ignore[attr-defined]
        raise TrainingError(f"out of memory ({exc}): lower batch_size or max_length") from exc
    except OSError as exc:
        if exc.errno == 28:
            raise TrainingError(f"disk full while writing {dest.work}: free space or drop keep_checkpoints") from exc
        raise
    finally:
        trainer_log.removeFilter(_tied_head_notice)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if hooks.stop.is_set() and trainer.state.global_step < trainer.state.max_steps:
        raise TrainingInterrupted(dest.work, trainer.state.global_step, accounts)
    # Stopped after the last step (during the final evaluation): the run is complete, and is finished.


def measure(trainer: TweetlmTrainer, data: TrainData, dest: Destination, seconds: float) -> Metrics:
    """The run's metrics from the Trainer's log: the loss before training and of the best evaluation kept."""
    log_history = trainer.state.log_history
    evals = [h for h in log_history if "eval_loss" in h]
    if not evals or any(math.isnan(h["eval_loss"]) for h in evals[-1:]):
        raise TrainingError("validation loss is NaN: lower learning_rate (or use precision fp32)")
    before = evals[0]["eval_loss"] if not dest.resume else _first_eval(dest.work)
    # The model kept is the best checkpoint, and checkpoints are taken after training steps only.
    best = min((h["eval_loss"] for h in evals if h.get("step", 0) > 0), default=before)
    model = trainer.model
    return Metrics(
        eval_loss_before=before,
        perplexity_before=math.exp(min(before, 50)),
        eval_loss_after=best,
        perplexity_after=math.exp(min(best, 50)),
        steps=trainer.state.global_step,
        epochs_completed=trainer.state.epoch,
        train_seconds=seconds,
        tokens_per_epoch=data.tokens_per_epoch,
        train_posts=len(data.train_set),
        validation_posts=len(data.val_set),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        history=[
            {k: v for k, v in h.items() if k in ("step", "epoch", "loss", "eval_loss", "learning_rate")}
            for h in log_history
        ],
    )


def stopping(trainer: TweetlmTrainer, config: TrainConfig, patience: int | None, why_off: str | None) -> Stopping:
    """When and why training ended, from the Trainer's state and tweetlm's callback, and its best evaluation."""
    from tweetlm.trainer import Control, evals_since_best, trained_evaluations

    state = trainer.state
    control = next(c for c in trainer.callback_handler.callbacks if isinstance(c, Control))
    evals = trained_evaluations(state.log_history)
    since = evals_since_best([h["eval_loss"] for h in evals])
    best = evals[-1 - since] if evals else {"step": 0, "epoch": 0.0, "eval_loss": math.nan}
    if control.stopped_by:
        reason = control.stopped_by
    elif state.global_step >= state.max_steps:
        reason = "max_steps" if config.max_steps and state.global_step >= config.max_steps else "schedule"
    else:
        reason = "callback"
    at = f"epoch {_number(state.epoch or 0.0)} (step {state.global_step})"
    kept = f"best validation loss {best['eval_loss']:.3f} at epoch {_number(best['epoch'])}"
    match reason:
        case "early_stop":
            message = (
                f"stopped early at {at}: validation loss did not improve for {since} evaluations after its "
                f"best, {best['eval_loss']:.3f} at epoch {_number(best['epoch'])}"
            )
        case "schedule":
            message = f"ran the full schedule ({_number(config.epochs)} epochs, {state.global_step} steps); {kept}"
        case "max_steps":
            message = f"stopped at max_steps={config.max_steps}, {at}; {kept}"
        case "time_limit":
            message = (
                f"reached its time budget ({_number(config.max_minutes or 0.0)} min, the learning-rate schedule "
                f"fitted to it) at {at}; {kept}"
            )
        case _:
            message = f"stopped by a callback (a sweep's pruner) at {at}; {kept}"
    if why_off:
        message += f"; early stopping {why_off}"
    return Stopping(
        reason,
        state.global_step,
        state.epoch or 0.0,
        best["step"],
        best["epoch"],
        best["eval_loss"],
        patience,
        why_off,
        message,
    )


def _number(value: float) -> str:
    """2.5 -> "2.5", 4.0 -> "4", 1.3333 -> "1.33"."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def save_run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    base: BaseModel,
    precision: str,
    datasets: dict[str, Dataset],
    splits: dict[str, Split],
    data: TrainData,
    metrics: Metrics,
    dest: Destination,
) -> Path:
    """Write the model, tokenizer, generation config, run.json, posts.json and the card into the work
    folder; then rename it into place."""
    from transformers import GenerationConfig

    from tweetlm.card import write_card

    assert dest.final is not None
    for param in model.parameters():
        param.requires_grad_(True)
    model.config.use_cache = True
    model.generation_config = GenerationConfig(**generation_config(tokenizer))
    if config.save_dtype == "bf16" or (config.save_dtype == "auto" and precision == "bf16"):
        import torch

        model = model.to(torch.bfloat16)  # the weights it computed with, at half the size of fp32
    with quiet_progress():
        model.save_pretrained(dest.work)
    tokenizer.save_pretrained(dest.work)
    folder = RunFolder(dest.work)
    info = run_info(config, base, precision, datasets, splits, data.mix, metrics, tokenizer.eos_token)
    folder.write(info)
    folder.write_posts(RunPosts({a: s.train for a, s in splits.items()}, {a: s.validation for a, s in splits.items()}))
    write_card(dest.work, info, name=dest.final.name)
    if not config.keep_checkpoints:
        shutil.rmtree(dest.work / CHECKPOINTS, ignore_errors=True)
    (dest.work / RESUME_FILE).unlink(missing_ok=True)
    if dest.final.exists():
        raise InputError(f"{dest.final} appeared while training: the run is kept in {dest.work}")
    os.replace(dest.work, dest.final)
    return dest.final


def run_info(
    config: TrainConfig,
    base: BaseModel,
    precision: str,
    datasets: dict[str, Dataset],
    splits: dict[str, Split],
    mix: dict[str, Any],
    metrics: Metrics,
    eos_token: str,
) -> RunInfo:
    """What run.json records of a finished run."""
    import torch
    import transformers

    return RunInfo(
        tweetlm=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        accounts=list(datasets),
        base_model=BaseModelInfo(base.name, base.path, base.embedded),
        config=config.to_dict(),
        precision=precision,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": ".".join(map(str, sys.version_info[:3])),
        },
        data={
            "hash": data_hash(splits),
            "datasets": {
                a: {
                    "hash": ds.hash,
                    "rules": ds.rules,
                    "report": ds.report,
                    "train_posts": len(splits[a].train),
                    "validation_posts": len(splits[a].validation),
                }
                for a, ds in datasets.items()
            },
            "mix": mix,
        },
        eos_token=eos_token,
        world_size=distributed.world_size(),
        effective_batch=config.batch_size * distributed.world_size() * config.grad_accum,
        metrics=metrics,
    )


# ---- helpers ---------------------------------------------------------------------------------------


def _tied_head_notice(record: logging.LogRecord) -> bool:
    """Drops the Trainer's warning, on reloading the best evaluation, that the checkpoint lacks `lm_head.weight`:
    a head tied to the embeddings is saved once, as the embeddings, and shares their reloaded values."""
    return "missing keys in the checkpoint model loaded: ['lm_head.weight']" not in record.getMessage()


def _plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """The trained model as a plain fp32 transformers model (LoRA adapters merged in fp32)."""
    model = model.float()
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def _first_eval(partial: Path) -> float:
    import json

    for state_file in sorted((partial / CHECKPOINTS).glob("checkpoint-*/trainer_state.json")):
        for entry in json.loads(state_file.read_text())["log_history"]:
            if "eval_loss" in entry:
                return float(entry["eval_loss"])
    return float("nan")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
