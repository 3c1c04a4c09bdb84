"""Curation: named, individually switchable rules that turn stored posts into training text.

Filters drop posts (and count what they dropped, with examples); cleaners rewrite text. The order is
fixed: post-level filters (retweets, replies, quotes, automated posts), then cleaning (entities,
mojibake, links and what they leave behind, a manual retweet's quoted part), then text-level filters
(language, empty, unrepairable mojibake, short, duplicates). The result is stored as a versioned
dataset (content hash).
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tweetlm import langid
from tweetlm.errors import InputError, NoDataError
from tweetlm.records import Kind, Post
from tweetlm.store import CuratedPost, Dataset, Store

URL_RE = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/|\bt\.co/)\S*", re.IGNORECASE)
MENTION_RE = re.compile(r"^@\w+")
LEADING_MENTIONS_RE = re.compile(r"^(?:\.?@\w+[\s,:]*)+")
# A manual retweet or quote inside a post: the person's comment comes first, the quoted words after
# "RT @x" / "MT @x"; or the credit "via @x" closes a shared link's title. (At the very start, RT is a
# retweet: the retweet rule's.)
QUOTED_RE = re.compile(r"\s[\"“]?(?:RT|MT|R/T)\b:?\s*@\w+.*$", re.DOTALL)
VIA_RE = re.compile(
    r"\s*(?:\((?:[^()]*\s)?via:?\s+@\w+[^()]*\)|\[(?:[^\[\]]*\s)?via:?\s+@\w+[^\[\]]*\]|\bvia:?(?:\s+@\w+[,&]?)+)\s*$",
    re.IGNORECASE,
)
STARTS_QUOTED_RE = re.compile(r"^[\"“]?(?:RT|MT)\b:?\s*@\w+")
# What a removed link leaves at the end of a post: a call to follow it, a credit, a dangling mark.
LEFTOVER_RE = re.compile(
    r"(?:^|(?<=[\s.!?…)\]\"”']))(?:"
    r"(?:read|learn|find out) more|more info|full story|via|(?:watch|listen|tune in) live"  # the words alone
    r"|(?:(?:read|watch|listen|see|click|tap|more|sign up|details?|video|photos?|pics?|link|story|source|"
    r"cc|ht|h/t)(?: here| now| more| it| this| live)?\s*:)"  # or followed by a colon
    r")\s*[:.]*\s*$"
    r"|\s*(?:[:\-–—|»>→⇒=]+|\(\s*\)|\[\s*\])\s*$",
    re.IGNORECASE,
)
TRAILING_TAGS_RE = re.compile(r"(?:\s+[#@]\w+)+\s*$")
# Text that repair_text leaves as it is: printable ASCII, tabs and newlines, no entity. Most posts are
# such text, and ftfy costs more than all the other rules together; this check skips it for them.
PLAIN_RE = re.compile(r"[\x20-\x25\x27-\x7e\t\n]*")

# Apps that post in the person's name without the person writing the text: lowercase names as the
# source field spells them (matched as words), with the reason. Apps a person types into (the web,
# Android, iPhone and iPad apps, TweetDeck, Buffer, Hootsuite, Hypefury, share buttons: "Twitter for
# Websites") are not here and stay in.
AUTOMATED_APPS = {
    "ifttt": "applets re-post from other services (feeds, likes, other networks)",
    "instagram": 'photo cross-posts: a caption or "Just posted a photo"',
    "foursquare": 'check-ins: "I\'m at PLACE in CITY"',
    "swarm": "Foursquare's check-in app",
    "paper.li": 'automated newspapers: "The X Daily is out!"',
    "pearltrees": "bookmarked page titles",
    "tumblr": 'cross-posts of blog entries ("Photo:", their titles)',
    "dlvr.it": "RSS feeds posted as they update",
    "twitterfeed": "RSS feeds posted as they update",
    "twittbot.net": "a bot that posts canned lines on a schedule",
    "wordpress": "blog posts announced by the blog",
    "plusist": "Google+ posts cross-posted, cut at 140 characters",
    "tweetmeme": "retweet buttons: a page title",
    "quora": "notices of answers and questions, written by the app",
    "forbes social": '"My comment on ..." notices',
    "credly": "badge notices",
    "youtube": '"I liked a @YouTube video" notices',
    "twifficiency": "posts its own advertisement",
    "twittaquitta": "posts its own advertisement",
}
AUTOMATED_APPS_RE = re.compile(r"\b(?:" + "|".join(map(re.escape, AUTOMATED_APPS)) + r")\b", re.IGNORECASE)
# What those apps write, for sources that do not name the app (CSV, text, JSONL).
AUTOMATED_TEXT_RE = re.compile(
    r"^Just posted a (?:photo|video)\b"
    r"|^I'?m at .+(?:\b(?:4sq\.com|swarmapp\.com)/|\sin\s.+\shttps?://\S+\s*$)"
    r"|^I (?:liked|uploaded|added|favorited) a @?YouTube video\b|^I added a video to a @?YouTube playlist\b"
    r"|\bis out!\s+https?://\S+"
    r"|^Listening to .+ on @\w+:?\s*https?://\S+\s*$"
    r"|^My Twifficiency score is\b",
    re.IGNORECASE,
)
SOURCE_TAG_RE = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class CurateConfig:
    """Which rules run. Each field is one rule's switch or setting."""

    drop_retweets: bool = field(default=True, metadata={"help": "drop reposts (RT @user: ...)"})
    drop_replies: bool = field(default=False, metadata={"help": "drop replies to other accounts"})
    drop_quotes: bool = field(default=False, metadata={"help": "drop quote posts"})
    drop_automated: bool = field(default=True, metadata={"help": "drop posts written by apps (IFTTT, Instagram, ...)"})
    cut_quoted: bool = field(
        default=True, metadata={"help": "cut a manual retweet's quoted part (RT @x: ...) and a closing via @x"}
    )
    lang: str | None = field(default=None, metadata={"help": "keep only posts in this language (e.g. en)"})
    fix_text: bool = field(default=True, metadata={"help": "unescape HTML entities and repair mojibake"})
    remove_urls: bool = field(default=True, metadata={"help": "remove links and picture links"})
    strip_leftovers: bool = field(
        default=True, metadata={"help": "strip what a removed link leaves at the end (Read more:, via, a colon)"}
    )
    strip_mentions: bool = field(default=False, metadata={"help": "strip leading @mentions"})
    keep_newlines: bool = field(default=False, metadata={"help": "keep line breaks (default: spaces)"})
    min_words: int = field(
        default=3,
        metadata={
            "help": "drop posts shorter than this: words, not counting @, # and links; in scripts written "
            "without spaces (Chinese, Japanese, Thai, Lao, Khmer, Myanmar) each letter counts as one"
        },
    )
    count_by_script: bool = field(
        default=True, metadata={"help": "count letters of scripts without spaces (off: whitespace words only)"}
    )
    drop_garbled: bool = field(default=True, metadata={"help": "drop posts with mojibake that cannot be repaired"})
    drop_duplicates: bool = field(default=True, metadata={"help": "drop exact duplicates"})

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {self.min_words}")
        if self.lang is not None:
            object.__setattr__(self, "lang", langid.check(self.lang))

    def without(self, rules: Iterable[str]) -> CurateConfig:
        """This config with the named rules switched off (names as in `SWITCHES`)."""
        changes: dict[str, Any] = {}
        for name in rules:
            key = name.strip().lower()
            if key not in SWITCHES:
                raise InputError(f"unknown rule {name!r}: choose from {', '.join(SWITCHES)}")
            changes[SWITCHES[key][0]] = SWITCHES[key][1]
        return replace(self, **changes)


