#!/usr/bin/env python
"""The studies of issue 15: HuggingTweets' open questions, each answered on real accounts.

  python benchmarks/research.py fewshot   # what fine-tuning buys over prompting with K real posts
  python benchmarks/research.py maps      # topics of each account, the style map with generated posts
  python benchmarks/research.py mix       # --mix A=w,B=1-w: does the voice classifier follow the weight?
  python benchmarks/research.py layers    # top vs bottom layers vs all vs LoRA, at equal wall time
  python benchmarks/research.py postbase  # many people first: a post-style base, leave-one-account-out

Accounts: the seven in ../shared/data (the BarackObama CSV and the six X archives of data/archives), or
`--import [ACCOUNT=]PATH` (repeatable: any file or archive `tweetlm import` reads) for others; the largest first,
`--accounts N` keeps the N largest. Every training is the default recipe (`tweetlm train ACCOUNT`) with
a time budget of `--minutes` (the learning-rate schedule fitted to it): variants compared in a table had
the same wall time. All studies of one --workdir share a TWEETLM_HOME there and a cache of trained and
evaluated runs (`runs.json`), so the default fine-tune of an account is trained once and serves as the
"all layers" row, the "plain base" row and the runs the maps place. `--quick` checks that a study runs
(2 accounts, 150 posts each, 4 optimizer steps, 20 generated posts). Each study prints a Markdown table
and writes it (`STUDY/table.md`), its raw figures (`STUDY/rows.json`) and a plot (`STUDY/*.png`).
Run one study at a time with nothing else on the machine: a budget-limited run under load trains fewer
steps, and the rows would no longer have had equal compute.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
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
    posts: int  # 0: every curated post; else a seeded subsample of this many (a quick check)
    minutes: float | None  # the time budget of every training: equal wall time per row
    max_steps: int | None
    n: int  # generated posts per model in the evaluation
    base_minutes: float | None  # the post-style base's own budget (postbase)


QUICK = Scale(accounts=2, posts=150, minutes=None, max_steps=4, n=20, base_minutes=None)
STUDY = Scale(accounts=7, posts=0, minutes=3.0, max_steps=None, n=50, base_minutes=6.0)


class Runs:
    """Trained and evaluated runs of a workdir, keyed by their training config: a config trained once
    serves every study that needs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def key(config: Any) -> str:
        return json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)

    def get(self, config: Any, few_shot: int) -> dict[str, Any] | None:
        row = self.rows.get(self.key(config))
        if row is None or not Path(row["run_dir"]).is_dir() or row["few_shot"] < few_shot:
            return None
        return row | {"evaluation": json.loads((Path(row["run_dir"]) / "eval.json").read_text())}

    def put(self, config: Any, row: dict[str, Any]) -> None:
        self.rows[self.key(config)] = {k: v for k, v in row.items() if k != "evaluation"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rows, indent=1))
        tmp.replace(self.path)


@dataclasses.dataclass
class Study:
    scale: Scale
    runs: Runs
    out: Path  # this study's folder

    def config(self, accounts: tuple[str, ...], **changes: Any) -> Any:
        """The default recipe on `accounts`, with the study's budget (or steps, quick)."""
        from tweetlm.train import TrainConfig

        changes.setdefault("max_minutes", self.scale.minutes)
        return TrainConfig(accounts=accounts, max_steps=self.scale.max_steps, report_to="none", **changes)

    def train_and_eval(self, config: Any, few_shot: int = 0) -> dict[str, Any]:
        """Train and evaluate (or take both from the cache), and gather one row of figures."""
        from tweetlm.evaluate import EvalConfig, evaluate_run
        from tweetlm.train import train

        cached = self.runs.get(config, few_shot)
        if cached is not None:
            say(f"  cached: {cached['run']}")
            return cached
        say(
            f"  training {'+'.join(config.accounts)} ({config.max_minutes or config.max_steps} "
            f"{'min' if config.max_minutes else 'steps'}) ..."
        )
        started = time.monotonic()
        result = train(config)
        seconds = time.monotonic() - started
        started = time.monotonic()
        evaluation = evaluate_run(result.run_dir, EvalConfig(n=self.scale.n, few_shot=few_shot))
        fine = evaluation["models"]["fine_tuned"]
        voice = evaluation.get("voice") or {}
        metrics = result.metrics
        row = {
            "run": result.run_dir.name,
            "run_dir": str(result.run_dir),
            "few_shot": few_shot,
            "steps": metrics.steps,
            "epochs": round(metrics.epochs_completed, 2),
            "train_seconds": round(seconds, 1),
            "eval_seconds": round(time.monotonic() - started, 1),
            "loss_before": metrics.eval_loss_before,
            "loss": metrics.eval_loss_after,
            "base_loss": ((evaluation["models"].get("base") or {}).get("validation") or {}).get("loss"),
            "copies_8": (fine.get("copying") or {}).get("long_run"),
            "longest_run": (fine.get("copying") or {}).get("longest_run"),
            "distinct_2": fine["diversity"]["distinct_2"],
            "voice": voice.get("generated_attributed"),
            "few_shot_voice": (voice.get("also_attributed") or {}).get("few_shot"),
            "few_shot_copies_8": ((evaluation["models"].get("few_shot") or {}).get("copying") or {}).get("long_run"),
            "few_shot_distinct_2": ((evaluation["models"].get("few_shot") or {}).get("diversity") or {}).get(
                "distinct_2"
            ),
            "base_voice": voice.get("base_attributed"),
            "real_voice": voice.get("account_heldout_attributed"),
        }
        self.runs.put(config, row)
        say(
            f"  -> {row['run']}: loss {row['loss_before']:.3f} -> {row['loss']:.3f}, {row['steps']} steps, "
            f"{seconds:.0f} s training, {row['eval_seconds']:.0f} s evaluation"
        )
        return row | {"evaluation": evaluation}


