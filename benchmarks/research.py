#!/usr/bin/env python
"""The studies of issue 15: HuggingTweets' open questions, each answered on real accounts.

  python benchmarks/research.py layers   # top vs bottom layers vs all vs LoRA, at equal wall time
  python benchmarks/research.py fewshot  # what fine-tuning buys over prompting with K real posts
  python benchmarks/research.py postbase # many people first: a post-style base, leave-one-account-out
  python benchmarks/research.py mix      # --mix A=w,B=1-w: does the voice classifier follow the weight?
  python benchmarks/research.py maps     # topics of each account, the style map with generated posts

Accounts: the seven in ../shared/data (the BarackObama CSV and the six X archives of data/archives), or
`--import PATH` (repeatable: any file or archive `tweetlm import` reads) for others. Everything runs in
a fresh TWEETLM_HOME under --workdir. `--quick` makes each study small (2 accounts, 150 posts each, a few
optimizer steps, 20 generated posts) to check that it runs; the full mode is what docs/research.md quotes.
Each study prints a Markdown table and writes it, with the raw figures as JSON, under --workdir.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWEETLM_SHARED", REPO.parent / "shared"))
SHARED_SOURCES = [(SHARED / "data" / "fivethirtyeight" / "BarackObama.csv", "BarackObama")] + [
    (path, path.stem) for path in sorted((SHARED / "data" / "archives").glob("*.zip"))
]


@dataclasses.dataclass(frozen=True)
class Scale:
    accounts: int
    posts: int
    minutes: float | None  # equal wall time per variant
    max_steps: int | None
    epochs: float
    n: int  # generated posts per model in the evaluation


QUICK = Scale(accounts=2, posts=150, minutes=None, max_steps=4, epochs=1.0, n=20)
FULL = Scale(accounts=7, posts=0, minutes=10.0, max_steps=None, epochs=4.0, n=100)


def import_accounts(sources: list[tuple[Path, str | None]], scale: Scale) -> list[str]:
    """Import and curate each source; keep `scale.posts` posts per account (seeded), the largest first."""
    import random

    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.store import Store

    names = []
    with Store() as store:
        for path, account in sources:
            source = resolve(path, None)
            with store.transaction():
                store.add_posts(source.read(path, ReadOptions(account=account)))
        for summary in store.accounts():
            dataset, _ = curate_account(store, summary.account, CurateConfig())
            if len(dataset.texts) >= 60:
                names.append((len(dataset.texts), summary.account))
        names.sort(reverse=True)
        chosen = [a for _, a in names[: scale.accounts]]
        for account in chosen if scale.posts else []:  # a smaller copy: `posts` of them, seeded
            texts = store.dataset(account).texts  # type: ignore[union-attr]
            keep = set(random.Random(0).sample(range(len(texts)), min(scale.posts, len(texts))))
            _subsample(store, account, [t for i, t in enumerate(texts) if i in keep])
    return chosen


def _subsample(store: Any, account: str, texts: list[str]) -> None:
    """Replace an account's posts by `texts` (a quick study's smaller account), curated again."""
    from datetime import datetime, timezone

    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.records import Post

    renamed = f"{account}_q"
    with store.transaction():
        store.add_posts(
            Post(
                platform="x",
                account=renamed,
                post_id=str(i),
                text=t,
                created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
            )
            for i, t in enumerate(texts)
        )
    curate_account(store, renamed, CurateConfig())


def quick_names(accounts: list[str], scale: Scale) -> list[str]:
    return [f"{a}_q" for a in accounts] if scale.posts else accounts


def config_for(accounts: tuple[str, ...], scale: Scale, **changes: Any) -> Any:
    from tweetlm.train import TrainConfig

    return TrainConfig(
        accounts=accounts,
        epochs=scale.epochs,
        max_minutes=scale.minutes,
        max_steps=scale.max_steps,
        report_to="none",
        **changes,
    )


def train_and_eval(config: Any, scale: Scale, output: Path | None = None, few_shot: int = 0) -> dict[str, Any]:
    """Train, evaluate, and gather one row of figures."""
    from tweetlm.evaluate import EvalConfig, evaluate_run
    from tweetlm.train import train

    started = time.monotonic()
    result = train(config, output=output)
    seconds = time.monotonic() - started
    evaluation = evaluate_run(result.run_dir, EvalConfig(n=scale.n, few_shot=few_shot))
    fine = evaluation["models"]["fine_tuned"]
    voice = evaluation.get("voice") or {}
    return {
        "run": result.run_dir.name,
        "run_dir": str(result.run_dir),
        "steps": result.metrics.steps,
        "train_seconds": round(seconds, 1),
        "loss_before": result.metrics.eval_loss_before,
        "loss": result.metrics.eval_loss_after,
        "copies_8": (fine.get("copying") or {}).get("long_run"),
        "longest_run": (fine.get("copying") or {}).get("longest_run"),
        "distinct_2": fine["diversity"]["distinct_2"],
        "voice": voice.get("generated_attributed"),
        "few_shot_voice": (voice.get("also_attributed") or {}).get("few_shot"),
        "base_voice": voice.get("base_attributed"),
        "evaluation": evaluation,
    }


def topic_fidelity(account: str, generated: list[str]) -> float | None:
    from tweetlm.curate import account_texts
    from tweetlm.errors import InputError
    from tweetlm.evaluate import Embedder
    from tweetlm.maps import topic_distance
    from tweetlm.store import Store

    with Store() as store:
        real = account_texts(store, account)
    try:
        return topic_distance(real, generated, Embedder())
    except InputError:
        return None


# ---- the studies -------------------------------------------------------------------------------


def study_layers(accounts: list[str], scale: Scale) -> list[dict[str, Any]]:
    """Top half, bottom half, all layers, LoRA: same wall time (full) or same steps (quick)."""
    rows = []
    for account in accounts:
        for name, changes in (
            ("top:15", {"train_layers": "top:15"}),
            ("bottom:15", {"train_layers": "bottom:15"}),
            ("all", {}),
            ("LoRA r8", {"lora_rank": 8}),
        ):
            row = train_and_eval(config_for((account,), scale, **changes), scale)
            row |= {"account": account, "variant": name}
            row["topic_distance"] = topic_fidelity(account, row["evaluation"]["generated"]["fine_tuned"])
            rows.append(row)
    return rows


def study_fewshot(accounts: list[str], scale: Scale) -> list[dict[str, Any]]:
    """One default fine-tune per account, evaluated with the few-shot column (K = 5, 10)."""
    from tweetlm.evaluate import EvalConfig, evaluate_run

    rows = []
    for account in accounts:
        row = train_and_eval(config_for((account,), scale), scale, few_shot=5) | {"account": account, "k": 5}
        rows.append(row)
        again = evaluate_run(Path(row["run_dir"]), EvalConfig(n=scale.n, few_shot=10))
        rows.append(
            {**row, "k": 10, "few_shot_voice": (again["voice"] or {}).get("also_attributed", {}).get("few_shot")}
        )
    return rows


def study_postbase(accounts: list[str], scale: Scale) -> list[dict[str, Any]]:
    """Leave one account out: a post-style base on the others, then the held-out account fine-tuned
    from it and from the plain base, at equal wall time (full) or steps (quick)."""
    from tweetlm.models import named_base_dir
    from tweetlm.train import train

    rows = []
    for held in accounts:
        others = tuple(a for a in accounts if a != held)
        name = f"without-{held}".replace("_", "-")
        base = named_base_dir(name)
        if not base.exists():
            train(config_for(others, scale), output=base)
        for start in ("smollm2", name):
            row = train_and_eval(config_for((held,), scale, base_model=start), scale)
            rows.append(row | {"account": held, "start": start})
    return rows


def study_mix(accounts: list[str], scale: Scale) -> list[dict[str, Any]]:
    """Two accounts A, B trained at weights w = 0.2, 0.5, 0.8 of A; the voice classifier's attribution of
    the generated posts to A (the evaluation's account-vs-others classifier, fitted for A alone)."""
    a, b = accounts[:2]
    rows = []
    for weight in (0.2, 0.5, 0.8):
        config = config_for((a, b), scale, mix=f"{a}={weight},{b}={1 - weight:.1f}")
        row = train_and_eval(config, scale)
        row |= {"weight_a": weight, "attributed_a": attributed_to(a, [b], row["evaluation"]["generated"]["fine_tuned"])}
        rows.append(row)
    return rows


def attributed_to(account: str, others: list[str], generated: list[str]) -> float | None:
    """Share of `generated` a classifier of `account`'s real posts against `others`' attributes to it."""
    from tweetlm.curate import account_texts
    from tweetlm.evaluate import Embedder, voice_check
    from tweetlm.store import Store

    with Store() as store:
        own = account_texts(store, account)
        contrast = {o: account_texts(store, o) for o in others}
    cut = len(own) // 4
    return voice_check(own[cut:], own[:cut], contrast, [], generated, Embedder())["generated_attributed"]


def study_maps(accounts: list[str], scale: Scale) -> list[dict[str, Any]]:
    """A default fine-tune and evaluation per account, then `tweetlm map` over all of them."""
    from tweetlm import paths
    from tweetlm.cli import app

    for account in accounts:
        train_and_eval(config_for((account,), scale), scale)
    out = paths.home() / "maps"
    with contextlib.suppress(SystemExit):
        app(["map", *accounts, "-o", str(out)], standalone_mode=False)
    data = json.loads((out / "map.json").read_text())
    return [
        {"account": a, "near_own": share, "nearest": data["style"]["nearest"][a]}
        for a, share in data["style"]["lands_near"].items()
    ] + [{"account": t["account"], "topics": [", ".join(x["words"][:4]) for x in t["topics"]]} for t in data["topics"]]


STUDIES = {
    "layers": (
        study_layers,
        ["account", "variant", "steps", "loss", "copies_8", "longest_run", "distinct_2", "voice", "topic_distance"],
    ),
    "fewshot": (study_fewshot, ["account", "k", "loss", "voice", "few_shot_voice", "base_voice"]),
    "postbase": (study_postbase, ["account", "start", "steps", "train_seconds", "loss_before", "loss", "voice"]),
    "mix": (study_mix, ["weight_a", "attributed_a", "loss", "distinct_2"]),
    "maps": (study_maps, ["account", "near_own", "nearest", "topics"]),
}


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows if any(c in r for c in columns)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--quick", action="store_true", help="2 accounts, 150 posts, 4 steps, 20 posts generated")
    parser.add_argument("--accounts", type=int, help="How many accounts (largest first).")
    parser.add_argument("--import", dest="imports", action="append", type=Path, help="Use these posts instead.")
    parser.add_argument("--workdir", type=Path, default=Path("research-runs"))
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    if args.accounts:
        scale = dataclasses.replace(scale, accounts=args.accounts)
    work = args.workdir.resolve() / (args.study + ("-quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TWEETLM_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sources = [(p, None) for p in args.imports] if args.imports else SHARED_SOURCES
    accounts = quick_names(import_accounts(sources, scale), scale)
    study, columns = STUDIES[args.study]
    started = time.monotonic()
    rows = study(accounts, scale)
    table = markdown(rows, columns)
    command = "python benchmarks/research.py " + shlex.join(sys.argv[1:])
    load = os.getloadavg()[0]
    text = f"{table}\n\n`{command}` ({time.monotonic() - started:.0f} s, load average {load:.1f} at the end)\n"
    print(text)
    (work / "table.md").write_text(text)
    (work / "rows.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "evaluation"} for r in rows], indent=2)
    )


if __name__ == "__main__":
    main()