# The rules `--off` switches off by name: the field and its "off" value.
SWITCHES: dict[str, tuple[str, Any]] = {
    "retweets": ("drop_retweets", False),
    "automated": ("drop_automated", False),
    "quoted": ("cut_quoted", False),
    "language": ("lang", None),
    "fix-text": ("fix_text", False),
    "urls": ("remove_urls", False),
    "leftovers": ("strip_leftovers", False),
    "garbled": ("drop_garbled", False),
    "short": ("min_words", 0),
    "by-script": ("count_by_script", False),
    "duplicates": ("drop_duplicates", False),
}


# Report rows, in the order of the model card's table.
RULES = ("retweets", "replies", "quotes", "automated", "language", "empty", "garbled", "short", "duplicates")
# How the CLI, the HTML report and the web app name each row of the curation report.
REPORT_LABELS = {
    "downloaded": "posts downloaded",
    "retweets": "retweets",
    "replies": "replies",
    "quotes": "quote posts",
    "automated": "written by apps",
    "language": "other languages",
    "short": "short / boring",
    "empty": "empty after cleaning",
    "garbled": "unrepairable mojibake",
    "duplicates": "duplicates",
    "kept": "kept for training",
}


@dataclass
class CurationReport:
    downloaded: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in RULES})
    kept: int = 0
    languages: dict[str, int] = field(default_factory=dict)  # of the kept posts ("?": unknown)

    def drop(self, rule: str, text: str, keep_examples: int) -> None:
        self.dropped[rule] += 1
        if len(self.examples[rule]) < keep_examples:
            self.examples[rule].append(text)

    def rows(self) -> list[tuple[str, int]]:
        return [("downloaded", self.downloaded)] + [(r, n) for r, n in self.dropped.items()] + [("kept", self.kept)]

    def language_mix(self, top: int = 3) -> str:
        """The kept posts' languages, most common first: "en 62%, de 35%, ? 3%"."""
        total = sum(self.languages.values())
        ranked = sorted(self.languages.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return ", ".join(f"{lang} {100 * n / total:.0f}%" for lang, n in ranked) if total else "-"

    def is_mixed(self, threshold: float = 0.2) -> bool:
        """Whether a second known language holds at least `threshold` of the kept posts."""
        known = sorted((n for lang, n in self.languages.items() if lang != "?"), reverse=True)
        return len(known) > 1 and known[1] >= threshold * sum(self.languages.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "downloaded": self.downloaded,
            "dropped": self.dropped,
            "kept": self.kept,
            "examples": self.examples,
            "languages": self.languages,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurationReport:
        report = cls(downloaded=data["downloaded"], kept=data["kept"], languages=dict(data.get("languages", {})))
        report.dropped.update(data["dropped"])
        report.examples.update(data.get("examples", {}))
        return report


def mixed_languages(dataset: Dataset) -> str | None:
    """A warning when a dataset's kept posts mix languages (a second one holds 20% or more), naming --lang."""
    if dataset.rules.get("lang"):
        return None
    report = CurationReport.from_dict(dataset.report)
    if not report.is_mixed():
        return None
    top = max((kv for kv in report.languages.items() if kv[0] != "?"), key=lambda kv: kv[1])[0]
    return (
        f"@{dataset.account}'s curated posts mix languages ({report.language_mix()}): one model then learns "
        f"several voices; to train on one, run `tweetlm curate {dataset.account} --lang {top}` first"
    )


def _unescape(text: str) -> str:
    # Until nothing changes: "&amp;lt;" is "<" published twice-escaped.
    while (unescaped := html.unescape(text)) != text:
        text = unescaped
    return text


def repair_text(text: str) -> str:
    """Unescape every HTML entity and repair mojibake."""
    return text if PLAIN_RE.fullmatch(text) else _repair(text)


def _repair(text: str) -> str:
    from tweetlm.mojibake import repair  # ftfy: imported when a post needs it

    return _unescape(repair(text))


def undecided(text: str) -> int:
    """Sequences of `text` that read as mojibake of more than one character (see tweetlm.mojibake)."""
    if PLAIN_RE.fullmatch(text):
        return 0
    from tweetlm.mojibake import undecided as count

    return count(text)


def collapse_whitespace(text: str, keep_newlines: bool) -> str:
    if keep_newlines:
        lines = (" ".join(line.split()) for line in text.splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return " ".join(text.split())


def cut_quoted(text: str) -> str:
    """The person's own part of a post that quotes someone: before "RT @x", without a closing "via @x"."""
    return VIA_RE.sub("", QUOTED_RE.sub("", text)).rstrip()


def strip_leftovers(text: str) -> str:
    """Without what a removed link leaves at its end ("Read more:", "Watch:", "via", a colon, a dash),
    keeping hashtags and mentions that close the post."""
    tags = TRAILING_TAGS_RE.search(text)
    body, tail = (text[: tags.start()], tags.group(0)) if tags else (text, "")
    while (stripped := LEFTOVER_RE.sub("", body).rstrip()) != body:
        body = stripped
    return (body + tail).strip() if body else tail.strip()


def clean_text(text: str, config: CurateConfig) -> str:
    """Apply the text rules; repeated until stable, so no rule can undo another's work."""
    had_link = config.remove_urls and config.strip_leftovers and URL_RE.search(text) is not None
    while True:
        before = text
        if config.fix_text:
            text = repair_text(text)
        if config.cut_quoted:
            text = cut_quoted(text)
        if config.remove_urls:
            text = URL_RE.sub(" ", text)
        if config.strip_mentions:
            text = LEADING_MENTIONS_RE.sub("", text.lstrip())
        text = collapse_whitespace(text, config.keep_newlines)
        if had_link:
            text = strip_leftovers(text)
        if text == before:
            return text


# Scripts written without spaces between words: Han, kana, Thai, Lao, Khmer, Myanmar.
UNSPACED = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9D),  # halfwidth Katakana
    (0x20000, 0x3134F),  # CJK extensions B-G
)


UNSPACED_RE = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in UNSPACED) + "]")


