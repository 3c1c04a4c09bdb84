#!/usr/bin/env python
"""Training recipes on the seven real accounts: HuggingTweets' way of choosing defaults, on a CPU.

For each recipe and account, runs the whole `tweetlm train ACCOUNT --report-to none ...` command as a
user runs it, under `/usr/bin/time -v`, in one store holding the seven accounts of ../shared/data (the
FiveThirtyEight BarackObama CSV, CC BY 4.0, and the six X archives of data/archives/: see its README for
their repositories). Prints, per recipe, each account's best validation loss, their mean + 1 std (the
HuggingTweets objective), the wall time of each command and of all seven, and the peak RSS.

  python benchmarks/recipes.py                                  # every recipe below, every account
  python benchmarks/recipes.py --recipes huggingtweets --accounts BarackObama,smithjd
  python benchmarks/recipes.py --recipe "mine=--epochs 2 --lr 2e-4"   # a recipe of your own (repeatable)
  python benchmarks/recipes.py --home DIR --json out.json      # keep the store and runs; raw figures

A recipe is a name and the `tweetlm train` flags that make it. Runs are deleted after their figures are
read unless --keep-runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation_table import import_all  # noqa: E402

from tweetlm.runs import RunFolder  # noqa: E402

RECIPES = {
    # The default: up to 2 epochs of 16-post batches at lr 2e-4 in a 4.5-minute budget the schedule is fitted to.
    "tweetlm": "",
    # HuggingTweets' GPU recipe (the old default), with early stopping to save time: evaluations every half
    # epoch, stopping 2 evaluations after the best (its best is the full recipe's, or a lower one between).
    "huggingtweets": "--recipe huggingtweets --early-stop --evals-per-epoch 2",
    # The same as it was: 4 epochs, evaluated once an epoch, the best kept.
    "huggingtweets-full": "--recipe huggingtweets",
    # Earlier candidates for a CPU default, without a time budget.
    "2-epochs-2e-4": "--epochs 2 --lr 2e-4 -b 16 --max-minutes 0",
    "1-epoch-3e-4": "--epochs 1 --lr 3e-4 -b 16 --max-minutes 0",
}


@functools.cache
def machine() -> str:
    """train_speed's machine line and the bf16 matmul peak measured now: a time-budgeted recipe gets as
    many steps as the machine steps, and machines of one model differed 2x from day to day."""
    from train_speed import machine as described
    from train_speed import matmul_peak

    return f"{described()}; bf16 matmul peak {matmul_peak('bfloat16'):.0f} GFLOP/s"


def curated_accounts(home: Path, chosen: str = "") -> list[str]:
    """The seven accounts in the store at `home` (now TWEETLM_HOME), imported and curated if they are not
    yet; `chosen` (comma-separated) picks some, in its order."""
    os.environ["TWEETLM_HOME"] = str(home)
    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.store import Store

    with Store() as store:
        accounts = [a.account for a in store.accounts()] or import_all(store)
        for account in accounts:
            if store.dataset(account, with_posts=False) is None:
                curate_account(store, account, CurateConfig())
    return [a for a in chosen.split(",") if a in accounts] if chosen else accounts


def run_one(account: str, flags: str, home: Path, output: Path) -> dict[str, Any]:
    """One whole `tweetlm train` command: its wall time, peak RSS and what its run.json says."""
    tweetlm = Path(sys.executable).with_name("tweetlm")
    command = [str(tweetlm), "train", account, "--report-to", "none", "--output", str(output), *shlex.split(flags)]
    env = {**os.environ, "TWEETLM_HOME": str(home)}
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"{account} ({flags}) failed:\n{done.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    info = RunFolder(output).read()
    metrics = info.metrics
    evals = [h["eval_loss"] for h in metrics.evaluations(trained_only=True)]
    return {
        "account": account,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(rss_kb / 1024**2, 2),
        "loss_before": metrics.eval_loss_before,
        "best_loss": min(evals) if evals else metrics.eval_loss_after,
        "evaluations": evals,
        "epochs": metrics.epochs_completed,
        "stopped": getattr(info, "stopped", None),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    losses = [r["best_loss"] for r in rows]
    mean, std = statistics.fmean(losses), statistics.pstdev(losses)
    return {
        "mean": mean,
        "std": std,
        "objective": mean + std,
        "wall_s": sum(r["wall_s"] for r in rows),
        "max_rss_gb": max(r["peak_rss_gb"] for r in rows),
    }


def table(results: dict[str, list[dict[str, Any]]], accounts: list[str]) -> str:
    head = ["recipe", *accounts, "mean + std", "wall, all accounts (min)", "wall, BarackObama (min)", "peak RSS (GB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in results.items():
        by = {r["account"]: r for r in rows}
        s = summary(rows)
        obama = by.get("BarackObama")
        cells = [f"`{name}`", *(f"{by[a]['best_loss']:.3f}" if a in by else "-" for a in accounts)]
        cells += [f"{s['mean']:.3f} + {s['std']:.3f} = **{s['objective']:.3f}**", f"{s['wall_s'] / 60:.1f}"]
        cells += [f"{obama['wall_s'] / 60:.1f}" if obama else "-", f"{s['max_rss_gb']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(RECIPES), help="names from RECIPES, comma-separated")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=FLAGS, a recipe of your own")
    parser.add_argument("--accounts", default="", help="a subset of the seven, comma-separated")
    parser.add_argument("--home", type=Path, help="TWEETLM_HOME to keep (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--keep-runs", action="store_true")
    args = parser.parse_args()

    recipes = {name: RECIPES[name] for name in args.recipes.split(",") if name}
    recipes |= dict(r.split("=", 1) for r in args.recipe)
    home = args.home or Path(tempfile.mkdtemp(prefix="tweetlm-recipes-"))
    accounts = curated_accounts(home, args.accounts)
    print(f"Machine: {machine()}; load average at the start {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for account in accounts:  # each account's recipes side by side, so a stopped run still compares them
        for name, flags in recipes.items():
            output = home / "recipe-runs" / f"{name}-{account}"
            shutil.rmtree(output, ignore_errors=True)
            row = run_one(account, flags, home, output)
            results.setdefault(name, []).append(row)
            print(
                f"{name:>16} {account:>14}: best {row['best_loss']:.3f} (from {row['loss_before']:.3f}), "
                f"{row['wall_s'] / 60:.1f} min, peak RSS {row['peak_rss_gb']:.2f} GB, "
                f"{row['epochs']:.2f} epochs, load {row['load_before']}-{row['load_after']}",
                flush=True,
            )
            if not args.keep_runs:
                shutil.rmtree(output, ignore_errors=True)
    print(f"\nProduced by `python benchmarks/recipes.py {' '.join(map(shlex.quote, sys.argv[1:]))}`")
    print("Recipes: " + "; ".join(f"`{n}` = `{f}`" for n, f in recipes.items()) + "\n")
    print(table(results, accounts))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "recipes": recipes, "results": results}, indent=1))


if __name__ == "__main__":
    main()
