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
    _make_dir(path, "TWEETLM_HOME" if env else "the data folder")
    return path


def _make_dir(path: Path, what: str) -> None:
    from tweetlm.errors import StoreError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"{what} {path} is a file, not a folder: point TWEETLM_HOME at a folder") from None
    except OSError as exc:
        raise StoreError(
            f"cannot create {what} {path} ({exc.strerror}): point TWEETLM_HOME at a folder you can write to"
        ) from None


def store_path() -> Path:
    return home() / "tweetlm.sqlite"


def runs_dir() -> Path:
    """Where finished runs live (created by the first run that finishes, not by looking)."""
    return home() / "runs"


def cache_dir() -> Path:
    """Derived files that can be rebuilt (the dequantized base model): TWEETLM_CACHE or the user cache."""
    env = os.environ.get("TWEETLM_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("tweetlm", appauthor=False))
    _make_dir(path, "TWEETLM_CACHE" if env else "the cache folder")
    return path
