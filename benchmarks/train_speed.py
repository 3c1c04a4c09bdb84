#!/usr/bin/env python
"""Side-by-side training benchmark: the naive pipeline, tweetlm's default, and each technique on its own.

Everything runs in this one process on the same curated data and the same seeded train/validation
split (the BarackObama CSV of FiveThirtyEight, CC BY 4.0):

  (a) naive     HF Trainer, fp32, one example per post padded to a fixed length (the longest post),
                batch 16, HuggingTweets' hyperparameters (4 epochs, lr 1.372e-4, cosine, no warmup);
  (b) default   `tweetlm train` with every default, as a user runs it (run folder written);
  (c) one row per technique, each added on its own to the padding-free fp32 pipeline; in --full
      they follow the same 4-epoch schedule but stop after --technique-minutes (3) of wall clock.

For each it prints real (non-padding) tokens/s, seconds per epoch, the projected and (when run to the
end) measured wall time of the whole run including model load and evaluation, the validation loss at
equal wall-clock checkpoints and at the end (one evaluator for all: token-weighted, in fp32), peak RSS,
and the fraction of the machine's bf16 matmul peak, measured in the same run. Then generation speed
and the data path (import + curation of the CSV, and of a synthetic CSV of 1M posts).

  python benchmarks/train_speed.py --quick     # minutes: 400 posts, ~10 s of training per row
  python benchmarks/train_speed.py --full      # the run the docs quote (about two hours on 2 cores)

`--full` rewrites the results section of docs/performance.md (between its markers); `--quick` only
prints, unless `--output` names a file. Timings depend on what else runs: the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import ctypes
import gc
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "fivethirtyeight" / "BarackObama.csv"
DOC = REPO / "docs" / "performance.md"
START_MARK, END_MARK = "<!-- train_speed:start -->", "<!-- train_speed:end -->"
ACCOUNT = "BarackObama"
SEED = 42
QUICK_POSTS, QUICK_MINUTES = 400, 0.15  # --quick: the first posts of the CSV, minutes of training per row
SLOW = ("compile",)  # rows --quick leaves out unless named: compiling alone takes minutes here
HUGGINGTWEETS = {"learning_rate": 1.372e-4, "epochs": 4.0, "scheduler": "cosine", "batch_size": 16}


def log(message: str = "") -> None:
    print(message, flush=True)


def load() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------------- measurements


EVALUATING = threading.Event()  # set while this benchmark evaluates: its model copy is not the run's memory


class RssSampler:
    """Peak resident memory of this process, sampled every 50 ms in a thread (and the load average);
    not while the benchmark's own evaluator runs."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(0.05):
            if not EVALUATING.is_set():
                self.peak = max(self.peak, self.process.memory_info().rss)
            ticks += 1
            if ticks % 100 == 0:
                self.loads.append(load())

    def __enter__(self) -> RssSampler:
        release_memory()
        self.peak = self.process.memory_info().rss
        self.loads = [load()]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.loads.append(load())


