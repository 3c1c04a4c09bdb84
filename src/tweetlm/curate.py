"""Curation: named, individually switchable rules that turn stored posts into training text.

Filters drop posts (and count what they dropped, with examples); cleaners rewrite text. The order is
fixed: post-level filters (retweets, replies, language), then cleaning, then text-level filters
(boring, empty, duplicates). The result is stored as a versioned dataset (content hash).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from tweetlm.errors import NoDataError
from tweetlm.records import Kind, Post
from tweetlm.store import CuratedPost, Dataset, Store

URL_RE = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/|\bt\.co/)\S*", re.IGNORECASE)
MENTION_RE = re.compile(r"^@\w+")
LEADING_MENTIONS_RE = re.compile(r"^(?:\.?@\w+[\s,:]*)+")
# Mojibake the FiveThirtyEight tweet collections carry: UTF-8 read as Windows-1252, written as
# Mac Roman (twice). One layer is peeled off here; ftfy repairs the rest.
MAC_ROMAN_LAYER_RE = re.compile(r"‰[^\x00-\x7f]+[\x20-\x7e]?")
# Sequences whose last byte was lost on the way, so ftfy cannot know them; unambiguous in context.
LOSSY_MOJIBAKE = {"â€_": "…", "â€˘": "\u201d"}
# Text that repair_text leaves as it is: printable ASCII, tabs and newlines, no entity. Most posts are
# such text, and ftfy costs more than all the other rules together; this check skips it for them.
PLAIN_RE = re.compile(r"[\x20-\x25\x27-\x7e\t\n]*")


@dataclass(frozen=True)
class CurateConfig:
    """Which rules run. Each field is one rule's switch or setting."""

    drop_retweets: bool = field(default=True, metadata={"help": "drop reposts (RT @user: ...)"})
    drop_replies: bool = field(default=False, metadata={"help": "drop replies to other accounts"})
    drop_quotes: bool = field(default=False, metadata={"help": "drop quote posts"})
    lang: str | None = field(default=None, metadata={"help": "keep only posts in this language (e.g. en)"})
    fix_text: bool = field(default=True, metadata={"help": "unescape HTML entities and repair mojibake"})
    remove_urls: bool = field(default=True, metadata={"help": "remove links and picture links"})
    strip_mentions: bool = field(default=False, metadata={"help": "strip leading @mentions"})
    keep_newlines: bool = field(default=False, metadata={"help": "keep line breaks (default: spaces)"})
    min_words: int = field(default=3, metadata={"help": "drop posts with fewer words (not counting @, #, links)"})
    drop_duplicates: bool = field(default=True, metadata={"help": "drop exact duplicates"})

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {self.min_words}")


# Report rows, in the order of the model card's table.
RULES = ("retweets", "replies", "quotes", "language", "short", "empty", "duplicates")
# How the CLI, the HTML report and the web app name each row of the curation report.
REPORT_LABELS = {
    "downloaded": "posts downloaded",
    "retweets": "retweets",
    "replies": "replies",
    "quotes": "quote posts",
    "language": "other languages",
    "short": "short / boring",
    "empty": "empty after cleaning",
    "duplicates": "duplicates",
    "kept": "kept for training",
}


