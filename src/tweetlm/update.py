"""`tweetlm update ACCOUNT`: keep a model fresh. Fetch or re-import what is new, curate with the rules
the latest run used, continue training that run on the new posts mixed with a replay sample of older
ones, and keep the new run only if it predicts the held-out new posts better than its parent did.

A run made this way records its parent and the chain of runs before it in `run.json`; a rejected
update leaves the parent the latest run and is remembered in the parent's `updates.json`, so the same
new posts are not tried again until more arrive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tweetlm import paths
from tweetlm.curate import CurateConfig, curate_account
from tweetlm.dataset import VALIDATION_FRACTION, Split
from tweetlm.errors import InputError, NoDataError, TweetlmError
from tweetlm.runs import RunFolder, RunInfo, RunPosts
from tweetlm.store import Store, input_hash
from tweetlm.train import TrainConfig, train

log = logging.getLogger("tweetlm")

UPDATES_FILE = "updates.json"  # in a parent run: the updates tried on it that were not kept


@dataclass(frozen=True)
class UpdateConfig:
    account: str
    replay: float = field(default=1.0, metadata={"help": "older training posts replayed per new one"})
    min_new: int = field(default=10, metadata={"help": "new posts needed before training (fewer: wait)"})
    epochs: float | None = field(default=None, metadata={"help": "passes over the new data (default: the run's)"})
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate (default: the run's)"})
    fetch: bool = field(default=True, metadata={"help": "fetch from the networks the account was fetched from"})
    sources: tuple[Path, ...] = field(default=(), metadata={"help": "files to import first"})
    report_to: str = field(default="none", metadata={"help": "trackers for the training"})

    def __post_init__(self) -> None:
        if self.replay < 0:
            raise InputError(f"replay={self.replay}: must be >= 0")
        if self.min_new < 2:
            raise InputError(f"min_new={self.min_new}: must be >= 2 (one to train on, one to check)")


@dataclass
class UpdateResult:
    parent: Path
    status: str  # "nothing new", "waiting", "kept", "rejected"
    message: str
    run_dir: Path | None = None
    new_posts: int = 0
    loss_before: float | None = None
    loss_after: float | None = None
    refreshed: list[str] = field(default_factory=list)


Say = Callable[[str], None]


def update(
    config: UpdateConfig, say: Say = log.info, on_event: Callable[[dict[str, Any]], None] | None = None
) -> UpdateResult:
    try:
        parent = RunFolder.latest(config.account).path
    except NoDataError as exc:
        raise NoDataError(
            f"{config.account} has no finished run to update: train it first (tweetlm train {config.account})"
        ) from exc
    run = RunFolder(parent).read()
    accounts = tuple(run.accounts)
    with Store() as store:
        refreshed = refresh(store, accounts, config, say)
        curated = {a: _curate_like(store, a, run) for a in accounts}
    seen = _seen_posts(parent)
    new = {a: [t for t in texts if t not in seen] for a, texts in curated.items()}
    n_new = sum(len(t) for t in new.values())
    result = UpdateResult(parent, "nothing new", "", new_posts=n_new, refreshed=refreshed)
    if n_new == 0:
        result.message = f"nothing new for {', '.join(accounts)} since {parent.name}"
        return result
    if n_new < config.min_new:
        result.status = "waiting"
        result.message = f"{n_new} new posts since {parent.name}: waiting for {config.min_new} (--min-new)"
        return result
    digest = _posts_digest(new)
    if any(u["new_posts_hash"] == digest for u in _read_updates(parent)):
        result.message = f"nothing new since the update of {parent.name} that was not kept ({n_new} posts)"
        return result
    return _train_update(config, parent, run, new, digest, result, say, on_event)


def refresh(store: Store, accounts: tuple[str, ...], config: UpdateConfig, say: Say) -> list[str]:
    """Import the files given, re-import changed files these accounts came from, and fetch incrementally
    from the networks they were fetched from; returns one line per source."""
    from tweetlm.sources import ReadOptions, resolve

    done: list[str] = []
    wanted = {a.lower() for a in accounts}
    targets: dict[str, str | None] = {str(p.resolve()): None for p in config.sources}
    for row in store.imports():
        found = [a for a in json.loads(row["accounts"] or "[]") if a.lower() in wanted]
        if found and Path(row["path"]).exists():
            targets.setdefault(row["path"], found[0] if len(json.loads(row["accounts"])) == 1 else None)
    for path_text, account in targets.items():
        path = Path(path_text)
        if not path.exists():
            raise InputError(f"{path} does not exist")
        digest = input_hash(path)
        if any(r["path"] == path_text and r["file_hash"] == digest for r in store.imports()):
            continue
        source = resolve(path, None)
        result = store.import_posts(
            source.read(path, ReadOptions(account=account)), source=source.name, path=path_text, file_hash=digest
        )
        done.append(f"imported {path.name}: {result.added} new of {result.read}")
        say(done[-1])
    if config.fetch:
        done += _fetch(store, wanted, say)
    return done


def _fetch(store: Store, wanted: set[str], say: Say) -> list[str]:
    from tweetlm.sources.online.fetch import FetchOptions, fetch, open_source

    done = []
    rows = store.db.execute("SELECT platform, account FROM fetch_state").fetchall()
    for platform, account in rows:
        if account.lstrip("@").lower() not in wanted:
            continue
        try:
            summary = fetch(open_source(platform, account, FetchOptions(notify=say)), store)
        except TweetlmError as exc:  # a network down must not stop an update from a file
            done.append(f"fetch {platform} {account} failed: {exc}")
        else:
            done.append(f"fetched {platform} {account}: {summary.added} new of {summary.read}")
        say(done[-1])
    return done


def _curate_like(store: Store, account: str, run: RunInfo) -> list[str]:
    rules = run.data["datasets"].get(account, {}).get("rules", {})
    known = {f.name for f in dataclasses.fields(CurateConfig)}
    dataset, _ = curate_account(store, account, CurateConfig(**{k: v for k, v in rules.items() if k in known}))
    return dataset.texts


def _seen_posts(run_dir: Path) -> set[str]:
    posts = RunFolder(run_dir).posts()
    return {t for part in (posts.train, posts.validation) for texts in part.values() for t in texts}


def _posts_digest(posts: dict[str, list[str]]) -> str:
    return hashlib.sha256(json.dumps(posts, sort_keys=True).encode()).hexdigest()[:16]


def plan_splits(
    parent_posts: RunPosts, new: dict[str, list[str]], replay: float, seed: int
) -> tuple[dict[str, Split], dict[str, list[str]]]:
    """What this update trains and validates on, and the new posts it holds out.

    Each account's new posts are split (10%, at least one held out); training is the new training posts
    plus `replay` times as many of the parent's training posts, drawn with the seed; validation is the
    held-out new posts plus the parent's validation posts."""
    rng = random.Random(seed)
    splits: dict[str, Split] = {}
    held: dict[str, list[str]] = {}
    for account, texts in new.items():
        order = list(texts)
        rng.shuffle(order)
        n_val = max(1, round(len(order) * VALIDATION_FRACTION)) if len(order) >= 2 else 0
        held[account] = order[:n_val]
        fresh = order[n_val:]
        old = list(parent_posts.train.get(account, []))
        replayed = rng.sample(old, min(len(old), round(replay * len(fresh))))
        splits[account] = Split(fresh + replayed, held[account] + list(parent_posts.validation.get(account, [])))
    return splits, held