def release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError):  # glibc only: give freed heap back, so peaks are per variant
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def matmul_peak(dtype_name: str, seconds: float = 2.0, n: int = 2048) -> float:
    """Best GFLOP/s of an n x n matmul over a few windows, with torch's thread setting."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def flops_per_token(model: Any, frozen_layers: int, head_trained: bool, lora: bool) -> float:
    """Matmul FLOPs of one training token: forward 2P, input gradients 2P over the layers the backward
    pass crosses, weight gradients 2P over the trained weights (LoRA adapters are negligible). Attention
    scores over post-length rows are left out (under 2%)."""
    import torch

    layers = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1)
    per_layer = sum(p.numel() for name, p in layers[0].named_parameters() if p.dim() == 2)
    head = model.get_output_embeddings().weight.numel()
    n_layers = len(layers)
    crossed = n_layers - frozen_layers
    forward = 2 * (n_layers * per_layer + head)
    input_grads = 2 * (crossed * per_layer + head)
    weight_grads = 0 if lora else 2 * (crossed * per_layer + (head if head_trained else 0))
    return float(forward + input_grads + weight_grads)


# ------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    home: Path
    train: list[str]
    validation: list[str]


def import_and_curate(csv_path: Path, limit: int | None, home: Path) -> tuple[dict[str, float], Data]:
    """Import the CSV (the first `limit` rows) into a fresh TWEETLM_HOME and curate it, timed."""
    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.dataset import split_posts
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.store import Store, file_hash

    os.environ["TWEETLM_HOME"] = str(home)
    t0 = time.perf_counter()
    source = resolve(csv_path, "csv")
    with Store() as store:
        posts = source.read(csv_path, ReadOptions(account=ACCOUNT))
        result = store.import_posts(
            islice(posts, limit), source=source.name, path=str(csv_path), file_hash=file_hash(csv_path)
        )
        t1 = time.perf_counter()
        dataset, _ = curate_account(store, ACCOUNT, CurateConfig())
        t2 = time.perf_counter()
    split = split_posts(dataset.texts, SEED)
    timing = {"posts": result.read, "kept": len(dataset.texts), "import_s": t1 - t0, "curate_s": t2 - t1}
    return timing, Data(home, split.train, split.validation)


def synthetic_csv(path: Path, n: int, texts: list[str]) -> None:
    """n posts: words of real posts shuffled into new ones (so few are exact duplicates), streamed out."""
    rng = random.Random(0)
    words = [w for t in texts for w in t.split()]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "created_at", "text", "user"])
        for i in range(n):
            text = " ".join(rng.choices(words, k=rng.randint(6, 30)))
            if i % 20 == 0:
                text = "RT @someone: " + text
            elif i % 7 == 0:
                text += " https://t.co/abc" + str(i)
            writer.writerow([i, f"2017-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z", text, "synthetic"])


def large_data_path(n: int, texts: list[str], folder: Path) -> dict[str, float]:
    """Import and curate a synthetic CSV of n posts in a fresh process (so its memory is its own):
    seconds, and peak RSS above that process's RSS once its imports are done."""
    import subprocess

    path = folder / "synthetic.csv"
    t0 = time.perf_counter()
    synthetic_csv(path, n, texts)
    written = time.perf_counter() - t0
    env = {**os.environ, "TWEETLM_HOME": str(folder / "home"), "PYTHONPATH": str(REPO / "src")}
    child = subprocess.run(
        [sys.executable, __file__, "--data-path-child", str(path)], env=env, capture_output=True, text=True
    )
    if child.returncode:
        raise RuntimeError(f"the data path failed: {child.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(child.stdout.strip().splitlines()[-1]), "write_s": written}


def data_path_child(path: Path) -> None:
    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.store import Store, file_hash

    with RssSampler() as rss:
        start_rss = rss.peak
        t0 = time.perf_counter()
        source = resolve(path, "csv")
        with Store() as store:
            result = store.import_posts(
                source.read(path, ReadOptions()), source=source.name, path=str(path), file_hash=file_hash(path)
            )
            import_peak = rss.peak
            t1 = time.perf_counter()
            dataset, _ = curate_account(store, "synthetic", CurateConfig(), with_posts=False)
            t2 = time.perf_counter()
    figures = {
        "posts": result.read,
        "kept": dataset.n_posts,
        "file_mb": path.stat().st_size / 1e6,
        "import_s": t1 - t0,
        "curate_s": t2 - t1,
        "start_rss_mb": start_rss / 1e6,
        "import_rss_mb": (import_peak - start_rss) / 1e6,
        "rss_mb": (rss.peak - start_rss) / 1e6,
    }
    print(json.dumps(figures))


# ---------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    overrides: dict[str, Any] = field(default_factory=dict)
    naive: bool = False
    whole: bool = False  # (a) and (b): every epoch in --full; technique rows stop after --technique-minutes
    epochs: float | None = None  # a row with its own (shorter) schedule, run whole in --full


BASE = {"precision": "fp32", "attention": "sdpa"}  # the padding-free fp32 pipeline the techniques start from


def variants() -> list[Variant]:
    from tweetlm.train import RECIPES, TrainConfig

    DEFAULT = TrainConfig(accounts=(ACCOUNT,))
    return [
        Variant(
            "naive", "HF Trainer, fp32, padded to the longest post, batch 16 (HuggingTweets)", naive=True, whole=True
        ),
        Variant("default", "tweetlm train, all defaults", whole=True, epochs=DEFAULT.epochs),
        Variant(
            "huggingtweets",
            "tweetlm train --recipe huggingtweets: 4 epochs at lr 1.372e-4, no budget, no early stopping",
            {k: v for k, v in RECIPES["huggingtweets"].items() if k != "epochs"},
            epochs=RECIPES["huggingtweets"]["epochs"],
        ),
        Variant("fp32", "per-post batches of 16 grouped by length, no fixed padding, fp32", BASE),
        Variant("amp", "+ bf16 autocast over fp32 weights (Trainer bf16=True)", {**BASE, "precision": "amp"}),
        Variant("bf16", "+ bf16 weights, fp32 master weights and moments", {**BASE, "precision": "bf16"}),
        Variant("eager", "+ eager attention instead of sdpa", {**BASE, "attention": "eager"}),
        Variant(
            "tokens", "+ batches of ~1024 tokens, lr 2.7e-4", {**BASE, "batch_tokens": 1024, "learning_rate": 2.7e-4}
        ),
        Variant("packing", "+ posts packed into 128-token rows", {**BASE, "packing": True}),
        Variant("freeze-emb", "+ frozen (tied) embeddings", {**BASE, "freeze_embeddings": True}),
        Variant("freeze-15", "+ lower 15 of 30 layers frozen", {**BASE, "freeze_layers": 15}),
        Variant("lora", "+ LoRA r16 on all linear maps, lr 1e-3", {**BASE, "lora_rank": 16}),
        Variant("compile", "+ torch.compile", {**BASE, "compile": True}),
        Variant("1-thread", "+ torch.set_num_threads(1)", {**BASE, "threads": 1}),
    ]


@dataclass
class Result:
    name: str
    what: str
    epochs_target: float  # the epochs the row's whole run has (its wall time is measured or projected for them)
    epochs_done: float = 0.0
    tokens_per_epoch: int = 0
    steps: int = 0
    load_s: float = 0.0
    step_s: float = 0.0
    trainer_eval_s: float = 0.0
    trainer_evals: int = 0
    save_s: float = 0.0
    saves: int = 0
    bench_eval_s: float = 0.0
    wall_s: float = 0.0
    finished: bool = False
    loss_base: float | None = None
    loss_end: float | None = None
    checkpoints: list[tuple[float, float]] = field(default_factory=list)  # (wall minutes, validation loss)
    peak_rss_mb: float = 0.0
    load_avg: float = 0.0
    flops_per_token: float = 0.0
    error: str | None = None
    budget_s: float | None = None  # the run's own time budget (the default's), which its schedule fits

    @property
    def tokens(self) -> float:
        return self.tokens_per_epoch * self.epochs_done

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.step_s if self.step_s else 0.0

    @property
    def s_per_epoch(self) -> float:
        return self.step_s / self.epochs_done if self.epochs_done else 0.0

    @property
    def run_wall_s(self) -> float:
        """Wall time of the run as a user sees it: everything but this benchmark's own evaluations."""
        return self.wall_s - self.bench_eval_s

    def projected_s(self, epochs: float) -> float:
        """Measured when the row ran every epoch; else load and fixed costs, one evaluation per epoch and
        one at the start, one checkpoint per epoch (if the row saves them), and the steps, scaled."""
        if not self.epochs_done:
            return float("nan")
        if self.finished and abs(self.epochs_done - epochs) < 1e-6:
            return self.run_wall_s
        eval_each = self.trainer_eval_s / self.trainer_evals if self.trainer_evals else 0.0
        save_each = self.save_s / self.saves if self.saves else 0.0
        fixed = self.run_wall_s - self.trainer_eval_s - self.save_s - self.step_s
        natural = (
            fixed
            + eval_each * (math.ceil(epochs) + 1)
            + save_each * math.ceil(epochs)
            + self.step_s * epochs / self.epochs_done
        )
        return min(natural, self.budget_s) if self.budget_s else natural


class Evaluator:
    """One validation loss for every variant: mean negative log-likelihood per predicted token, in fp32."""

    def __init__(self, tokenizer: Any, texts: list[str]) -> None:
        from tweetlm.dataset import encode_posts

        self.pad = tokenizer.pad_token_id
        seqs = encode_posts(tokenizer, texts, 128)
        self.batches = [sorted(seqs, key=len)[i : i + 32] for i in range(0, len(seqs), 32)]  # sorted: little padding

    def __call__(self, model: Any) -> float:
        import torch

        from tweetlm.dataset import collate

        EVALUATING.set()
        twin = copy.deepcopy(model).float().eval()
        nll = torch.zeros((), dtype=torch.float64)
        count = 0
        with torch.no_grad():
            for batch in self.batches:
                inputs = collate([{"input_ids": s} for s in batch], self.pad)
                logits = twin(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
                labels = inputs["labels"][:, 1:]
                nll += torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                ).double()
                count += int((labels != -100).sum())
        del twin
        release_memory()
        EVALUATING.clear()
        return float(nll / count)


def bench_callback(
    result: Result, evaluate: Evaluator, marks: list[float], t0: float, label: str, cap: float | None
) -> Any:
    """Times steps, evaluations and progress; evaluates at wall-clock marks (minutes) and at the end;
    stops training after `cap` minutes of the run's wall clock (which leaves out these evaluations)."""
    from transformers import TrainerCallback

    class Bench(TrainerCallback):
        def __init__(self) -> None:
            self.step_t = 0.0
            self.epoch_end_t: float | None = None
            self.marks = list(marks)
            self.last_print = self.evaluated_t = time.perf_counter()

        def clock(self) -> float:  # wall seconds since the run started, without this benchmark's evaluations
            return time.perf_counter() - t0 - result.bench_eval_s

        def _evaluate(self, model: Any) -> float:
            t = time.perf_counter()
            loss = evaluate(model)
            result.bench_eval_s += time.perf_counter() - t
            return loss

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            result.load_s = self.clock()
            self.epoch_end_t = time.perf_counter()  # the evaluation at the start is timed like the others

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step_t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            now = time.perf_counter()
            result.step_s += now - self.step_t
            result.steps = state.global_step
            result.epochs_done = state.epoch or 0.0
            if cap is not None and self.clock() > cap * 60:
                control.should_training_stop = True  # the Trainer then evaluates, as at an epoch's end
            if self.marks and self.clock() >= self.marks[0] * 60:
                minutes = self.marks.pop(0)
                result.checkpoints.append((minutes, self._evaluate(model)))
                log(f"    [{label}] {minutes:g} min: validation loss {result.checkpoints[-1][1]:.3f}")
            if now - self.last_print > 30:
                self.last_print = now
                eta = (state.max_steps - state.global_step) * result.step_s / max(state.global_step, 1)
                log(
                    f"    [{label}] step {state.global_step}/{state.max_steps} epoch {result.epochs_done:.2f} "
                    f"{result.tokens_per_s:.0f} tok/s, {self.clock() / 60:.1f} min, ~{eta / 60:.1f} min of steps "
                    f"left, load {load():.1f}"
                )

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.epoch_end_t = time.perf_counter()

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.evaluated_t = time.perf_counter()
            if self.epoch_end_t is not None:
                result.trainer_eval_s += self.evaluated_t - self.epoch_end_t
                result.trainer_evals += 1
                self.epoch_end_t = None

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            result.save_s += time.perf_counter() - self.evaluated_t  # a checkpoint follows an evaluation
            result.saves += 1

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            result.epochs_done = state.epoch or result.epochs_done
            result.loss_end = self._evaluate(model)

    return Bench()


def run_tweetlm(
    variant: Variant, result: Result, evaluate: Evaluator, marks: list[float], epochs: float, minutes: float | None
) -> Path | None:
    from tweetlm.events import Event, Started
    from tweetlm.train import TrainConfig, train, train_trial

    # The default keeps its time budget (as a user runs it); the other rows follow their epochs.
    budget = {} if variant.name == "default" else {"max_minutes": None}
    config = TrainConfig(accounts=(ACCOUNT,), report_to="none", epochs=epochs, **budget, **variant.overrides)
    result.budget_s = config.max_minutes * 60 if config.max_minutes else None
    t0 = time.perf_counter()
    callback = bench_callback(result, evaluate, marks, t0, variant.name, minutes)

    def on_event(event: Event) -> None:
        if isinstance(event, Started):
            result.tokens_per_epoch = event.tokens_per_epoch

    run_dir = None
    if variant.name == "default":  # the default runs as a user runs it, run folder included
        run_dir = train(config, on_event=on_event, callbacks=[callback]).run_dir
    else:
        train_trial(config, on_event=on_event, callbacks=[callback])
    result.wall_s = time.perf_counter() - t0
    result.flops_per_token = _flops(config)
    return run_dir


def _flops(config: Any) -> float:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tweetlm.models import resolve_base_model

    with torch.device("meta"):  # shapes only
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_base_model(config.base_model).path))
    head = not (config.freeze_embeddings or config.lora_rank)
    return flops_per_token(model, config.freeze_layers, head, bool(config.lora_rank))


