#!/usr/bin/env python
"""Curation regression table: what each rule drops and keeps on the seven real accounts of ../shared/data.

Imports the BarackObama CSV (FiveThirtyEight, CC BY 4.0) and the six X archives of data/archives/ (see
its README for their repositories) into a temporary store, curates each with the default rules (nothing
is saved), and prints one Markdown table: a row per rule, a column per account, then the language mix
of what was kept. Run it before and after a change to a rule and compare.

  python benchmarks/curation_table.py                  # the table
  python benchmarks/curation_table.py --examples 3     # and up to 3 examples of what each rule dropped
  python benchmarks/curation_table.py --home DIR       # keep the imported store in DIR (faster reruns)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWEETLM_SHARED", REPO.parent / "shared")) / "data"
# (file, account to file it under: None when the archive names its own)
ACCOUNTS = (
    ("fivethirtyeight/BarackObama.csv", "BarackObama"),
    ("archives/Jack_L_Lance.zip", None),
    ("archives/alrocar.zip", None),
    ("archives/milahu104.zip", None),
    ("archives/mkommar.zip", None),
    ("archives/smithjd.zip", "smithjd"),
    ("archives/larsbrinkhoff.zip", None),
)


def import_all(store: Any) -> list[str]:
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.store import file_hash

    names = []
    for relative, account in ACCOUNTS:
        path = SHARED / relative
        source = resolve(path, None)
        result = store.import_posts(
            source.read(path, ReadOptions(account=account)),
            source=source.name,
            path=str(path),
            file_hash=file_hash(path),
        )
        names += [a for a in result.accounts if a not in names] or [account or path.stem]
    return names


def language_mix(counts: Counter[str], top: int = 3) -> str:
    total = sum(counts.values())
    if not total:
        return "-"
    shown = [f"{lang} {100 * n / total:.0f}%" for lang, n in counts.most_common(top)]
    return ", ".join(shown)


# Rules that rewrite text rather than drop posts: the table counts the kept posts each one changed
# (those whose text differs when it alone is switched off).
REWRITERS = ("fix-text", "quoted", "leftovers")


def changed(store: Any, account: str, kept: dict[str, str]) -> dict[str, int]:
    from tweetlm.curate import CurateConfig, curate_posts

    if not hasattr(CurateConfig, "without"):  # before these rules could be switched off by name
        return {}
    counts = {}
    for rule in REWRITERS:
        other = {
            p.post_id: p.text for p in curate_posts(store.iter_posts(account), CurateConfig().without([rule])).posts
        }
        counts[rule] = sum(1 for post_id, text in kept.items() if post_id in other and other[post_id] != text)
    return counts


def curate(store: Any, account: str, examples: int) -> tuple[Any, Counter[str], dict[str, int]]:
    """The default rules on one account; the language mix of the kept posts (the report's when it has one,
    else the platform's `lang` field, "?" where there is none); the posts each rewriting rule changed."""
    from tweetlm.curate import CurateConfig, curate_posts

    langs: dict[str, str] = {}

    def posts() -> Iterator[Any]:
        for post in store.iter_posts(account):
            langs[post.post_id] = post.lang or "?"
            yield post

    result = curate_posts(posts(), CurateConfig(), examples=max(examples, 1))
    mix = getattr(result.report, "languages", None)
    counts = Counter(mix) if mix else Counter(langs[p.post_id] for p in result.posts)
    return result.report, counts, changed(store, account, {p.post_id: p.text for p in result.posts})


def table(store: Any, accounts: list[str], examples: int) -> str:
    from tweetlm.curate import REPORT_LABELS

    reports = {a: curate(store, a, examples) for a in accounts}
    keys: list[str] = []
    for report, *_ in reports.values():
        keys += [k for k, _ in report.rows() if k not in keys]
    lines = ["| rule | " + " | ".join(accounts) + " |", "|---" * (len(accounts) + 1) + "|"]
    for key in keys:
        cells = []
        for report, *_ in reports.values():
            count = dict(report.rows()).get(key)
            share = f" ({100 * count / max(report.downloaded, 1):.0f}%)" if count and key != "downloaded" else ""
            cells.append("-" if count is None else f"{count}{share}")
        label = f"**{REPORT_LABELS.get(key, key)}**" if key == "kept" else REPORT_LABELS.get(key, key)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| language mix kept | " + " | ".join(language_mix(c) for _, c, _ in reports.values()) + " |")
    for rule in REWRITERS:
        if any(rule in counts for *_, counts in reports.values()):
            cells = [str(counts.get(rule, "-")) for *_, counts in reports.values()]
            lines.append(f"| kept posts changed by {rule} | " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    if examples:
        out += "\n"
        for account, (report, *_) in reports.items():
            for key, texts in report.examples.items():
                for text in texts[:examples]:
                    out += f"\n- {account} / {REPORT_LABELS.get(key, key)}: {text[:120]!r}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=0, help="examples to print of what each rule dropped")
    parser.add_argument("--home", type=Path, help="TWEETLM_HOME to import into and reuse (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        os.environ["TWEETLM_HOME"] = str(home)
        from tweetlm.store import Store

        with Store() as store:
            accounts = import_all(store)
            print(table(store, accounts, args.examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
