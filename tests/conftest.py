"""Shared fixtures and helpers: every test gets its own TWEETLM_HOME; paths to the real shared data (tests
that need it skip without it, and fail in CI); accounts in the store, tiny models and configs; the
Bluesky replay server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from werkzeug import Request, Response

from tweetlm.curate import CurateConfig, curate_account
from tweetlm.records import Post
from tweetlm.store import Store
from tweetlm.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWEETLM_SHARED", REPO.parent / "shared"))
ARCHIVE_SAMPLE = SHARED / "data" / "x-archive-sample"
OBAMA_CSV = SHARED / "data" / "fivethirtyeight" / "BarackObama.csv"


def _shared_missing() -> str | None:
    """Why the real shared data cannot be used, or None when it is there."""
    for path in (ARCHIVE_SAMPLE / "data" / "tweets.js", OBAMA_CSV):
        if not path.is_file():
            return f"needs the shared test data: {path} is missing (set TWEETLM_SHARED to the shared folder)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `shared` read ../shared: without it they skip, saying why; in CI (CI set) they fail.
    A hook, not a fixture: it runs before any fixture builds from the data."""
    missing = _shared_missing() if item.get_closest_marker("shared") else None
    if missing and os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must run with it")
    if missing:
        pytest.skip(missing)


@pytest.fixture(autouse=True)
def tweetlm_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("tweetlm_home")
    monkeypatch.setenv("TWEETLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


def sample_posts(n: int = 120) -> list[str]:
    """Real curated-looking text: the bundled sample's lines (FiveThirtyEight, CC BY 4.0), deterministic."""
    import csv
    import io
    from importlib import resources

    raw = resources.files("tweetlm").joinpath("data", "BarackObama-sample.csv").read_bytes().decode("mac_roman")
    texts = [row["text"] for row in csv.DictReader(io.StringIO(raw, newline="")) if not row["text"].startswith("RT @")]
    return texts[:n]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a BPE tokenizer trained on sample posts: use it as --base-model."""
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", sample_posts(400))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "gpt2", sample_posts(400), family="gpt2")


# ---- accounts and configs ----------------------------------------------------------------------


def tweetlm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "tweetlm", *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def store_digest() -> str:
    """A digest of everything in the store, to prove a failed command changed nothing."""
    with Store() as store:
        rows = [
            list(map(tuple, store.db.execute(f"SELECT * FROM {table} ORDER BY 1")))
            for table in ("posts", "imports", "datasets", "dataset_posts")
        ]
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def add_account(account: str, texts: list[str]) -> None:
    with Store() as store, store.transaction():
        store.add_posts(
            Post(
                platform="x",
                account=account,
                post_id=str(i),
                text=t,
                created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
            )
            for i, t in enumerate(texts)
        )
        curate_account(store, account, CurateConfig())


def tiny_config(tiny_model: Path, **kw: object) -> TrainConfig:
    defaults: dict[str, object] = {
        "accounts": ("obama",),
        "base_model": str(tiny_model),
        "epochs": 2,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "max_length": 64,
        "precision": "fp32",
        "report_to": "none",
        "max_minutes": None,  # no time budget: a test's schedule must not depend on the machine's speed
    }
    defaults.update(kw)
    return TrainConfig(**defaults)  # type: ignore[arg-type]


# Quick trials: one epoch of at most 2 steps, a little data, a search space small enough to vary.
SPACE_TOML = """
epochs = 1
grad_accum = [1]
warmup = [0.0, 0.1]
scheduler = ["constant", "cosine"]
learning_rate = { low = 1e-4, high = 3e-3, log = true }
"""


def two_accounts() -> None:
    texts = sample_posts(240)
    add_account("alice", texts[:60])
    add_account("bob", texts[60:120])


# ---- the Bluesky AppView, replayed from tests/recordings/bluesky --------------------------------

RECORDINGS = Path(__file__).parent / "recordings" / "bluesky"
FEED = "/xrpc/app.bsky.feed.getAuthorFeed"
HANDLE = "ada.example.social"
DID = "did:plc:a3dvk2zq6x4mbc7nelwqyi5h"
CURSOR_2 = "2024-05-11T21:15:42.5Z"
CURSOR_3 = "2024-05-09T08:00:00.000Z"


def as_json(name: str, status: int = 200) -> Response:
    body = (RECORDINGS / f"{name}.json").read_text(encoding="utf-8")
    return Response(body, status=status, content_type="application/json")


@dataclass
class Replay:
    newer: bool = False
    cut_at: str | None = None  # the cursor whose page the server breaks off
    ignore_filter: bool = False

    def feed(self, request: Request) -> Response:
        args = request.args
        if args.get("actor") not in (HANDLE, DID):
            return as_json("profile_not_found", 400)
        cursor = args.get("cursor")
        if cursor is not None and cursor == self.cut_at:
            broken = Response('{"feed": [', content_type="application/json")
            broken.headers["Content-Length"] = "4096"
            return broken
        if self.ignore_filter or args.get("filter") == "posts_with_replies":
            return as_json("feed_with_replies")
        if cursor == CURSOR_2:
            return as_json("feed_page2")
        if cursor == CURSOR_3:
            return as_json("feed_page3")
        return as_json("feed_newer" if self.newer else "feed_page1")
