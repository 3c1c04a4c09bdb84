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