@dataclass
class CurationReport:
    downloaded: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in RULES})
    kept: int = 0

    def drop(self, rule: str, text: str, keep_examples: int) -> None:
        self.dropped[rule] += 1
        if len(self.examples[rule]) < keep_examples:
            self.examples[rule].append(text)

    def rows(self) -> list[tuple[str, int]]:
        return [("downloaded", self.downloaded)] + [(r, n) for r, n in self.dropped.items()] + [("kept", self.kept)]

    def to_dict(self) -> dict[str, Any]:
        return {"downloaded": self.downloaded, "dropped": self.dropped, "kept": self.kept, "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurationReport:
        report = cls(downloaded=data["downloaded"], kept=data["kept"])
        report.dropped.update(data["dropped"])
        report.examples.update(data.get("examples", {}))
        return report


def _unescape(text: str) -> str:
    # Until nothing changes: "&amp;lt;" is "<" published twice-escaped.
    while (unescaped := html.unescape(text)) != text:
        text = unescaped
    return text


def _peel_mac_roman(match: re.Match[str]) -> str:
    chunk = match.group(0)
    try:
        return chunk.encode("cp1252").decode("mac_roman")
    except UnicodeError:
        return chunk


def repair_text(text: str) -> str:
    """Unescape every HTML entity and repair mojibake."""
    return text if PLAIN_RE.fullmatch(text) else _repair(text)


def _repair(text: str) -> str:
    import ftfy

    text = MAC_ROMAN_LAYER_RE.sub(_peel_mac_roman, text)
    for broken, fixed in LOSSY_MOJIBAKE.items():
        text = text.replace(broken, fixed)
    text = ftfy.fix_text(text, unescape_html=True)
    return _unescape(text)


def collapse_whitespace(text: str, keep_newlines: bool) -> str:
    if keep_newlines:
        lines = (" ".join(line.split()) for line in text.splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join(text.split())


def clean_text(text: str, config: CurateConfig) -> str:
    """Apply the text rules; repeated until stable, so no rule can undo another's work."""
    while True:
        before = text
        if config.fix_text:
            text = repair_text(text)
        if config.remove_urls:
            text = URL_RE.sub(" ", text)
        if config.strip_mentions:
            text = LEADING_MENTIONS_RE.sub("", text.lstrip())
        text = collapse_whitespace(text, config.keep_newlines)
        if text == before:
            return text


def word_count(text: str) -> int:
    """Words that are not mentions, hashtags or links."""
    return sum(1 for w in text.split() if not (w.startswith(("@", "#")) or URL_RE.match(w)))


def is_retweet(post: Post) -> bool:
    return post.kind is Kind.RETWEET or post.text.startswith("RT @")


@dataclass(frozen=True)
class CurationResult:
    posts: list[CuratedPost]
    report: CurationReport
    config: CurateConfig


def iter_curated(
    posts: Iterable[Post], config: CurateConfig, report: CurationReport, examples: int = 3
) -> Iterator[CuratedPost]:
    """Yield the posts that the rules keep, counting what each rule drops in `report` as it goes.

    Streams: memory holds one post at a time and, for the duplicate rule, a 16-byte digest per kept post.
    """
    seen: set[bytes] = set()
    for post in posts:
        report.downloaded += 1
        if config.drop_retweets and is_retweet(post):
            report.drop("retweets", post.text, examples)
            continue
        if config.drop_replies and post.kind is Kind.REPLY and post.reply_to != post.account:
            report.drop("replies", post.text, examples)
            continue
        if config.drop_quotes and post.kind is Kind.QUOTE:
            report.drop("quotes", post.text, examples)
            continue
        if config.lang and post.lang and post.lang != config.lang:
            report.drop("language", post.text, examples)
            continue
        text = clean_text(post.text, config)
        if not text:
            report.drop("empty", post.text, examples)
            continue
        if word_count(text) < config.min_words:
            report.drop("short", text, examples)
            continue
        if config.drop_duplicates:
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if key in seen:
                report.drop("duplicates", text, examples)
                continue
            seen.add(key)
        report.kept += 1
        yield CuratedPost(post.post_id, text, post.created_at.isoformat() if post.created_at else None)


def curate_posts(posts: Iterable[Post], config: CurateConfig, examples: int = 3) -> CurationResult:
    report = CurationReport()
    kept = list(iter_curated(posts, config, report, examples))
    return CurationResult(kept, report, config)


def curate_account(
    store: Store, account: str, config: CurateConfig, examples: int = 3, *, with_posts: bool = True
) -> tuple[Dataset, CurationReport]:
    """Curate one account's stored posts and save the result as a versioned dataset.

    The posts stream from the store through the rules into the new dataset, in one transaction;
    `with_posts=False` returns the dataset without loading its posts (its `n_posts` says how many).
    """
    account = store.resolve_account(account)
    report = CurationReport()
    kept = iter_curated(store.iter_posts(account), config, report, examples)
    dataset = store.save_dataset(account, asdict(config), report.to_dict, kept, with_posts=with_posts)
    if dataset is None:
        culprit = max(report.dropped.items(), key=lambda kv: kv[1])
        raise NoDataError(
            f"nothing left of {account}'s {report.downloaded} posts after curation: "
            f"rule '{culprit[0]}' removed {culprit[1]} (switch it off or lower its threshold)"
        )
    return dataset, report


def account_texts(store: Store, account: str) -> list[str]:
    """An account's curated posts: its latest curated dataset, else its posts curated with the default
    rules (in memory; nothing is saved)."""
    dataset = store.dataset(account)
    if dataset is not None:
        return dataset.texts
    return [p.text for p in curate_posts(store.iter_posts(account), CurateConfig()).posts]