def _unspaced_letters(word: str) -> int:
    return sum(1 for c in UNSPACED_RE.findall(word) if unicodedata.category(c).startswith("L"))


def word_count(text: str, by_script: bool = True) -> int:
    """Words that are not mentions, hashtags or links; with `by_script`, a word written in a script
    without spaces counts its letters (not digits, marks or punctuation): "57点" is 1, "ありがとう" 5."""
    total = 0
    for word in text.split():
        if word.startswith(("@", "#")) or URL_RE.match(word):
            continue
        if word.isascii():  # no letters of an unspaced script: one word
            total += 1
            continue
        letters = _unspaced_letters(word) if by_script else 0
        total += letters + (not letters or any(c.isalpha() for c in UNSPACED_RE.sub("", word)))
    return total


def is_retweet(post: Post) -> bool:
    return post.kind is Kind.RETWEET or STARTS_QUOTED_RE.match(post.text) is not None


def source_app(post: Post) -> str | None:
    """The app that posted it, where the platform says: X's `source` field, Mastodon's `application`."""
    raw = post.raw or {}
    source = raw.get("source")
    if isinstance(source, str) and source.strip():
        return SOURCE_TAG_RE.sub("", source).strip() or None
    app = raw.get("application")
    if isinstance(app, dict) and isinstance(app.get("name"), str):
        return str(app["name"])
    return None