def say(message: str) -> None:
    print(message, flush=True)


def import_accounts(sources: list[tuple[Path, str | None]], scale: Scale) -> list[str]:
    """Import and curate each source (posts a workdir already holds are skipped, and so is curating them
    again); the `scale.accounts` largest of their accounts, by curated posts.
    With `scale.posts`, a seeded subsample of that many posts of each, as account NAME_q."""
    import random

    from tweetlm.curate import CurateConfig, curate_account
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.store import Store

    with Store() as store:
        imported: dict[str, int] = {}  # account -> posts added now (0: all known from an earlier study)
        for path, account in sources:
            posts = list(resolve(path, None).read(path, ReadOptions(account=account)))
            with store.transaction():
                _, added = store.add_posts(posts)
            for name in {p.account for p in posts}:
                imported[name] = imported.get(name, 0) + added
        sizes = []
        for name, added in imported.items():
            dataset = None if added else store.dataset(name)
            if dataset is None:
                dataset, _ = curate_account(store, name, CurateConfig())
            if len(dataset.texts) >= 60:
                sizes.append((len(dataset.texts), name))
        if not sizes:
            raise SystemExit(f"no account with 60 or more curated posts in {', '.join(str(p) for p, _ in sources)}")
        chosen = [a for _, a in sorted(sizes, reverse=True)[: scale.accounts]]
        if not scale.posts:
            return chosen
        for account in chosen:
            texts = store.dataset(account).texts  # type: ignore[union-attr]
            keep = set(random.Random(0).sample(range(len(texts)), min(scale.posts, len(texts))))
            _subsample(store, account, [t for i, t in enumerate(texts) if i in keep])
    return [f"{a}_q" for a in chosen]


def import_source(spec: str) -> tuple[Path, str | None]:
    """`--import [ACCOUNT=]PATH`."""
    account, _, path = spec.rpartition("=") if not Path(spec).exists() else ("", "", spec)
    return Path(path), account or None


def _subsample(store: Any, account: str, texts: list[str]) -> None:
    """Store `texts` as account NAME_q (a quick study's smaller account), curated."""
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


def bar_plot(path: Path, rows: list[dict[str, Any]], group: str, series: str, values: list[str]) -> None:
    """One panel per figure in `values`: bars per `group` (account), one per `series` (variant)."""
    from tweetlm.plots import figure, png

    groups = list(dict.fromkeys(r[group] for r in rows))
    names = list(dict.fromkeys(r[series] for r in rows))
    fig = figure(3.2 * len(values), 3.4)
    width = 0.8 / len(names)
    for i, value in enumerate(values):
        ax = fig.add_subplot(1, len(values), i + 1)
        for j, name in enumerate(names):
            ys = [next((r.get(value) for r in rows if r[group] == g and r[series] == name), None) for g in groups]
            ax.bar(
                [k + j * width for k in range(len(groups))],
                [y if y is not None else 0 for y in ys],
                width,
                label=str(name),
            )
        ax.set_xticks(
            [k + 0.4 - width / 2 for k in range(len(groups))], [g[:10] for g in groups], rotation=60, fontsize=7
        )
        ax.set_title(value, fontsize=9)
    fig.axes[0].legend(fontsize=7)
    path.write_bytes(png(fig))


