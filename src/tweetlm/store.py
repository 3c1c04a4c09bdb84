"""One SQLite file holds every post, every import, every fetch cursor and every curated dataset.

The schema changes only through the numbered migrations at the bottom of this module; `migrate`
runs before any read or write and records what it applied in `_migrations`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from tweetlm import paths
from tweetlm.errors import InputError, NoDataError, StoreError
from tweetlm.records import Kind, Post, Url


@dataclass(frozen=True)
class ImportResult:
    import_id: int
    read: int
    added: int
    skipped: int  # already in the store
    accounts: tuple[str, ...]


@dataclass(frozen=True)
class AccountSummary:
    account: str
    platform: str
    posts: int
    last_import: str | None


@dataclass(frozen=True)
class CuratedPost:
    post_id: str
    text: str
    created_at: str | None


@dataclass(frozen=True)
class Dataset:
    """A versioned curated training set: `hash` is a content hash of its texts and rules."""

    id: int
    account: str
    hash: str
    created_at: str
    rules: dict[str, Any]
    report: dict[str, Any]
    n_posts: int
    posts: tuple[CuratedPost, ...]  # empty when loaded with `with_posts=False`

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.posts]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def input_hash(path: Path) -> str:
    """A file's hash, or for an extracted archive folder the hash of its .js/.json files."""
    if path.is_file():
        return file_hash(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".js", ".json"}):
        try:
            digest.update(str(item.relative_to(path)).encode() + b"\x00" + file_hash(item).encode())
        except OSError as exc:
            raise InputError(f"{item} cannot be read ({exc.strerror}): check its permissions") from None
    return digest.hexdigest()


def _post_row(post: Post, import_id: int | None) -> tuple[Any, ...]:
    return (
        post.platform,
        post.account,
        post.post_id,
        post.created_at.isoformat() if post.created_at else None,
        post.text,
        post.kind.value,
        post.reply_to,
        post.lang,
        json.dumps([[u.short, u.expanded] for u in post.urls]) if post.urls else None,
        json.dumps(list(post.media)) if post.media else None,
        post.likes,
        post.reposts,
        json.dumps(post.raw, ensure_ascii=False, separators=(",", ":")) if post.raw is not None else None,
        import_id,
    )


def _row_post(row: sqlite3.Row) -> Post:
    return Post(
        platform=row["platform"],
        account=row["account"],
        post_id=row["post_id"],
        text=row["text"],
        created_at=datetime.fromisoformat(row["created_at"]) if row["created_at"] else None,
        kind=Kind(row["kind"]),
        reply_to=row["reply_to"],
        lang=row["lang"],
        urls=tuple(Url(s, e) for s, e in json.loads(row["urls"])) if row["urls"] else (),
        media=tuple(json.loads(row["media"])) if row["media"] else (),
        likes=row["likes"],
        reposts=row["reposts"],
        raw=json.loads(row["raw"]) if row["raw"] else None,
    )