def run_naive(
    data: Data, result: Result, evaluate: Evaluator, marks: list[float], epochs: float, minutes: float | None
) -> None:
    """The naive pipeline, written out here with nothing from tweetlm's training path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from tweetlm.models import resolve_base_model

    t0 = time.perf_counter()
    path = resolve_base_model("smollm2").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    eos = tokenizer.eos_token_id

    def encode(texts: list[str]) -> list[list[int]]:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [[eos, *seq, eos][:128] for seq in ids]

    train_ids, val_ids = encode(data.train), encode(data.validation)
    width = max(len(s) for s in train_ids + val_ids)  # the fixed length every example is padded to

    class Padded(torch.utils.data.Dataset):
        def __init__(self, seqs: list[list[int]]) -> None:
            self.seqs = seqs

        def __len__(self) -> int:
            return len(self.seqs)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            seq = self.seqs[i]
            pad = width - len(seq)
            ids = torch.tensor(seq + [eos] * pad)
            mask = torch.tensor([1] * len(seq) + [0] * pad)
            return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    output = str(data.home / "naive")
    args = TrainingArguments(
        output_dir=output,
        num_train_epochs=epochs,
        learning_rate=HUGGINGTWEETS["learning_rate"],
        lr_scheduler_type=HUGGINGTWEETS["scheduler"],
        per_device_train_batch_size=HUGGINGTWEETS["batch_size"],
        per_device_eval_batch_size=HUGGINGTWEETS["batch_size"],
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=50,
        report_to=[],
        seed=SEED,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    callback = bench_callback(result, evaluate, marks, t0, "naive", minutes)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Padded(train_ids),
        eval_dataset=Padded(val_ids),
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)
    result.tokens_per_epoch = sum(len(s) for s in train_ids)
    trainer.train()
    result.wall_s = time.perf_counter() - t0
    result.flops_per_token = flops_per_token(model, 0, True, False)
    log(
        f"    [naive] every example padded to {width} tokens ({width * len(train_ids) / result.tokens_per_epoch:.2f}x "
        "the real tokens)"
    )


# ------------------------------------------------------------------------------------------ output


def fmt_min(seconds: float) -> str:
    if not seconds or math.isnan(seconds):
        return "-"
    return f"{seconds / 60:.1f}"


def table(results: list[Result], peak_bf16: float, marks: list[float]) -> list[str]:
    head = (
        "| variant | what | tok/s | s/epoch | whole run (min): projected / measured | "
        + " | ".join(f"loss @{m:g} min" for m in marks)
        + " | loss at end (epochs) | peak RSS (GB) | % bf16 peak | load |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | {r.what} | failed: {r.error} |")
            continue
        cps = dict(r.checkpoints)
        measured = fmt_min(r.run_wall_s) if r.finished and abs(r.epochs_done - r.epochs_target) < 1e-6 else "-"
        mfu = r.tokens_per_s * r.flops_per_token / (peak_bf16 * 1e9) * 100 if peak_bf16 else 0.0
        end = f"{r.loss_end:.3f} ({r.epochs_done:.2f})" if r.loss_end is not None else "-"
        lines.append(
            f"| {r.name} | {r.what} | {r.tokens_per_s:.0f} | {r.s_per_epoch:.0f} | "
            f"{fmt_min(r.projected_s(r.epochs_target))} / {measured} | "
            + " | ".join(f"{cps[m]:.3f}" if m in cps else "-" for m in marks)
            + f" | {end} | {r.peak_rss_mb / 1000:.2f} | {mfu:.0f}% | {r.load_avg:.1f} |"
        )
    return lines


def summary(results: list[Result], peak_bf16: float, generation: dict[str, float], quick: bool) -> list[str]:
    by = {r.name: r for r in results if not r.error and r.epochs_done}
    lines: list[str] = []
    naive, default = by.get("naive"), by.get("default")
    if naive and default:
        speed = default.tokens_per_s / naive.tokens_per_s if naive.tokens_per_s else float("nan")
        naive_s, default_s = naive.projected_s(naive.epochs_target), default.projected_s(default.epochs_target)
        how = "measured" if naive.finished and default.finished and not quick else "projected"
        lines.append(
            f"- ratio of wall time, naive / default: {naive_s / default_s:.1f}x ({how}: naive "
            f"{naive_s / 60:.1f} min for {naive.epochs_target:g} epochs, default {default_s / 60:.1f} min for its "
            f"{default.epochs_target:g} epochs or its {default.budget_s / 60 if default.budget_s else 0:g}-minute "
            f"budget; target 6x); the tokens/s {speed:.1f}x"
        )
        if naive.loss_end is not None and default.loss_end is not None:
            verdict = "no worse" if default.loss_end <= naive.loss_end + 1e-3 else "WORSE"
            lines.append(
                f"- validation loss at the end: default **{default.loss_end:.3f}** ({default.epochs_done:.2f} epochs), "
                f"naive **{naive.loss_end:.3f}** ({naive.epochs_done:.2f} epochs): the default is {verdict}; "
                f"peak RSS default {default.peak_rss_mb / 1000:.2f} GB, naive {naive.peak_rss_mb / 1000:.2f} GB"
            )
    if default:
        mfu = default.tokens_per_s * default.flops_per_token / (peak_bf16 * 1e9) if peak_bf16 else 0.0
        minutes = default.projected_s(default.epochs_target) / 60
        lines.append(
            f"- default: {minutes:.1f} min (target 5), {mfu:.0%} of the bf16 matmul peak "
            f"(target 60%), peak RSS {default.peak_rss_mb / 1000:.2f} GB (target 4)"
        )
    if generation:
        lines.append(
            f"- generation: 10 posts of up to 280 characters in **{generation['seconds']:.2f} s** "
            f"(median of {generation['repeats']:.0f}; model load {generation['load_s']:.1f} s; target 3 s)"
        )
    return lines


def write_doc(path: Path, body: list[str]) -> None:
    block = "\n".join([START_MARK, *body, END_MARK])
    if path.is_file() and START_MARK in (text := path.read_text(encoding="utf-8")) and END_MARK in text:
        before, rest = text.split(START_MARK, 1)
        after = rest.split(END_MARK, 1)[1]
        content = before + block + after
    else:
        content = "# Training speed\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- main


def machine() -> str:
    import torch
    import transformers

    from tweetlm.models import bf16_supported

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{cpu}, {os.cpu_count()} CPUs"
    return (
        f"{device}; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, Python {platform.python_version()}; bf16 supported: {bf16_supported()}"
    )


def generation_speed(run_dir: Path, repeats: int = 3) -> dict[str, float]:
    from tweetlm.generate import GenerateConfig, Generator

    t0 = time.perf_counter()
    generator = Generator(run_dir)
    load_s = time.perf_counter() - t0
    generator.generate("", GenerateConfig(n=2, seed=99, max_new_tokens=8))  # warm-up
    times, chars, posts = [], [], 0
    for seed in range(repeats):
        t0 = time.perf_counter()
        out = generator.generate("", GenerateConfig(n=10, seed=seed, max_chars=280))
        times.append(time.perf_counter() - t0)
        chars += [len(p) for p in out.posts]
        posts += len(out.posts)
    return {
        "seconds": statistics.median(times),
        "worst": max(times),
        "repeats": repeats,
        "load_s": load_s,
        "mean_chars": statistics.mean(chars) if chars else 0.0,
        "posts": posts / repeats,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--data-path-child"]:
        data_path_child(Path(argv[1]))
        return 0
    sys.path.insert(0, str(REPO / "src"))  # this checkout's tweetlm
    from tweetlm.train import bound_kernel_caches

    bound_kernel_caches()  # as `tweetlm train` does, before this process's first bf16 matmul (the peak below)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the first posts, minutes of training per row")
    mode.add_argument("--full", action="store_true", help="all posts; (a) and (b) for every epoch (an hour or more)")
    parser.add_argument("--data", type=Path, default=DEFAULT_CSV, help="the BarackObama CSV")
    parser.add_argument("--only", help=f"comma-separated variants (default: all; --quick skips {', '.join(SLOW)})")
    parser.add_argument("--epochs", type=float, default=4.0, help="epochs of (a) and (b)")
    parser.add_argument(
        "--technique-minutes", type=float, default=3.0, help="--full: stop each technique row after this many minutes"
    )
    parser.add_argument("--technique-epochs", type=float, help="--full: run technique rows this many epochs instead")
    parser.add_argument("--posts", type=int, help=f"train on the first N posts of the CSV (--quick: {QUICK_POSTS})")
    parser.add_argument("--minutes", type=float, help=f"cap each row's training (--quick: {QUICK_MINUTES})")
    parser.add_argument("--threads", type=int, help="torch threads for the whole benchmark (default: torch's)")
    parser.add_argument("--output", type=Path, help=f"write the results there (--full: {DOC.relative_to(REPO)})")
    parser.add_argument("--synthetic-posts", type=int, help="posts in the synthetic CSV (1,000,000; --quick 100,000)")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON (after every row)")
    parser.add_argument(
        "--keep-run", type=Path, help="copy the default row's run folder there (e.g. to evaluate it afterwards)"
    )
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data} not found: pass --data PATH to the BarackObama CSV", file=sys.stderr)
        return 1
    names = [v.name for v in variants()]
    if args.only and (unknown := set(args.only.split(",")) - set(names)):
        print(
            f"error: unknown variant(s) {', '.join(sorted(unknown))}: choose from {', '.join(names)}", file=sys.stderr
        )
        return 1
    chosen = [
        v for v in variants() if (v.name in args.only.split(",") if args.only else not (args.quick and v.name in SLOW))
    ]
    posts = args.posts or (QUICK_POSTS if args.quick else None)
    minutes = args.minutes or (QUICK_MINUTES if args.quick else None)
    output = args.output or (DOC if args.full else None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    scratch = Path(tempfile.mkdtemp(prefix="tweetlm-bench-"))
    try:
        return _run(args, argv, chosen, posts, minutes, output, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(
    args: argparse.Namespace,
    argv: list[str],
    chosen: list[Variant],
    posts: int | None,
    minutes: float | None,
    output: Path | None,
    scratch: Path,
) -> int:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/train_speed.py " + " ".join(shlex.quote(a) for a in argv)
    started = datetime.now(timezone.utc)
    log(f"{command}\n{started:%Y-%m-%d %H:%M} UTC; {machine()}")
    log(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (2 cores busy = 2.0)")

    # bf16/fp32 matmul peaks, measured now and again at the end (the best counts)
    peaks = {"bfloat16": matmul_peak("bfloat16"), "float32": matmul_peak("float32")}
    log(f"matmul peak: bf16 {peaks['bfloat16']:.0f} GFLOP/s, fp32 {peaks['float32']:.0f} GFLOP/s")

    whole_csv, data = import_and_curate(args.data, None, scratch / "csv")
    if posts:
        _, data = import_and_curate(args.data, posts, scratch / "subset")
    os.environ["TWEETLM_HOME"] = str(data.home)
    log(
        f"data: {whole_csv['posts']} posts imported in {whole_csv['import_s']:.2f} s, curated in "
        f"{whole_csv['curate_s']:.2f} s; training on {len(data.train)} posts, validating on {len(data.validation)}"
    )

    from tweetlm.models import load_model, load_tokenizer, resolve_base_model

    base = resolve_base_model("smollm2")
    evaluate = Evaluator(load_tokenizer(base.path), data.validation)
    loss_base = evaluate(load_model(base.path))
    log(f"validation loss of the base model: {loss_base:.3f}")
    marks = [0.1] if args.quick else [1, 2, 4, 8, 15, 30, 60]
    results: list[Result] = []
    run_dir: Path | None = None
    figures: dict[str, Any] = {"command": command, "started": started.isoformat(), "peaks": peaks, "data": whole_csv}
    for variant in chosen:
        # Every row plans the same schedule (--epochs), so losses at equal wall-clock marks compare.
        epochs, cap = variant.epochs or args.epochs, minutes
        if not (variant.whole or variant.epochs or args.quick):
            epochs, cap = (
                (args.technique_epochs, None) if args.technique_epochs else (args.epochs, args.technique_minutes)
            )
        result = Result(variant.name, variant.what, epochs)
        results.append(result)
        log(
            f"\n== {variant.name}: {variant.what} ({epochs:g} epochs{f', at most {cap:g} min' if cap else ''}; "
            f"load {load():.2f})"
        )
        try:
            with RssSampler() as rss:
                if variant.naive:
                    run_naive(data, result, evaluate, marks, epochs, cap)
                else:
                    run_dir = run_tweetlm(variant, result, evaluate, marks, epochs, cap) or run_dir
            result.peak_rss_mb = rss.peak / 1e6
            result.load_avg = statistics.mean(rss.loads)
            result.finished = True
        except KeyboardInterrupt:
            result.error = "interrupted"
            log("interrupted: writing what was measured so far")
            break
        except Exception as exc:  # noqa: BLE001  (one failed row must not lose an hour of others)
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
            log(traceback.format_exc())
        log(
            f"   {variant.name}: {result.tokens_per_s:.0f} tok/s, {result.s_per_epoch:.0f} s/epoch, "
            f"{result.epochs_done:.2f} epochs, projected {fmt_min(result.projected_s(epochs))} min for "
            f"{epochs:g} epochs, loss {result.loss_end if result.loss_end is not None else float('nan'):.3f}, "
            f"peak RSS {result.peak_rss_mb / 1000:.2f} GB, load {result.load_avg:.1f}"
        )
        release_memory()
        if args.json is not None:
            figures["results"] = [asdict(r) for r in results]
            args.json.write_text(json.dumps(figures, indent=2))

    generation: dict[str, float] = {}
    if run_dir is not None and args.keep_run is not None:
        shutil.copytree(run_dir, args.keep_run)
        log(f"\nthe default row's run folder is copied to {args.keep_run}")
    if run_dir is not None:
        log("\n== generation: 10 posts of up to 280 characters")
        generation = generation_speed(run_dir)
        log(
            f"   {generation['seconds']:.2f} s (worst {generation['worst']:.2f} s), "
            f"{generation['posts']:.1f} posts of {generation['mean_chars']:.0f} characters on average"
        )

    n_large = args.synthetic_posts or (100_000 if args.quick else 1_000_000)
    log(f"\n== data path: a synthetic CSV of {n_large:,} posts, imported and curated in a fresh process")
    large = large_data_path(n_large, data.train, scratch)
    log(
        f"   {large['file_mb']:.0f} MB: imported in {large['import_s']:.1f} s, curated in {large['curate_s']:.1f} s "
        f"({large['kept']:,} kept); peak RSS +{large['import_rss_mb']:.0f} MB importing, "
        f"+{large['rss_mb']:.0f} MB in all (above {large['start_rss_mb']:.0f} MB after imports)"
    )
    peaks["bfloat16"] = max(peaks["bfloat16"], matmul_peak("bfloat16"))
    peaks["float32"] = max(peaks["float32"], matmul_peak("float32"))

    loads = [r.load_avg for r in results if r.load_avg] or [load()]
    subset = f"the first {posts} posts of the CSV" if posts else "every post"
    body = [
        f"Produced by `{command}` on {started:%Y-%m-%d %H:%M} UTC: {subset}"
        + (f", at most {minutes:g} min of training per row" if minutes else "")
        + (
            f"; technique rows stop after {args.technique_minutes:g} min of the {args.epochs:g}-epoch schedule, "
            "their full-run times are projections"
            if not (minutes or args.technique_epochs)
            else ""
        )
        + ".",
        "",
        f"Machine: {machine()}. Load average during the rows: {min(loads):.1f}-{max(loads):.1f} "
        "(2.0 = both cores busy; above that, other processes shared the cores and the timings).",
        f"Measured matmul peak (2048x2048): bf16 {peaks['bfloat16']:.0f} GFLOP/s, fp32 {peaks['float32']:.0f} GFLOP/s.",
        f"Data: {whole_csv['posts']:,} posts in the CSV, {whole_csv['kept']:,} kept by curation; "
        f"{len(data.train):,} training and {len(data.validation):,} validation posts; "
        f"{results[0].tokens_per_epoch if results else 0:,} real tokens per epoch; "
        f"validation loss of the base model {loss_base:.3f}.",
        "",
        *summary(results, peaks["bfloat16"], generation, args.quick),
        "",
        *table(results, peaks["bfloat16"], marks),
        "",
        f"Data path: the CSV ({whole_csv['posts']:,} posts) imports in {whole_csv['import_s']:.2f} s and curates in "
        f"{whole_csv['curate_s']:.2f} s; a synthetic CSV of {large['posts']:,} posts ({large['file_mb']:.0f} MB) "
        f"imports in {large['import_s']:.1f} s and curates in {large['curate_s']:.1f} s, peak RSS "
        f"+{large['import_rss_mb']:.0f} MB while importing, +{large['rss_mb']:.0f} MB in all.",
    ]
    log("\n" + "\n".join(body))
    if output is not None:
        write_doc(output, body)
        log(f"\nwritten to {output}")
    if args.json is not None:
        figures.update(large=large, generation=generation, results=[asdict(r) for r in results])
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
