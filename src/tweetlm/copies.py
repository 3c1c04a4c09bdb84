"""Detect generated posts that copy a training post: exactly, or through a long shared run of words."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_RUN = 8  # words: a shared run this long counts as a copy
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text) if w[0].isalnum() or w[0] == "_"]


def normalize(text: str) -> str:
    return " ".join(words(text))


class CopyIndex:
    """An index of training posts: exact texts and every run of `n` words."""

    def __init__(self, texts: Iterable[str], n: int = DEFAULT_RUN) -> None:
        self.n = n
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        self.posts: list[list[str]] = []
        for text in texts:
            tokens = words(text)
            self.posts.append(tokens)
            self.exact.add(" ".join(tokens))
            self.grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    def is_exact(self, text: str) -> bool:
        return normalize(text) in self.exact

    def shares_run(self, text: str) -> bool:
        tokens = words(text)
        return any(tuple(tokens[i : i + self.n]) in self.grams for i in range(len(tokens) - self.n + 1))

    def is_copy(self, text: str) -> bool:
        return self.is_exact(text) or self.shares_run(text)

    def longest_run(self, text: str) -> int:
        """Length in words of the longest run shared with any one training post."""
        tokens = words(text)
        best = 0
        for post in self.posts:
            best = max(best, _longest_common_run(tokens, post))
        return best


def _longest_common_run(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    best = 0
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best
