"""Sources: each module reads one kind of input and yields `Post` records.

Every file source has the same small signature, `read(path, options) -> Iterator[Post]`, plus a
`detect(path) -> bool` used when `--format` is not given. Sources register themselves by name.
"""

from __future__ import annotations

import importlib
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tweetlm.errors import InputError
from tweetlm.records import Post

# Anything larger than this (a file, or one member of a zip) is refused: no real export is.
DEFAULT_MAX_BYTES = 2 * 1024**3
# The longest text one post may have, in characters, in every format (the csv module's default field
# limit; X's longest posts, note tweets, are 25,000 characters).
MAX_POST_CHARS = 131072


@dataclass(frozen=True)
class ReadOptions:
    account: str | None = None  # overrides the account the file names (or supplies one)
    text_column: str | None = None  # CSV: which column holds the text
    platform: str | None = None  # overrides the platform a source would infer
    max_bytes: int = DEFAULT_MAX_BYTES
    encoding: str | None = None  # CSV/text: the file's encoding (None: UTF-8, else detected)
    delimiter: str | None = None  # CSV: the field delimiter (None: sniffed from the header row)


Reader = Callable[[Path, ReadOptions], Iterator[Post]]
Detector = Callable[[Path], bool]


@dataclass(frozen=True)
class FileSource:
    name: str
    read: Reader
    detect: Detector
    help: str


_REGISTRY: dict[str, FileSource] = {}
_MODULES = ("x_archive", "csv_source", "jsonl_source", "text_source")


def register(name: str, *, detect: Detector, help: str) -> Callable[[Reader], Reader]:
    def wrap(read: Reader) -> Reader:
        _REGISTRY[name] = FileSource(name=name, read=read, detect=detect, help=help)
        return read

    return wrap


def registry() -> dict[str, FileSource]:
    for module in _MODULES:
        importlib.import_module(f"tweetlm.sources.{module}")
    return dict(_REGISTRY)


def check_path(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse what no source can read with bounded time and memory: a missing path, anything that is
    not a regular file or a folder (a device such as /dev/zero, a FIFO, a socket), an unreadable file,
    or a file over `max_bytes` (a zip's members are checked one by one as they are read)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: give the path of an X archive, CSV, JSONL or text file") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}): check its permissions") from None
    if stat.S_ISDIR(mode):
        return
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise InputError(f"{path} is {kind}, not a regular file: save the posts to a file and import that")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror}): check its permissions") from None
    if path.suffix.lower() != ".zip" and (size := path.stat().st_size) > max_bytes:
        raise InputError(
            f"{path} is {size:,} bytes, over the limit of {max_bytes:,}: raise --max-size (MB) if it really is "
            "a file of posts"
        )


def too_long(where: str, chars: int | None = None) -> InputError:
    """The error for a post longer than MAX_POST_CHARS; `where` says where it is (path and line)."""
    size = f"{chars:,} characters" if chars is not None else f"over {MAX_POST_CHARS:,} characters"
    return InputError(
        f"{where}: a post of {size}, more than the {MAX_POST_CHARS:,} one post may have: "
        "is this really a file of posts?"
    )


def resolve(path: Path, fmt: str | None) -> FileSource:
    """The source for `path`: the one named by `fmt`, else the first whose detector accepts it."""
    sources = registry()
    if fmt is not None:
        if fmt not in sources:
            raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(sorted(sources))}")
        if path.is_dir() and fmt != "x-archive":
            raise InputError(f"{path} is a folder: --format {fmt} reads a file (only an X archive can be a folder)")
        return sources[fmt]
    for source in sources.values():
        if source.detect(path):
            return source
    raise InputError(f"cannot tell what {path} is: pass --format ({', '.join(sorted(sources))})")