_INSERT_POST = (
    "INSERT OR IGNORE INTO posts (platform, account, post_id, created_at, text, kind, reply_to, lang,"
    " urls, media, likes, reposts, raw, import_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class Store:
    """The SQLite store. Use as a context manager, or call `close()`."""

    def __init__(self, path: Path | None = None, *, create: bool = True) -> None:
        """`create=False` is for commands that only read: where no store exists yet they see an empty,
        read-only one in memory (and say "the store is empty") instead of leaving an empty file behind."""
        self.path = Path(path) if path is not None else paths.store_path()
        self.empty = not create and not self.path.exists()
        if self.empty:
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self.db.row_factory = sqlite3.Row
            migrate(self.db)
            self.db.execute("PRAGMA query_only = ON")
            return
        _check_writable(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=lock_timeout())
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            _wal(self.db)
            self.db.execute("PRAGMA synchronous = NORMAL")
            migrate(self.db)
        except sqlite3.OperationalError as exc:
            self.db.close()
            raise _operational(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(
                f"{self.path} is not a tweetlm SQLite file ({exc}): move it away or set TWEETLM_HOME"
            ) from exc

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: an exception inside rolls everything back."""
        if self.db.in_transaction:  # nested: the outer transaction decides
            yield self.db
            return
        try:
            self.db.execute("BEGIN" if self.empty else "BEGIN IMMEDIATE")  # a read-only one takes no write lock
        except sqlite3.OperationalError as exc:
            raise _operational(self.path, exc) from exc
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # ---- posts -------------------------------------------------------------------------------

    def add_posts(self, posts: Iterable[Post], import_id: int | None = None, batch: int = 2000) -> tuple[int, int]:
        """Insert posts (call inside `transaction()`); returns (read, added). Known posts are skipped."""
        read = added = 0
        iterator = iter(posts)
        while chunk := list(islice(iterator, batch)):
            before = self.db.total_changes
            self.db.executemany(_INSERT_POST, [_post_row(p, import_id) for p in chunk])
            added += self.db.total_changes - before
            read += len(chunk)
        return read, added

    def import_posts(
        self,
        posts: Iterable[Post],
        *,
        source: str,
        path: str,
        file_hash: str,
        on_progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import a whole file in one transaction: a failure anywhere leaves the store as it was."""
        accounts: set[str] = set()

        def tracked(items: Iterable[Post]) -> Iterator[Post]:
            for n, post in enumerate(items, 1):
                accounts.add(post.account)
                if on_progress is not None and n % 1000 == 0:
                    on_progress(n)
                yield post

        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO imports (source, path, file_hash, started_at) VALUES (?,?,?,?)",
                (source, path, file_hash, _now()),
            )
            import_id = int(cur.lastrowid or 0)
            read, added = self.add_posts(tracked(posts), import_id)
            if read == 0:  # rolled back with the import record: an import of nothing is no import
                raise NoDataError(f"{path}: no posts found in it ({source}): nothing imported")
            self.db.execute(
                "UPDATE imports SET finished_at=?, read=?, added=?, skipped=?, accounts=? WHERE id=?",
                (_now(), read, added, read - added, json.dumps(sorted(accounts)), import_id),
            )
        return ImportResult(import_id, read, added, read - added, tuple(sorted(accounts)))

    def imports(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM imports ORDER BY id")]

    def accounts(self) -> list[AccountSummary]:
        rows = self.db.execute(
            "SELECT account, platform, COUNT(*) AS n, MAX(i.finished_at) AS last"
            " FROM posts p LEFT JOIN imports i ON i.id = p.import_id"
            " GROUP BY account, platform ORDER BY account COLLATE NOCASE, platform"
        )
        return [AccountSummary(r["account"], r["platform"], r["n"], r["last"]) for r in rows]

    def resolve_account(self, name: str) -> str:
        """The stored spelling of an account name (case-insensitive, a leading @ ignored)."""
        wanted = name.lstrip("@")
        row = self.db.execute(
            "SELECT account FROM posts WHERE account = ? COLLATE NOCASE LIMIT 1", (wanted,)
        ).fetchone()
        if row is None:
            known = sorted({a.account for a in self.accounts()})
            hint = (
                f"known accounts: {', '.join(known)}"
                if known
                else "the store is empty: run `tweetlm import PATH` first"
            )
            raise NoDataError(f"no posts for account {wanted!r} in {self.path} ({hint})")
        return str(row["account"])

    def iter_posts(self, account: str, platform: str | None = None) -> Iterator[Post]:
        """Posts of one account, oldest first."""
        query = "SELECT * FROM posts WHERE account = ?"
        args: list[Any] = [account]
        if platform is not None:
            query += " AND platform = ?"
            args.append(platform)
        query += " ORDER BY created_at, post_id"
        for row in self.db.execute(query, args):
            yield _row_post(row)

    def count_posts(self, account: str | None = None) -> int:
        if account is None:
            return int(self.db.execute("SELECT COUNT(*) FROM posts").fetchone()[0])
        return int(self.db.execute("SELECT COUNT(*) FROM posts WHERE account = ?", (account,)).fetchone()[0])

    def newest_post(self, platform: str, account: str) -> Post | None:
        row = self.db.execute(
            "SELECT * FROM posts WHERE platform = ? AND account = ? ORDER BY created_at DESC, post_id DESC LIMIT 1",
            (platform, account),
        ).fetchone()
        return _row_post(row) if row else None

    # ---- fetch cursors (online sources) --------------------------------------------------------

    def fetch_state(self, platform: str, account: str) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT state FROM fetch_state WHERE platform = ? AND account = ?", (platform, account)
        ).fetchone()
        return json.loads(row["state"]) if row else {}

    def set_fetch_state(self, platform: str, account: str, state: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO fetch_state (platform, account, state, updated_at) VALUES (?,?,?,?)"
            " ON CONFLICT(platform, account) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (platform, account, json.dumps(state), _now()),
        )

    # ---- curated datasets ----------------------------------------------------------------------

    def save_dataset(
        self,
        account: str,
        rules: dict[str, Any],
        report: dict[str, Any] | Callable[[], dict[str, Any]],
        posts: Iterable[CuratedPost],
        *,
        with_posts: bool = True,
        batch: int = 5000,
    ) -> Dataset | None:
        """Store a curated dataset, streaming its posts in batches; the same content under the same rules
        is stored once. `report` may be a function, called once the posts are consumed (a curation that
        counts as it goes). With no posts nothing is written and None is returned."""
        digest = hashlib.sha256()
        digest.update(json.dumps(rules, sort_keys=True).encode())
        n_posts = 0
        with self.transaction():
            self.db.execute("SAVEPOINT new_dataset")
            cur = self.db.execute(
                "INSERT INTO datasets (account, hash, created_at, rules, report, n_posts) VALUES (?,'',?,?,'{}',0)",
                (account, _now(), json.dumps(rules)),
            )
            dataset_id = int(cur.lastrowid or 0)
            iterator = iter(posts)
            while chunk := list(islice(iterator, batch)):
                rows = []
                for post in chunk:
                    digest.update(b"\x00" + post.text.encode())
                    rows.append((dataset_id, n_posts, post.post_id, post.text, post.created_at))
                    n_posts += 1
                self.db.executemany(
                    "INSERT INTO dataset_posts (dataset_id, position, post_id, text, created_at) VALUES (?,?,?,?,?)",
                    rows,
                )
            content_hash = digest.hexdigest()[:16]
            report_json = json.dumps(report() if callable(report) else report)
            existing = self.db.execute(
                "SELECT id FROM datasets WHERE account = ? AND hash = ?", (account, content_hash)
            ).fetchone()
            if n_posts == 0 or existing is not None:
                self.db.execute("ROLLBACK TO new_dataset")
            self.db.execute("RELEASE new_dataset")
            if n_posts == 0:
                return None
            if existing is None:
                self.db.execute(
                    "UPDATE datasets SET hash = ?, report = ?, n_posts = ? WHERE id = ?",
                    (content_hash, report_json, n_posts, dataset_id),
                )
            else:
                self.db.execute(
                    "UPDATE datasets SET created_at = ?, report = ? WHERE id = ?", (_now(), report_json, existing["id"])
                )
        dataset = self.dataset(account, content_hash, with_posts=with_posts)
        assert dataset is not None
        return dataset

    def dataset(self, account: str, content_hash: str | None = None, *, with_posts: bool = True) -> Dataset | None:
        """A dataset by hash, or the account's latest curated one; `with_posts=False` leaves its posts unread."""
        if content_hash is None:
            row = self.db.execute(
                "SELECT * FROM datasets WHERE account = ? COLLATE NOCASE ORDER BY created_at DESC, id DESC LIMIT 1",
                (account,),
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT * FROM datasets WHERE account = ? COLLATE NOCASE AND hash = ?", (account, content_hash)
            ).fetchone()
        if row is None:
            return None
        posts = (
            tuple(
                CuratedPost(r["post_id"], r["text"], r["created_at"])
                for r in self.db.execute(
                    "SELECT post_id, text, created_at FROM dataset_posts WHERE dataset_id = ? ORDER BY position",
                    (row["id"],),
                )
            )
            if with_posts
            else ()
        )
        return Dataset(
            id=row["id"],
            account=row["account"],
            hash=row["hash"],
            created_at=row["created_at"],
            rules=json.loads(row["rules"]),
            report=json.loads(row["report"]),
            n_posts=row["n_posts"],
            posts=posts,
        )


def _wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. Processes opening a fresh store at once race for it, and SQLite answers the loser's
    switch with "database is locked" at once, without waiting (a lock upgrade its busy handler does not
    cover): that is retried until `lock_timeout()`."""
    deadline = time.monotonic() + lock_timeout()
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def lock_timeout() -> float:
    """Seconds to wait for another process's write to the store: TWEETLM_STORE_TIMEOUT, default 30."""
    try:
        return max(0.0, float(os.environ.get("TWEETLM_STORE_TIMEOUT", "30")))
    except ValueError:
        raise StoreError("TWEETLM_STORE_TIMEOUT must be a number of seconds") from None


def _check_writable(path: Path) -> None:
    """Refuse a store that cannot be written before SQLite opens it, which would leave -wal/-shm files."""
    folder = path.parent
    if path.exists():
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            raise StoreError(
                f"the store {path} cannot be written ({exc.strerror}): make it writable (chmod u+w) "
                "or set TWEETLM_HOME to another folder"
            ) from None
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot write in {folder} (permission denied): the store needs a folder it can write to "
            "(for its journal); fix its permissions or set TWEETLM_HOME to another folder"
        )


