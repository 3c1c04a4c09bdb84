"""Shared fixtures: every test gets its own TWEETLM_HOME, and paths to the real shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWEETLM_SHARED", REPO.parent / "shared"))
ARCHIVE_SAMPLE = SHARED / "data" / "x-archive-sample"
OBAMA_CSV = SHARED / "data" / "fivethirtyeight" / "BarackObama.csv"


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