def _train_update(
    config: UpdateConfig,
    parent: Path,
    run: RunInfo,
    new: dict[str, list[str]],
    digest: str,
    result: UpdateResult,
    say: Say,
    on_event: Callable[[dict[str, Any]], None] | None,
) -> UpdateResult:
    parent_posts = RunFolder(parent).posts()
    base = TrainConfig.from_dict(run.config)
    train_config = dataclasses.replace(
        base,
        base_model=str(parent),
        epochs=config.epochs or base.epochs,
        learning_rate=config.learning_rate or base.learning_rate,
        max_steps=None,
        max_minutes=None,
        report_to=config.report_to,
    )
    splits, held = plan_splits(parent_posts, new, config.replay, base.seed)
    held_out = [t for texts in held.values() for t in texts]
    n_train = sum(len(s.train) for s in splits.values())
    staging = paths.runs_dir() / ".updates"
    staging.mkdir(exist_ok=True)
    name = RunFolder.new(tuple(run.accounts)).name
    say(
        f"{result.new_posts} new posts since {parent.name}: training on {n_train} "
        f"({len(held_out)} new ones held out), replaying older ones"
    )
    trained = train(train_config, on_event=on_event, output=staging / name, splits=splits).run_dir
    assert trained is not None
    try:
        before = held_out_loss(parent, held_out, base.max_length)
        after = held_out_loss(trained, held_out, base.max_length)
        result.loss_before, result.loss_after = before, after
        record = {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "new_posts": result.new_posts,
            "new_posts_hash": digest,
            "held_out": len(held_out),
            "trained_on": n_train,
            "replayed": n_train - (result.new_posts - len(held_out)),
            "held_out_loss_before": before,
            "held_out_loss_after": after,
        }
        if after >= before:
            _remember_rejected(parent, {**record, "kept": False})
            result.status = "rejected"
            result.message = (
                f"kept {parent.name}: the new posts' validation loss went {before:.3f} -> {after:.3f} "
                "with the update, not lower"
            )
            return result
        final = paths.runs_dir() / name
        _adopt(trained, parent, run, parent_posts, new, held, {**record, "kept": True})
        os.replace(trained, final)
        result.status, result.run_dir = "kept", final
        result.message = f"new run {final.name}: the new posts' validation loss {before:.3f} -> {after:.3f}"
        return result
    finally:
        shutil.rmtree(trained, ignore_errors=True)