def _operational(path: Path, exc: sqlite3.OperationalError) -> StoreError:
    """A one-line error for SQLite's operational failures, saying what to do."""
    if "locked" in str(exc) or "busy" in str(exc):
        holders = _holders(path)
        who = f"held by {holders}" if holders else "held by another process"
        return StoreError(
            f"the store {path} is locked, {who}, for over {lock_timeout():g} s: wait for it to finish "
            "or stop it, then run this again"
        )
    if "readonly" in str(exc) or "unable to open" in str(exc):
        return StoreError(f"cannot write the store {path} ({exc}): fix its permissions or set TWEETLM_HOME")
    return StoreError(f"cannot use the store {path} ({exc})")


def _holders(path: Path, limit: int = 3) -> str:
    """Other processes that have the store open, as `pid 123 (tweetlm import x.csv)` (Linux /proc only)."""
    targets = {str(path.resolve()), f"{path.resolve()}-wal"}
    found: list[str] = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if not any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                continue
            command = " ".join((entry / "cmdline").read_bytes().decode(errors="replace").replace("\x00", " ").split())
        except OSError:
            continue
        found.append(f"pid {entry.name} ({command[:80]})")
        if len(found) == limit:
            break
    return ", ".join(found)


# ---- migrations ------------------------------------------------------------------------------


