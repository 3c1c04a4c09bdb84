"""Plain text: one post a line, streamed. Blank lines are skipped; a post's id is its line number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tweetlm.errors import NoDataError
from tweetlm.records import Kind, Post
from tweetlm.sources import MAX_POST_CHARS, ReadOptions, register, too_long
from tweetlm.sources.csv_source import text_encoding


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".txt"


@register("text", detect=detect, help="plain text, one post a line (blank lines skipped)")
def read(path: Path, options: ReadOptions) -> Iterator[Post]:
    encoding = text_encoding(path, options.encoding, what="text file")
    account = options.account or path.stem
    platform = options.platform or "text"
    number = posts = 0
    with path.open(encoding=encoding) as fh:
        # Lines are read with a cap, so one endless line costs no more memory than the longest post.
        while line := fh.readline(MAX_POST_CHARS + 2):
            number += 1
            text = line.rstrip("\n")
            if len(text) > MAX_POST_CHARS:
                raise too_long(f"{path} line {number}")
            if not text.strip():
                continue
            posts += 1
            yield Post(
                platform=platform,
                account=account,
                post_id=str(number),
                text=text,
                kind=Kind.RETWEET if text.startswith("RT @") else Kind.ORIGINAL,
            )
    if not posts:
        what = "is empty" if number == 0 else f"has {number} lines, all blank"
        raise NoDataError(f"{path} {what}: no posts (a text file holds one post a line)")