# ---- the studies -------------------------------------------------------------------------------


def study_fewshot(s: Study, accounts: list[str]) -> list[dict[str, Any]]:
    """One default fine-tune per account, evaluated with the few-shot column (K = 5 real posts in the
    prompt of the untouched instruct model): what fine-tuning buys over prompting."""
    rows = [s.train_and_eval(s.config((a,)), few_shot=5) | {"account": a} for a in accounts]
    bar_plot(s.out / "fewshot.png", _voice_rows(rows), "account", "model", ["attributed", "copies_8", "distinct_2"])
    return rows


def _voice_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        models = r["evaluation"]["models"]
        voice = r["evaluation"].get("voice") or {}
        for model, key, attributed in (
            ("fine-tuned", "fine_tuned", voice.get("generated_attributed")),
            ("few-shot K=5", "few_shot", (voice.get("also_attributed") or {}).get("few_shot")),
            ("base", "base", voice.get("base_attributed")),
            ("real (held out)", None, voice.get("account_heldout_attributed")),
        ):
            part = models.get(key) or {}
            out.append(
                {
                    "account": r["account"],
                    "model": model,
                    "attributed": attributed,
                    "copies_8": (part.get("copying") or {}).get("long_run"),
                    "distinct_2": (part.get("diversity") or {}).get("distinct_2"),
                }
            )
    return out


def study_maps(s: Study, accounts: list[str]) -> list[dict[str, Any]]:
    """The default fine-tune and evaluation of each account (cached from `fewshot`), then `tweetlm map`
    over all of them: topics per account, and the style map with each account's generated posts."""
    from tweetlm.cli import app

    runs = [s.train_and_eval(s.config((a,)), few_shot=5)["run_dir"] for a in accounts]
    with contextlib.suppress(SystemExit):
        app(["map", *accounts, "-o", str(s.out), *(x for run in runs for x in ("--run", run))], standalone_mode=False)
    data = json.loads((s.out / "map.json").read_text())
    return [
        {"account": a, "near_own": share, "nearest": data["style"]["nearest"][a]}
        for a, share in data["style"]["lands_near"].items()
    ] + [
        {"account": t["account"], "topics": " / ".join(", ".join(x["words"][:4]) for x in t["topics"])}
        for t in data["topics"]
    ]


def study_mix(s: Study, accounts: list[str]) -> list[dict[str, Any]]:
    """Two accounts A, B trained at weights w = 0, 0.2, 0.5, 0.8, 1 of A; a classifier of A's real posts
    against B's gives the share of each model's generated posts it attributes to A."""
    from tweetlm.plots import figure, png

    a, b = accounts[:2]
    rows = []
    for weight in (0.0, 0.2, 0.5, 0.8, 1.0):
        if weight in (0.0, 1.0):
            config = s.config((b,) if weight == 0.0 else (a,))
        else:
            config = s.config((a, b), mix=f"{a}={weight},{b}={1 - weight:.1f}")
        row = s.train_and_eval(config)
        generated = row["evaluation"]["generated"]["fine_tuned"]
        rows.append(row | {"a": a, "b": b, "weight_a": weight, "attributed_a": attributed_to(a, [b], generated)})
        say(f"  weight {weight}: {rows[-1]['attributed_a']:.2f} attributed to {a}")
    fig = figure(4.5, 3.6)
    ax = fig.add_subplot()
    ax.plot([r["weight_a"] for r in rows], [r["attributed_a"] for r in rows], "o-", label="generated posts")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="attribution = weight")
    ax.set_xlabel(f"mix weight of {a} (rest: {b})")
    ax.set_ylabel(f"share attributed to {a}")
    ax.legend(fontsize=8)
    (s.out / "mix.png").write_bytes(png(fig))
    return rows


LAYER_VARIANTS = {
    "top:15": {"train_layers": "top:15"},
    "bottom:15": {"train_layers": "bottom:15"},
    "all": {},
    "LoRA r8": {"lora_rank": 8},
}


def study_layers(s: Study, accounts: list[str]) -> list[dict[str, Any]]:
    """Top half, bottom half, all layers, LoRA rank 8 (on every block): same wall time (quick: steps)."""
    rows = []
    for account in accounts:
        for name, changes in LAYER_VARIANTS.items():
            row = s.train_and_eval(s.config((account,), **changes)) | {"account": account, "variant": name}
            if "topic_distance" not in row:
                row["topic_distance"] = topic_fidelity(account, row["evaluation"]["generated"]["fine_tuned"])
            rows.append(row)
    bar_plot(
        s.out / "layers.png", rows, "account", "variant", ["loss", "copies_8", "distinct_2", "voice", "topic_distance"]
    )
    return rows


