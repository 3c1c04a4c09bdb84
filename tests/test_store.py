"""The SQLite store: migrations, idempotent imports, all-or-nothing transactions, datasets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tweetlm.errors import NoDataError, StoreError
from tweetlm.records import Kind, Post, Url
from tweetlm.store import MIGRATIONS, CuratedPost, Store


def posts(n: int, account: str = "me") -> list[Post]:
    return [
        Post(
            platform="x",
            account=account,
            post_id=str(i),
            text=f"post {i}",
            created_at=datetime(2021, 1, 1 + i % 28, tzinfo=timezone.utc),
            kind=Kind.REPLY if i % 2 else Kind.ORIGINAL,
            reply_to="you" if i % 2 else None,
            urls=(Url("https://t.co/a", "https://example.com"),),
            media=("https://pbs.twimg.com/media/x.jpg",),
            likes=i,
            reposts=2 * i,
            raw={"id_str": str(i)},
        )
        for i in range(n)
    ]


def test_fresh_store_applies_every_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        names = [r[0] for r in store.db.execute("SELECT name FROM _migrations")]
    assert names == [m.__name__ for m in MIGRATIONS]
    with Store(path) as store:  # reopening applies nothing again
        assert store.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"posts", "imports", "datasets", "dataset_posts", "fetch_state"} <= tables


def test_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a tweetlm SQLite file"):
        Store(path)


def test_import_is_idempotent_and_logged_and_round_trips() -> None:
    with Store() as store:
        first = store.import_posts(posts(10), source="test", path="a", file_hash="h")
        second = store.import_posts(posts(10), source="test", path="a", file_hash="h")
        assert (first.read, first.added, first.skipped) == (10, 10, 0)
        assert (second.read, second.added, second.skipped) == (10, 0, 10)
        log = store.imports()
        assert [(r["added"], r["skipped"], r["file_hash"]) for r in log] == [(10, 0, "h"), (0, 10, "h")]
        assert list(store.iter_posts("me")) == posts(10)  # every field survives the round trip
        assert store.accounts()[0].posts == 10


def test_a_failing_import_leaves_the_store_as_it_was() -> None:
    def broken() -> Iterator[Post]:
        yield from posts(5000)  # more than one insert batch
        raise ValueError("malformed line 5001")

    with Store() as store:
        store.import_posts(posts(3, "other"), source="t", path="p", file_hash="h")
        with pytest.raises(ValueError):
            store.import_posts(broken(), source="t", path="q", file_hash="h2")
        assert store.count_posts() == 3
        assert len(store.imports()) == 1


def test_resolve_account_is_case_insensitive_and_lists_known_accounts() -> None:
    with Store() as store:
        store.import_posts(posts(2, "BarackObama"), source="t", path="p", file_hash="h")
        assert store.resolve_account("@barackobama") == "BarackObama"
        with pytest.raises(NoDataError, match="known accounts: BarackObama"):
            store.resolve_account("nobody")


def test_datasets_are_versioned_by_content() -> None:
    with Store() as store:
        a = store.save_dataset(
            "me", {"rule": 1}, {"kept": 2}, [CuratedPost("1", "one", None), CuratedPost("2", "two", None)]
        )
        b = store.save_dataset(
            "me", {"rule": 1}, {"kept": 2}, [CuratedPost("1", "one", None), CuratedPost("2", "two", None)]
        )
        c = store.save_dataset("me", {"rule": 2}, {"kept": 1}, [CuratedPost("1", "one", None)])
        assert a.hash == b.hash != c.hash
        assert store.db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 2
        latest = store.dataset("ME")
        assert latest is not None and latest.hash == c.hash and latest.texts == ["one"]


def test_fetch_state_round_trips() -> None:
    with Store() as store:
        assert store.fetch_state("bluesky", "a.bsky.social") == {}
        store.set_fetch_state("bluesky", "a.bsky.social", {"cursor": "abc"})
        store.set_fetch_state("bluesky", "a.bsky.social", {"cursor": "def"})
        assert store.fetch_state("bluesky", "a.bsky.social") == {"cursor": "def"}


def test_store_file_is_plain_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.import_posts(posts(1), source="t", path="p", file_hash="h")
    assert sqlite3.connect(path).execute("SELECT text FROM posts").fetchone() == ("post 0",)


def test_two_processes_opening_a_fresh_store_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "race.sqlite"
    code = f"from tweetlm.store import Store; Store({str(path)!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)]
    errors = [p.communicate()[1].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with Store(path) as store:
        assert store.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def _dump(store: Store) -> list[list[tuple[object, ...]]]:
    return [list(map(tuple, store.db.execute(f"SELECT * FROM {t} ORDER BY 1"))) for t in ("datasets", "dataset_posts")]


def test_a_dataset_streams_in_batches_and_an_empty_or_failing_one_writes_nothing() -> None:
    def stream(n: int, fail_at: int | None = None) -> Iterator[CuratedPost]:
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("the curation broke")
            yield CuratedPost(str(i), f"text {i}", None)

    with Store() as store:
        big = store.save_dataset("me", {"rule": 1}, lambda: {"kept": 12}, stream(12), batch=5, with_posts=False)
        assert big is not None and big.n_posts == 12 and big.posts == () and big.report == {"kept": 12}
        loaded = store.dataset("me", big.hash)
        assert loaded is not None and loaded.texts == [f"text {i}" for i in range(12)]
        before = _dump(store)
        assert store.save_dataset("me", {"rule": 1}, {}, stream(0)) is None
        with pytest.raises(RuntimeError, match="broke"):
            store.save_dataset("me", {"rule": 2}, {}, stream(12, fail_at=7), batch=5)
        assert _dump(store) == before