def m001_initial() -> str:
    return """
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            path TEXT NOT NULL,
            file_hash TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            read INTEGER,
            added INTEGER,
            skipped INTEGER,
            accounts TEXT
        );
        CREATE TABLE posts (
            platform TEXT NOT NULL,
            account TEXT NOT NULL,
            post_id TEXT NOT NULL,
            created_at TEXT,
            text TEXT NOT NULL,
            kind TEXT NOT NULL,
            reply_to TEXT,
            lang TEXT,
            urls TEXT,
            media TEXT,
            likes INTEGER,
            reposts INTEGER,
            raw TEXT,
            import_id INTEGER REFERENCES imports(id),
            PRIMARY KEY (platform, account, post_id)
        );
        CREATE INDEX posts_account ON posts(account COLLATE NOCASE);
        CREATE TABLE fetch_state (
            platform TEXT NOT NULL,
            account TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (platform, account)
        );
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            account TEXT NOT NULL,
            hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            rules TEXT NOT NULL,
            report TEXT NOT NULL,
            n_posts INTEGER NOT NULL,
            UNIQUE (account, hash)
        );
        CREATE TABLE dataset_posts (
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            post_id TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at TEXT,
            PRIMARY KEY (dataset_id, position)
        );
    """


# Each migration returns the SQL (statements separated by ;) that moves the schema one step on. Append only.
MIGRATIONS: list[Callable[[], str]] = [m001_initial]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; returns their names."""
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{exc}: the store is not a tweetlm SQLite file (move it away or set TWEETLM_HOME)") from exc
    applied = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the write lock.
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone() is None:
                for statement in migration().split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, _now()))
                applied.append(name)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return applied
