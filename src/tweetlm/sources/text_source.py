"""Plain text: one post a line, streamed. Blank lines are skipped; a post's id is its line number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tweetlm.records import Kind, Post
from tweetlm.sources import ReadOptions, register
from tweetlm.sources.csv_source import text_encoding


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".txt"


@register("text", detect=detect, help="plain text, one post a line (blank lines skipped)")
def read(path: Path, options: ReadOptions) -> Iterator[Post]:
    encoding = text_encoding(path, options.encoding, what="text file")
    account = options.account or path.stem
    platform = options.platform or "text"
    with path.open(encoding=encoding) as fh:
        for number, line in enumerate(fh, 1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            yield Post(
                platform=platform,
                account=account,
                post_id=str(number),
                text=text,
                kind=Kind.RETWEET if text.startswith("RT @") else Kind.ORIGINAL,
            )
