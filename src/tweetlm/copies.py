"""Detect generated posts that copy a training post: exactly, or through a long shared run of words."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

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
        self.vocabulary: set[str] = set()
        self.by_pair: dict[tuple[str, str], list[int]] = {}  # word pair -> posts that contain it
        for text in texts:
            tokens = words(text)
            for pair in set(pairwise(tokens)):
                self.by_pair.setdefault(pair, []).append(len(self.posts))
            self.vocabulary.update(tokens)
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
        # A shared run of k words puts k-1 of this text's word pairs in that post: count them per post
        # (with repeats), then compare only posts whose count could still beat the best run so far.
        pairs_in: Counter[int] = Counter()
        for pair in pairwise(tokens):
            pairs_in.update(self.by_pair.get(pair, ()))
        best = int(any(t in self.vocabulary for t in tokens))
        for post, count in pairs_in.most_common():
            if count + 1 <= best:
                break
            best = max(best, _longest_common_run(tokens, self.posts[post]))
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
