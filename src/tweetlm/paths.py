"""Where tweetlm keeps its data: TWEETLM_HOME, or the platform's user data directory."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory (created on first use)."""
    env = os.environ.get("TWEETLM_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("tweetlm", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_path() -> Path:
    return home() / "tweetlm.sqlite"


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Derived files that can be rebuilt (the dequantized base model): TWEETLM_CACHE or the user cache."""
    env = os.environ.get("TWEETLM_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("tweetlm", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path
