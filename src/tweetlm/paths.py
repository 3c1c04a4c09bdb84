"""Where tweetlm keeps its data: TWEETLM_HOME, or the platform's user data directory."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tweetlm.errors import StoreError


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


def bases_dir() -> Path:
    """Post-style base models trained with `tweetlm train ... --as-base NAME` (created by the first one
    saved, not by looking)."""
    return home() / "bases"


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


def atomic_write(path: Path, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write text (UTF-8), bytes, or what `content(tmp)` writes, through a temporary file beside `path` (with
    its suffix; one per process and thread) and a rename: readers see the old file or the new, never half of
    one, and a failed write leaves nothing behind."""
    tmp = path.with_name(f".{path.stem}-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        if isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
