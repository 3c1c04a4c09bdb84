#!/usr/bin/env python
"""The CPU recipe sweep: HuggingTweets' way of choosing defaults (one model per account, scored by mean +
1 std of the accounts' best validation losses), on the seven real accounts of ../shared/data, with every
training held to the same time budget (the wall-time constraint: `max_minutes`, model load to result).

The study starts with enqueued trials (the recipes of ENQUEUED: tweetlm's earlier default, 16-post batches at
lr 2e-4, with one setting changed at a time; HuggingTweets' settings squeezed into the same budget by the fitted
schedule), then lets Optuna's TPE sampler choose. It runs the
real `tweetlm sweep` and `tweetlm sweep-report` commands; the study (SQLite), its space file and the
report (plots, trials.csv) land in --output. A time budget makes the machine part of the objective, so
each machine has its own study: docs/performance.md quotes docs/sweep/ (an AMD EPYC, AVX512-BF16), docs/sweep-amx/
(a Xeon with AMX) and docs/sweep-amd-2/ (the AMD EPYC again, with the faster code of 2026-12-06).

  python benchmarks/recipe_sweep.py --budget 4.5 --queue lr-3e-4,batch-16 --trials 2   # docs/sweep/
  python benchmarks/recipe_sweep.py --budget 4.5 --queue freeze-8,batch-32,lora-16 --trials 5   # 3 more
  python benchmarks/recipe_sweep.py --budget 4.5 --queue batch-16,huggingtweets --trials 2 --output docs/sweep-amx
  python benchmarks/recipe_sweep.py --budget 4.5 --queue batch-32 --trials 1 --output docs/sweep-amx    # one more
  python benchmarks/recipe_sweep.py --budget 4.5 --queue batch-16,linear,warmup-10 --trials 3 --output docs/sweep-amd-2
  python benchmarks/recipe_sweep.py --budget 4.5 --trials 40        # and on, with Optuna choosing
  python benchmarks/recipe_sweep.py --accounts Jack_L_Lance,mkommar --output /tmp/sweep

The accounts' posts are people's posts: the study records only settings and losses.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import curated_accounts, machine  # noqa: E402

STUDY = "cpu-recipes"
SPACE = """\
# The recipe sweep's search space (benchmarks/recipe_sweep.py). Every training gets the same time budget.
max_minutes = {budget}
epochs = {{ low = 1, high = 4 }}
learning_rate = {{ low = 5e-5, high = 1e-3, log = true }}
scheduler = ["linear", "cosine"]
warmup = [0.0, 0.1]
batch_size = [8, 16, 32]
grad_accum = [1]
early_stop_patience = [1, 2, 4]
freeze_layers = [0, 8, 16]
lora_rank = [0, 16]
"""
COMMON = {"warmup": 0.0, "batch_size": 16, "early_stop_patience": 2, "freeze_layers": 0, "lora_rank": 0}
# Queued first, in this order: the first candidate (lr 3e-4), the default (16-post batches at lr 2e-4), then
# that recipe with one setting changed (the lower 8 layers frozen; batches of 32 posts at the rate scaled by
# sqrt(2): the default for a few hours of 2026-12-05, until validation in 16-post batches showed it behind;
# LoRA rank 16 at its default lr, 1e-3; the learning rate decayed linearly instead of by a cosine; a warmup of 10%
# of the run), HuggingTweets' settings.
BATCH_16 = {"epochs": 2, "learning_rate": 2e-4, "scheduler": "cosine", **COMMON}
ENQUEUED = {
    "lr-3e-4": {**BATCH_16, "learning_rate": 3e-4},
    "batch-16": BATCH_16,
    "freeze-8": {**BATCH_16, "freeze_layers": 8},
    "batch-32": {**BATCH_16, "batch_size": 32, "learning_rate": 2.8e-4},
    "lora-16": {**BATCH_16, "lora_rank": 16, "lora_learning_rate": 1e-3},
    "linear": {**BATCH_16, "scheduler": "linear"},
    "warmup-10": {**BATCH_16, "warmup": 0.1},
    "huggingtweets": {"epochs": 4, "learning_rate": 1.372e-4, "scheduler": "cosine", **COMMON},
}


def tweetlm(*args: str, home: Path) -> None:
    command = [str(Path(sys.executable).with_name("tweetlm")), *args]
    print("$ " + " ".join(shlex.quote(a) for a in command[1:]), flush=True)
    subprocess.run(command, env={**os.environ, "TWEETLM_HOME": str(home)}, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=1.5, help="minutes of each training (default 1.5)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--minutes", type=float, help="stop the sweep after this many minutes")
    parser.add_argument("--accounts", default="", help="a subset of the seven, comma-separated")
    parser.add_argument("--home", type=Path, help="TWEETLM_HOME holding the accounts (default: a new one)")
    parser.add_argument("--output", type=Path, default=Path("docs/sweep"))
    parser.add_argument("--queue", default=",".join(ENQUEUED), help="recipes to queue first (names in ENQUEUED)")
    args = parser.parse_args()
    unknown = [name for name in args.queue.split(",") if name and name not in ENQUEUED]
    if unknown:
        parser.error(f"--queue: no recipe named {', '.join(unknown)}; the names are {', '.join(ENQUEUED)}")

    home = args.home or Path(tempfile.mkdtemp(prefix="tweetlm-sweep-"))
    accounts = curated_accounts(home, args.accounts)
    from tweetlm.sweep import SearchSpace, SweepConfig, load_study, run_sweep
    from tweetlm.train import TrainConfig

    args.output.mkdir(parents=True, exist_ok=True)
    space_file = args.output / "space.toml"
    space_file.write_text(SPACE.format(budget=args.budget))
    storage = f"sqlite:///{(args.output / 'study.sqlite3').resolve()}"
    print(f"Machine: {machine()}; load average at the start {os.getloadavg()[0]:.2f}", flush=True)

    # Claim the study (no trial runs while `stop` is set), then queue the two recipes to compare first.
    claim = threading.Event()
    claim.set()
    base = TrainConfig(accounts=tuple(accounts), report_to="none")
    run_sweep(SweepConfig(base, study=STUDY, storage=storage, space=SearchSpace.from_file(space_file)), stop=claim)
    study = load_study(STUDY, storage)
    # A waiting (queued, not yet started) trial has its settings as fixed_params, not yet as params.
    queued = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)]
    for params in (ENQUEUED[name] for name in args.queue.split(",") if name):
        if not any(all(p.get(k) == v for k, v in params.items()) for p in queued):
            study.enqueue_trial(params)

    sweep = ["sweep", *accounts, "--study", STUDY, "--storage", storage, "--space", str(space_file)]
    sweep += ["--trials", str(args.trials), *(["--max-minutes", str(args.minutes)] if args.minutes else [])]
    tweetlm(*sweep, home=home)
    tweetlm("sweep-report", STUDY, "--storage", storage, "-o", str(args.output), home=home)
    print(table(load_study(STUDY, storage), accounts))


def table(study: Any, accounts: list[str]) -> str:
    """Each finished trial: its recipe, each account's best validation loss, mean + std, minutes."""
    head = ["trial", "recipe", *accounts, "mean + std", "minutes, all accounts"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: (t.value is None, t.value or 0.0)):
        losses = trial.user_attrs.get("losses", {})
        name = next((n for n, p in ENQUEUED.items() if all(trial.params.get(k) == v for k, v in p.items())), "")
        recipe = f"`{name}`: " if name else ""
        recipe += ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        state = f"{trial.value:.3f}" if trial.value is not None else trial.state.name.lower()
        if trial.user_attrs.get("fail_reason"):
            state += f" ({trial.user_attrs['fail_reason'][:80]})"
        minutes = trial.user_attrs.get("seconds")
        cells = [str(trial.number), recipe, *(f"{losses[a]:.3f}" if a in losses else "-" for a in accounts)]
        cells += [state, f"{minutes / 60:.1f}" if minutes else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