def automated(post: Post) -> str | None:
    """Why `post` was written by an app, not the person ("IFTTT", "text pattern"), or None."""
    app = source_app(post)
    if app and AUTOMATED_APPS_RE.search(app):
        return app
    if AUTOMATED_TEXT_RE.search(post.text):
        return app or "text pattern"
    return None


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
        if config.drop_automated and (app := automated(post)):
            shown = any(e.startswith(f"[{app}] ") for e in report.examples["automated"])
            report.drop("automated", f"[{app}] {post.text}", 0 if shown else examples)  # one example an app
            continue
        text = clean_text(post.text, config)
        if config.drop_retweets and config.cut_quoted and not word_count(text) and QUOTED_RE.search(post.text):
            report.drop("retweets", post.text, examples)  # a manual retweet with nothing of the person's own
            continue
        if not text:
            report.drop("empty", post.text, examples)
            continue
        lang = langid.language(post.lang, text)
        if config.lang and lang and lang != config.lang:
            report.drop("language", text, examples)
            continue
        if config.drop_garbled and config.fix_text and undecided(post.text):
            report.drop("garbled", text, examples)
            continue
        if word_count(text, config.count_by_script) < config.min_words:
            report.drop("short", text, examples)
            continue
        if config.drop_duplicates:
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if key in seen:
                report.drop("duplicates", text, examples)
                continue
            seen.add(key)
        report.kept += 1
        report.languages[lang or "?"] = report.languages.get(lang or "?", 0) + 1
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
