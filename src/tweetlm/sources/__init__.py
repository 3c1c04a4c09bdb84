"""Sources: each module reads one kind of input and yields `Post` records.

Every file source has the same small signature, `read(path, options) -> Iterator[Post]`, plus a
`detect(path) -> bool` used when `--format` is not given. Sources register themselves by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tweetlm.errors import InputError
from tweetlm.records import Post

# Anything larger than this (a file, or one member of a zip) is refused: no real export is.
DEFAULT_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ReadOptions:
    account: str | None = None  # overrides the account the file names (or supplies one)
    text_column: str | None = None  # CSV: which column holds the text
    platform: str | None = None  # overrides the platform a source would infer
    max_bytes: int = DEFAULT_MAX_BYTES
    encoding: str | None = None  # CSV/text: the file's encoding (None: UTF-8, else detected)


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


def resolve(path: Path, fmt: str | None) -> FileSource:
    """The source for `path`: the one named by `fmt`, else the first whose detector accepts it."""
    sources = registry()
    if fmt is not None:
        try:
            return sources[fmt]
        except KeyError:
            raise InputError(f"unknown format {fmt!r}: choose one of {', '.join(sorted(sources))}") from None
    for source in sources.values():
        if source.detect(path):
            return source
    raise InputError(f"cannot tell what {path} is: pass --format ({', '.join(sorted(sources))})")