def study_postbase(s: Study, accounts: list[str], held_out: int) -> list[dict[str, Any]]:
    """Leave one account out (the first `held_out` of `accounts`): a post-style base trained on the others
    pooled (its own budget), then the held-out account fine-tuned from it and from the plain base, at equal
    wall time (quick: steps)."""
    from tweetlm.models import named_base_dir
    from tweetlm.train import train

    rows = []
    for held in accounts[:held_out]:
        others = tuple(a for a in accounts if a != held)
        name = f"without-{held}".replace("_", "-")
        base = named_base_dir(name)
        if not base.exists():
            say(f"  post-style base {name}: {len(others)} accounts pooled ...")
            train(s.config(others, max_minutes=s.scale.base_minutes), output=base)
        for start in ("smollm2", name):
            config = s.config((held,)) if start == "smollm2" else s.config((held,), base_model=name)
            kind = "plain" if start == "smollm2" else "post-style (the other accounts)"
            rows.append(s.train_and_eval(config) | {"account": held, "start": start, "base": kind})
    bar_plot(s.out / "postbase.png", rows, "account", "base", ["loss_before", "loss", "voice"])
    return rows


COLUMNS = {
    "fewshot": [
        "account",
        "steps",
        "epochs",
        "base_loss",
        "loss",
        "voice",
        "few_shot_voice",
        "base_voice",
        "real_voice",
        "copies_8",
        "few_shot_copies_8",
        "distinct_2",
        "few_shot_distinct_2",
    ],
    "maps": ["account", "near_own", "nearest", "topics"],
    "mix": ["weight_a", "a", "b", "attributed_a", "loss", "distinct_2", "steps"],
    "layers": [
        "account",
        "variant",
        "steps",
        "epochs",
        "loss",
        "copies_8",
        "longest_run",
        "distinct_2",
        "voice",
        "topic_distance",
    ],
    "postbase": ["account", "start", "steps", "epochs", "loss_before", "loss", "voice", "copies_8"],
}


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows if any(c in r for c in columns)]
    return "\n".join(lines)


def machine() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(COLUMNS))
    parser.add_argument("--quick", action="store_true", help="2 accounts, 150 posts, 4 steps, 20 posts generated")
    parser.add_argument("--accounts", type=int, help="How many accounts (largest first).")
    parser.add_argument("--held-out", type=int, default=7, help="postbase: how many accounts to hold out in turn.")
    parser.add_argument("--minutes", type=float, help=f"Budget of each training (default {STUDY.minutes}).")
    parser.add_argument("--base-minutes", type=float, help=f"Budget of a post-style base ({STUDY.base_minutes}).")
    parser.add_argument("-n", type=int, help=f"Posts generated per model (default {STUDY.n}).")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="[ACCOUNT=]PATH",
        help="Use these posts instead (repeatable; ACCOUNT= where the file does not say whose posts they are).",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("research-runs"),
        help="Home, run cache and tables of the studies (shared by all of them; default research-runs).",
    )
    args = parser.parse_args()
    scale = QUICK if args.quick else STUDY
    changes = {"accounts": args.accounts, "minutes": args.minutes, "base_minutes": args.base_minutes, "n": args.n}
    scale = dataclasses.replace(scale, **{k: v for k, v in changes.items() if v is not None})
    work = args.workdir.resolve()
    out = work / (args.study + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TWEETLM_HOME"] = str(work / ("home-quick" if args.quick else "home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sources = [import_source(spec) for spec in args.imports] if args.imports else SHARED_SOURCES
    accounts = import_accounts(sources, scale)
    say(f"{args.study} on {', '.join(accounts)}; {machine()}; load {os.getloadavg()[0]:.1f}")
    study = Study(scale, Runs(work / ("runs-quick.json" if args.quick else "runs.json")), out)
    started = time.monotonic()
    if args.study == "postbase":
        rows = study_postbase(study, accounts, args.held_out)
    else:
        rows = globals()[f"study_{args.study}"](study, accounts)
    table = markdown(rows, COLUMNS[args.study])
    command = "python benchmarks/research.py " + shlex.join(sys.argv[1:])
    text = (
        f"{table}\n\n`{command}` ({time.monotonic() - started:.0f} s on {machine()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end)\n"
    )
    say(text)
    (out / "table.md").write_text(text)
    (out / "rows.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "evaluation"} for r in rows], indent=2)
    )


if __name__ == "__main__":
    main()