def held_out_loss(run_dir: Path, texts: list[str], max_length: int) -> float:
    from tweetlm.evaluate import validation_loss
    from tweetlm.models import load_model, load_tokenizer

    model = load_model(str(run_dir)).eval()
    return float(validation_loss(model, load_tokenizer(str(run_dir)), texts, max_length)["loss"])


def _adopt(
    run_dir: Path,
    parent: Path,
    parent_run: RunInfo,
    parent_posts: RunPosts,
    new: dict[str, list[str]],
    held: dict[str, list[str]],
    record: dict[str, Any],
) -> None:
    """Make the trained folder a child of `parent`: its lineage and update record in run.json, every post
    either has seen in posts.json (so the copy filter and the next update know them), a fresh card."""
    from tweetlm.card import write_card

    folder = RunFolder(run_dir)
    run = folder.read()
    run.base_model = parent_run.base_model
    run.parent = parent.name
    run.chain = [*parent_run.chain, parent.name]
    run.update = record
    posts = RunPosts()
    for account in run.accounts:
        fresh = [t for t in new.get(account, []) if t not in set(held.get(account, []))]
        posts.train[account] = [*parent_posts.train.get(account, []), *fresh]
        posts.validation[account] = [*parent_posts.validation.get(account, []), *held.get(account, [])]
    folder.write(run)
    folder.write_posts(posts)
    write_card(run_dir, run)


def _read_updates(parent: Path) -> list[dict[str, Any]]:
    path = parent / UPDATES_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")))
    except ValueError:
        return []


def _remember_rejected(parent: Path, record: dict[str, Any]) -> None:
    paths.write_json(parent / UPDATES_FILE, [*_read_updates(parent), record])
