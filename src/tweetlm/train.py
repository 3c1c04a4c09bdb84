"""Fine-tune a base model on the curated posts of one or more accounts, with the HF Trainer.

`train(config)` writes a self-describing run folder: the model and tokenizer (`save_pretrained`), a
generation config, a model card, and `run.json` (resolved config, versions, data hash, metrics). It is
written under a temporary name and renamed at the very end, so a failed run leaves no half-written
folder; an interrupted one leaves a checkpoint that `resume=True` continues.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import __version__, paths
from tweetlm.curate import CurateConfig, curate_account, mixed_languages
from tweetlm.dataset import (
    EpochBatches,
    PostDataset,
    Split,
    balance,
    collate,
    data_hash,
    encode_posts,
    pack,
    split_posts,
)
from tweetlm.errors import InputError, NoDataError, TrainingError
from tweetlm.models import BaseModel, load_model, load_tokenizer, quiet_progress, resolve_base_model
from tweetlm.store import Dataset, Store
from tweetlm.tracking import parse_report_to, prediction_callback, tracker_args

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

log = logging.getLogger("tweetlm")

Event = dict[str, Any]
EventHandler = Callable[[Event], None]

SCHEDULERS = ("constant", "linear", "cosine")
PRECISIONS = ("auto", "bf16", "amp", "fp32")
ATTENTIONS = ("auto", "eager", "sdpa")
RUN_FILE = "run.json"
POSTS_FILE = "posts.json"  # the curated training and validation posts (copy filter, evaluation)
CONFIG_FILE = "tweetlm_config.json"  # written at the start, so --resume knows what it resumes
# `tweetlm train --fast`: one epoch at a higher peak rate. On the BarackObama CSV it reached a validation
# loss within 1.2% of the 4-epoch default's best epoch in a quarter of the time (docs/performance.md).
FAST = {"epochs": 1.0, "learning_rate": 3e-4}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on. Defaults are HuggingTweets' sweep result where it has one."""

    accounts: tuple[str, ...]
    base_model: str = field(default="smollm2", metadata={"help": "embedded default, an HF model id or a folder"})
    epochs: float = field(default=4.0, metadata={"help": "passes over the training posts"})
    learning_rate: float = field(default=1.372e-4, metadata={"help": "peak learning rate"})
    scheduler: str = field(default="cosine", metadata={"help": "constant, linear or cosine"})
    warmup: float = field(default=0.0, metadata={"help": "warmup, as a fraction of the steps"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    batch_size: int = field(default=16, metadata={"help": "posts per batch"})
    max_length: int = field(default=128, metadata={"help": "tokens per post (longer posts are cut)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where supported), bf16 (bf16 weights, fp32 master copy), amp (autocast) or fp32"},
    )
    group_by_length: bool = field(default=True, metadata={"help": "batch posts of similar length"})
    freeze_layers: int = field(default=0, metadata={"help": "freeze embeddings and this many lower layers"})
    seed: int = field(default=42, metadata={"help": "seed of the split, order and initialisation"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    max_minutes: float | None = field(default=None, metadata={"help": "stop after this many minutes"})
    report_to: str = field(default="trackio", metadata={"help": "trackers (comma-separated) or none"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints in the run folder"})
    batch_tokens: int = field(
        default=0, metadata={"help": "tokens per batch, posts of similar length (0: batch_size posts)"}
    )
    packing: bool = field(
        default=False, metadata={"help": "pack a batch's posts into rows of max_length (attention stays in a post)"}
    )
    freeze_embeddings: bool = field(
        default=False, metadata={"help": "freeze the token embeddings (and an output head tied to them)"}
    )
    lora_rank: int = field(default=0, metadata={"help": "LoRA adapters of this rank (0: full fine-tune)"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scaling numerator (scale = alpha / rank)"})
    lora_learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate of the LoRA adapters"})
    threads: int = field(default=0, metadata={"help": "CPU threads for torch (0: torch's default)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    attention: str = field(
        default="auto", metadata={"help": "attention kernel: eager, sdpa, or auto (eager on CPU, the model's on GPU)"}
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
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be > 0"),
            (not self.batch_tokens or self.batch_tokens >= self.max_length, "batch_tokens", "0 or >= max_length"),
            (self.lora_rank >= 0, "lora_rank", "must be >= 0"),
            (self.lora_alpha > 0, "lora_alpha", "must be > 0"),
            (0 < self.lora_learning_rate < 1, "lora_learning_rate", "must be in (0, 1)"),
            (self.threads >= 0, "threads", "must be >= 0 (0: torch's default)"),
            (self.attention in ATTENTIONS, "attention", f"must be one of {', '.join(ATTENTIONS)}"),
            (not (self.lora_rank and self.freeze_embeddings), "freeze_embeddings", "LoRA already freezes them"),
        ]
        parse_report_to(self.report_to)  # raises InputError naming the option
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
    run_dir: Path | None  # None when trained with save_model=False (sweep trials)
    metrics: dict[str, Any]


class TrainingInterrupted(TrainingError):
    def __init__(self, partial_dir: Path, step: int, accounts: tuple[str, ...]) -> None:
        super().__init__(
            f"interrupted at step {step}: checkpoint saved in {partial_dir}; "
            f"continue with `tweetlm train {' '.join(accounts)} --resume`"
        )
        self.partial_dir = partial_dir


def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()) or bool(
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )


def resolve_precision(precision: str) -> str:
    """`auto` is bf16 where the GPU or CPU supports it, else fp32 (said once, in the log)."""
    if precision == "fp32":
        return "fp32"
    supported = bf16_supported()
    if precision != "auto" and not supported:
        raise InputError(f"--precision {precision}: this machine has no bf16 support; use --precision fp32")
    if precision == "auto" and not supported:
        _say_fp32()
    return precision if precision != "auto" else "bf16" if supported else "fp32"


@functools.cache
def _say_fp32() -> None:
    log.warning("this machine has no bf16 support: computing in fp32, which is slower")


def run_name(accounts: tuple[str, ...]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe = "+".join(a.replace("/", "_").replace("@", "_") for a in accounts)
    return f"{safe}-{stamp}"


def _new_run_dir(accounts: tuple[str, ...]) -> Path:
    """runs/<accounts>-<time>, with -2, -3, ... when a run of the same accounts started in the same second."""
    base = paths.runs_dir() / run_name(accounts)
    candidate, n = base, 1
    while candidate.exists() or (candidate.parent / f".{candidate.name}.partial").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def load_datasets(store: Store, accounts: tuple[str, ...], on_event: EventHandler) -> dict[str, Dataset]:
    """The latest curated dataset of each account (curating with defaults if it never was)."""
    datasets: dict[str, Dataset] = {}
    for name in accounts:
        account = store.resolve_account(name)
        dataset = store.dataset(account)
        if dataset is None:
            dataset, report = curate_account(store, account, CurateConfig())
            on_event({"type": "curated", "account": account, "report": report.to_dict(), "hash": dataset.hash})
        if warning := mixed_languages(dataset):
            log.warning(warning)
        datasets[account] = dataset
    if len(set(datasets)) != len(accounts):
        raise InputError("an account is named twice")
    return datasets


def prepare_model(model: PreTrainedModel, config: TrainConfig) -> PreTrainedModel:
    """Freeze what the config freezes, or wrap the model with LoRA adapters (on the layers above
    `freeze_layers`); returns the model to train."""
    layers = _decoder_layers(model)
    if config.freeze_layers > len(layers):
        raise InputError(f"--freeze-layers {config.freeze_layers}: the model has only {len(layers)} layers")
    if not config.lora_rank:
        freeze_lower_layers(model, config.freeze_layers, config.freeze_embeddings)
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
        layers_to_transform=list(range(config.freeze_layers, len(layers))) if config.freeze_layers else None,
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
        raise InputError(f"--freeze-layers {n_layers}: the model has only {len(layers)} layers")
    embed = model.get_input_embeddings()
    if n_layers or embeddings:
        embed.requires_grad_(False)
    for layer in layers[:n_layers]:
        layer.requires_grad_(False)
    if n_layers and not embeddings and getattr(model.config, "tie_word_embeddings", False):
        embed.requires_grad_(True)
        embed.register_forward_hook(_detach_output)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _detach_output(module: Any, inputs: Any, output: Any) -> Any:
    return output.detach()


def _decoder_layers(model: PreTrainedModel) -> list[Any]:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            return list(module)
    raise InputError("cannot find the model's layers to freeze")


def _find_partial(accounts: tuple[str, ...]) -> Path:
    prefix = "+".join(a.replace("/", "_").replace("@", "_") for a in accounts) + "-"
    candidates = sorted(
        (p for p in paths.runs_dir().glob(".*.partial") if p.name[1:].startswith(prefix)),
        key=lambda p: p.stat().st_mtime,
    )
    for candidate in reversed(candidates):
        if any((candidate / "checkpoints").glob("checkpoint-*")) and (candidate / CONFIG_FILE).is_file():
            return candidate
    raise InputError(f"no interrupted run of {', '.join(accounts)} to resume in {paths.runs_dir()}")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train(
    config: TrainConfig,
    store: Store | None = None,
    on_event: EventHandler | None = None,
    output: Path | None = None,
    resume: bool = False,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    stop: threading.Event | None = None,
    save_model: bool = True,
) -> RunResult:
    """Train and write the run folder; returns its path and metrics.

    `callbacks` are extra HF TrainerCallbacks (trackers, sweep pruners); setting `stop` stops the run
    like Ctrl-C does (a checkpoint, then TrainingInterrupted); `save_model=False` trains and evaluates
    but writes nothing that lasts (no checkpoints, no run folder).
    """
    emit = on_event or (lambda event: None)
    own_store = store is None
    store = store or Store()
    try:
        if resume:
            partial = _find_partial(tuple(config.accounts))
            saved = json.loads((partial / CONFIG_FILE).read_text())
            config = TrainConfig.from_dict(saved["config"])
            final_dir = Path(saved["final_dir"])
        elif not save_model:
            final_dir = partial = Path(tempfile.mkdtemp(prefix="tweetlm-trial-"))
        else:
            final_dir = output or _new_run_dir(config.accounts)
            if final_dir.exists():
                raise InputError(f"{final_dir} already exists: choose another --output")
            partial = final_dir.parent / f".{final_dir.name}.partial"
        datasets = load_datasets(store, config.accounts, emit)
    finally:
        if own_store:
            store.close()
    hooks = _Hooks(emit, list(callbacks), stop or threading.Event(), save_model)
    import torch

    threads = torch.get_num_threads()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        return _train(config, datasets, partial, final_dir, hooks, resume)
    finally:
        torch.set_num_threads(threads)
        if not save_model:
            shutil.rmtree(partial, ignore_errors=True)


@dataclass
class _Hooks:
    emit: EventHandler
    callbacks: list[TrainerCallback]
    stop: threading.Event
    save_model: bool


def _train(
    config: TrainConfig,
    datasets: dict[str, Dataset],
    partial: Path,
    final_dir: Path,
    hooks: _Hooks,
    resume: bool,
) -> RunResult:
    import torch
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from tweetlm.optim import MasterAdamW

    started = time.monotonic()
    emit = hooks.emit
    splits = {account: split_posts(ds.texts, config.seed) for account, ds in datasets.items()}
    base = resolve_base_model(config.base_model)
    precision = resolve_precision(config.precision)
    emit({"type": "loading", "base_model": base.name, "precision": precision})
    tokenizer = load_tokenizer(base.path)
    transformers.set_seed(config.seed)
    model = load_model(base.path, dtype=torch.bfloat16 if precision == "bf16" else None)
    if config.attention == "eager" or (config.attention == "auto" and not torch.cuda.is_available()):
        model.set_attn_implementation("eager")  # on CPU, faster than sdpa's backward for post-sized rows
    elif config.attention == "sdpa":
        model.set_attn_implementation("sdpa")
    model = prepare_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    accounts = list(splits)
    train_seqs: list[list[int]] = []
    groups: list[int] = []
    val_seqs: list[list[int]] = []
    for index, account in enumerate(accounts):
        seqs = encode_posts(tokenizer, splits[account].train, config.max_length)
        train_seqs += seqs
        groups += [index] * len(seqs)
        val_seqs += encode_posts(tokenizer, splits[account].validation, config.max_length)
    mix = balance({a: len(splits[a].train) for a in accounts})
    train_set = PostDataset(train_seqs, groups)
    val_set = PostDataset(val_seqs)
    sampler = EpochBatches(
        [len(s) for s in train_seqs],
        groups,
        [mix.per_epoch[a] for a in accounts],
        config.batch_size,
        config.seed,
        config.group_by_length,
        config.batch_tokens,
    )
    steps_per_epoch = max(1, math.ceil(len(sampler) / config.grad_accum))
    tokens_per_epoch = sum(len(train_seqs[i]) for batch in sampler.batches(0) for i in batch)

    partial.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_json(
            partial / CONFIG_FILE,
            {"config": config.to_dict(), "final_dir": str(final_dir), "tweetlm": __version__},
        )
    pad_id = tokenizer.pad_token_id

    def collate_train(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return pack(batch, pad_id, config.max_length) if config.packing else collate(batch, pad_id)

    class Tweetlm(Trainer):
        def get_train_dataloader(self) -> torch.utils.data.DataLoader:
            loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_train)
            return self.accelerator.prepare(loader)

        def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
            order = sorted(range(len(val_set)), key=lambda i: len(val_set.sequences[i]))
            batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
            loader = torch.utils.data.DataLoader(
                val_set, batch_sampler=batches, collate_fn=lambda b: collate(b, pad_id)
            )
            return self.accelerator.prepare(loader)

    interrupted = hooks.stop
    history: list[dict[str, Any]] = []

    class Control(TrainerCallback):
        """Progress events, the --max-minutes cap and Ctrl-C."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.step0: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step0 = state.global_step
            emit(
                {
                    "type": "start",
                    "total_steps": state.max_steps,
                    "step": state.global_step,
                    "steps_per_epoch": steps_per_epoch,
                    "tokens_per_epoch": tokens_per_epoch,
                }
            )

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            elapsed = time.monotonic() - self.t0
            done = state.global_step - (self.step0 or 0)
            left = (state.max_steps - state.global_step) * elapsed / max(done, 1)
            timed_out = config.max_minutes is not None and elapsed > config.max_minutes * 60
            if timed_out or interrupted.is_set():
                # The Trainer then ends the epoch early, which evaluates and saves a checkpoint.
                control.should_training_stop = True
            emit(
                {
                    "type": "step",
                    "step": state.global_step,
                    "total_steps": state.max_steps,
                    "epoch": state.epoch,
                    "elapsed": elapsed,
                    "eta": left,
                    "tokens_per_s": tokens_per_epoch * done / steps_per_epoch / max(elapsed, 1e-9),
                    "loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
                }
            )

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kw: Any) -> None:
            loss = metrics["eval_loss"]
            record = {
                "step": state.global_step,
                "epoch": state.epoch or 0.0,
                "eval_loss": loss,
                "perplexity": math.exp(min(loss, 50)),
            }
            history.append(record)
            emit({"type": "eval", **record})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float], **kw: Any) -> None:
            if "loss" in logs:
                emit({"type": "log", "step": state.global_step, **logs})

    args = TrainingArguments(
        output_dir=str(partial / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lora_learning_rate if config.lora_rank else config.learning_rate,
        lr_scheduler_type=config.scheduler if config.scheduler != "constant" else "constant_with_warmup",
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=config.grad_accum,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        eval_strategy="epoch",
        save_strategy="epoch" if hooks.save_model else "no",
        eval_on_start=not resume,
        load_best_model_at_end=hooks.save_model,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=1,
        logging_steps=max(1, min(10, steps_per_epoch // 4)),
        **tracker_args(config.report_to),
        run_name=final_dir.name,
        bf16=precision == "amp",  # autocast; "bf16" computes in bf16 weights, updated by MasterAdamW
        torch_compile=config.compile,
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        average_tokens_across_devices=False,
    )
    # Sample predictions go to the run folder or a tracker: a sweep trial that keeps neither skips them.
    keeps_samples = hooks.save_model or bool(parse_report_to(config.report_to))
    predictions = [prediction_callback(config, datasets, splits, partial)] if keeps_samples else []
    trainer = Tweetlm(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        data_collator=lambda b: collate(b, pad_id),
        optimizer_cls_and_kwargs=(
            MasterAdamW,
            {
                "lr": args.learning_rate,
                "betas": (args.adam_beta1, args.adam_beta2),
                "eps": args.adam_epsilon,
                "fused": True,
            },
        ),
        callbacks=[Control(), *predictions, *hooks.callbacks],
    )
    trainer.remove_callback(PrinterCallback)

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        emit(
            {"type": "interrupt", "message": "stopping after this step and saving a checkpoint (Ctrl-C again to abort)"}
        )

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    trainer_log = logging.getLogger("transformers.trainer")
    trainer_log.addFilter(_tied_head_notice)
    try:
        with quiet_progress():  # checkpoints and the best epoch's reload would flash bars under tweetlm's
            trainer.train(resume_from_checkpoint=True if resume else None)
    except torch.OutOfMemoryError as exc:  # type: ignore[attr-defined]
        raise TrainingError(f"out of memory ({exc}): lower --batch-size or --max-length") from exc
    except OSError as exc:
        if exc.errno == 28:
            raise TrainingError(f"disk full while writing {partial}: free space or lower --keep-checkpoints") from exc
        raise
    finally:
        trainer_log.removeFilter(_tied_head_notice)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise TrainingInterrupted(partial, trainer.state.global_step, config.accounts)

    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    if not evals or any(math.isnan(h["eval_loss"]) for h in evals[-1:]):
        raise TrainingError("validation loss is NaN: lower --learning-rate (or use --precision fp32)")
    before = evals[0]["eval_loss"] if not resume else _first_eval(partial)
    # The model kept is the best checkpoint, and checkpoints are taken after training steps only.
    best = min((h["eval_loss"] for h in evals if h.get("step", 0) > 0), default=before)
    metrics = {
        "eval_loss_before": before,
        "perplexity_before": math.exp(min(before, 50)),
        "eval_loss_after": best,
        "perplexity_after": math.exp(min(best, 50)),
        "steps": trainer.state.global_step,
        "epochs_completed": trainer.state.epoch,
        "train_seconds": time.monotonic() - started,
        "tokens_per_epoch": tokens_per_epoch,
        "train_posts": len(train_seqs),
        "validation_posts": len(val_seqs),
        "trainable_parameters": trainable,
        "history": [
            {k: v for k, v in h.items() if k in ("step", "epoch", "loss", "eval_loss", "learning_rate")}
            for h in trainer.state.log_history
        ],
    }
    if not hooks.save_model:
        emit({"type": "done", "run_dir": None, "metrics": metrics})
        return RunResult(None, metrics)
    plain = _plain_model(trainer.model)
    run = _finish(
        plain, tokenizer, config, base, precision, datasets, splits, mix.to_dict(), metrics, partial, final_dir
    )
    emit({"type": "done", "run_dir": str(run), "metrics": metrics})
    return RunResult(run, metrics)


def _tied_head_notice(record: logging.LogRecord) -> bool:
    """Drops the Trainer's warning, on reloading the best epoch, that the checkpoint lacks `lm_head.weight`:
    a head tied to the embeddings is saved once, as the embeddings, and shares their reloaded values."""
    return "missing keys in the checkpoint model loaded: ['lm_head.weight']" not in record.getMessage()


def _plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """The trained model as a plain fp32 transformers model (LoRA adapters merged in fp32)."""
    model = model.float()
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def _first_eval(partial: Path) -> float:
    for state_file in sorted((partial / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        for entry in json.loads(state_file.read_text())["log_history"]:
            if "eval_loss" in entry:
                return float(entry["eval_loss"])
    return float("nan")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def generation_defaults(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 0,
        "max_new_tokens": 96,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.eos_token_id,
    }


def _finish(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: TrainConfig,
    base: BaseModel,
    precision: str,
    datasets: dict[str, Dataset],
    splits: dict[str, Split],
    mix: dict[str, Any],
    metrics: dict[str, Any],
    partial: Path,
    final_dir: Path,
) -> Path:
    """Write the model, tokenizer, generation config, card and run.json; then rename into place."""
    import torch
    import transformers
    from transformers import GenerationConfig

    from tweetlm.card import write_card

    for param in model.parameters():
        param.requires_grad_(True)
    model.config.use_cache = True
    model.generation_config = GenerationConfig(**generation_defaults(tokenizer))
    with quiet_progress():
        model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    run = {
        "tweetlm": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "accounts": list(datasets),
        "base_model": {"name": base.name, "path": base.path, "embedded": base.embedded},
        "config": config.to_dict(),
        "precision": precision,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": ".".join(map(str, __import__("sys").version_info[:3])),
        },
        "data": {
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
        "eos_token": tokenizer.eos_token,
        "metrics": metrics,
    }
    _write_json(partial / RUN_FILE, run)
    _write_json(
        partial / POSTS_FILE,
        {"train": {a: s.train for a, s in splits.items()}, "validation": {a: s.validation for a, s in splits.items()}},
    )
    write_card(partial, run, name=final_dir.name)
    if not config.keep_checkpoints:
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    (partial / CONFIG_FILE).unlink(missing_ok=True)
    if final_dir.exists():
        raise InputError(f"{final_dir} appeared while training: the run is kept in {partial}")
    os.replace(partial, final_dir)
    return final_dir


def latest_run(account: str) -> Path:
    """The newest finished run that trained on `account` (case-insensitive)."""
    runs = []
    for run_json in paths.runs_dir().glob(f"*/{RUN_FILE}"):
        try:
            accounts = json.loads(run_json.read_text())["accounts"]
        except (ValueError, KeyError):
            continue
        if any(a.lower() == account.lstrip("@").lower() for a in accounts):
            runs.append(run_json.parent)
    if not runs:
        raise NoDataError(f"no finished run for {account!r} in {paths.runs_dir()}: run `tweetlm train {account}`")
    return max(runs, key=lambda p: (p / RUN_FILE).stat().st_mtime)


def resolve_run(name: str) -> Path:
    """A run folder, given its path, its folder name under runs/, or an account (its latest run)."""
    path = Path(name).expanduser()
    for candidate in (path, paths.runs_dir() / name):
        if candidate.is_dir():
            if not (candidate / RUN_FILE).is_file():
                raise InputError(f"{candidate} is not a tweetlm run (no {RUN_FILE}): give a run folder or an account")
            return candidate
    return latest_run(name)


def read_run(run_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise InputError(f"{run_dir} is not a readable tweetlm run ({exc})") from exc
