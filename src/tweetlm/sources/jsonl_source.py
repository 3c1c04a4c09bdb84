"""JSON Lines: one JSON object a line, streamed.

A line can be:
- a twarc2 / X API v2 response page, `{"data": [tweets], "includes": {"users": [...]}, "meta": ...}`;
- a twarc2 flattened tweet: one v2 tweet with `author` (and friends) inlined;
- a v1.1 tweet (`id_str`, `full_text`/`text`, `entities`, `user`), or an archive entry `{"tweet": {...}}`;
- any object with a text field (`text`, `full_text`, `content`, `tweet`) and optional id, date and
  account fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tweetlm.errors import NoDataError, SourceFormatError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources import MAX_POST_CHARS, ReadOptions, register, too_long
from tweetlm.sources.csv_source import (
    DATE_COLUMNS,
    ID_COLUMNS,
    LANG_COLUMNS,
    TEXT_COLUMNS,
    parse_count,
    parse_datetime,
    row_hash,
)
from tweetlm.sources.x_archive import tweet_to_post

MAX_LINE_BYTES = 16 * 1024**2  # a twarc2 page of 100 tweets and their includes is about 1 MB
_ACCOUNT_FIELDS = ("author", "username", "screen_name", "user", "account", "handle")
_NAME_KEYS = ("username", "screen_name", "handle", "acct")
_LIKE_FIELDS = ("likes", "like_count", "favorites", "favorite_count")
_REPOST_FIELDS = ("reposts", "retweets", "retweet_count", "repost_count")
# v2 referenced_tweets types, strongest first: a retweet that replies is a retweet.
_REFERENCE_KINDS = (("retweeted", Kind.RETWEET), ("replied_to", Kind.REPLY), ("quoted", Kind.QUOTE))


class _Line:
    """Where a record came from, for messages."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number

    def error(self, message: str) -> SourceFormatError:
        return SourceFormatError(f"{self.path} line {self.number}: {message}")


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in {".jsonl", ".ndjson"}


@register(
    "jsonl",
    detect=detect,
    help="JSON Lines: twarc2 / X API v2 pages or flattened tweets, or one object a line with a text field",
)
def read(path: Path, options: ReadOptions) -> Iterator[Post]:
    number = posts = 0
    with path.open("rb") as fh:
        # Lines are read with a cap: one endless line costs no more memory than MAX_LINE_BYTES.
        while data := fh.readline(MAX_LINE_BYTES + 1):
            number += 1
            where = _Line(path, number)
            if len(data) > MAX_LINE_BYTES:
                raise where.error(
                    f"a line of over {MAX_LINE_BYTES // 1024**2} MB: JSON Lines hold one record (or one page "
                    "of records) a line; is this really a file of posts?"
                )
            try:
                line = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise where.error(
                    f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}): "
                    "JSON Lines files are UTF-8, convert it"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise where.error(
                    f"malformed JSON ({exc.msg} at column {exc.colno}): fix or remove that line"
                ) from None
            except RecursionError:
                raise where.error("JSON nested too deeply: fix or remove that line") from None
            if not isinstance(record, dict):
                raise where.error(f"expected a JSON object, found {type(record).__name__}")
            for post in _posts(record, path, options, where):
                if len(post.text) > MAX_POST_CHARS:
                    raise too_long(f"{path} line {number}", len(post.text))
                posts += 1
                yield post
    if not posts:
        what = "is empty" if number == 0 else f"has {number} lines and no post with text in them"
        raise NoDataError(f"{path} {what}: no posts (JSON Lines hold one JSON object a line)")


def _posts(record: dict[str, Any], path: Path, options: ReadOptions, where: _Line) -> Iterator[Post]:
    if isinstance(record.get("tweet"), dict):  # an archive entry written as a line
        record = record["tweet"]
    if isinstance(record.get("data"), list | dict) and not any(name in record for name in TEXT_COLUMNS):
        includes = _object(record.get("includes"))
        users = _users(includes.get("users"))
        media = _media_by_key(includes.get("media"))
        tweets = record["data"] if isinstance(record["data"], list) else [record["data"]]
        for tweet in tweets:
            if not isinstance(tweet, dict):
                raise where.error("an item of 'data' is not a tweet object")
            yield _v2_post(tweet, users, media, path, options, where)
    elif "author_id" in record or isinstance(record.get("public_metrics"), dict):
        users = _users([record.get("author"), record.get("in_reply_to_user")])
        media = _media_by_key(_object(record.get("attachments")).get("media"))
        yield _v2_post(record, users, media, path, options, where)
    elif "id_str" in record and isinstance(record.get("entities"), dict):
        user = record.get("user")
        account = options.account or _name(user) or path.stem
        platform = options.platform or "x"
        yield tweet_to_post(record, account=account, platform=platform, where=f"{path} line {where.number}")
    elif (post := _generic_post(record, path, options, where)) is not None:
        yield post


# ------------------------------------------------------------------------------------------- v2


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (optional parts of a tweet may be missing)."""
    return value if isinstance(value, dict) else {}


def _name(value: Any) -> str | None:
    """A handle from a string or a user object, without the @."""
    if isinstance(value, Mapping):
        value = next((value[key] for key in _NAME_KEYS if isinstance(value.get(key), str)), None)
    name = value.strip().lstrip("@") if isinstance(value, str) else ""
    return name or None


def _users(items: Any) -> dict[str, str]:
    users: dict[str, str] = {}
    for user in items if isinstance(items, list) else []:
        if isinstance(user, dict) and user.get("id") is not None and (name := _name(user)):
            users[str(user["id"])] = name
    return users


def _media_by_key(items: Any) -> dict[str, str]:
    media: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(key := item.get("media_key"), str):
            url = item.get("url") or item.get("preview_image_url")
            if isinstance(url, str) and url:
                media[key] = url
    return media


def _v2_urls(*holders: Any) -> tuple[Url, ...]:
    urls: list[Url] = []
    for holder in holders:
        for item in _object(_object(holder).get("entities")).get("urls") or []:
            short = item.get("url") if isinstance(item, dict) else None
            if isinstance(short, str) and short and all(url.short != short for url in urls):
                expanded = item.get("expanded_url") or item.get("unwound_url") or short
                urls.append(Url(short, expanded))
    return tuple(urls)


def _v2_post(
    tweet: dict[str, Any],
    users: dict[str, str],
    media: dict[str, str],
    path: Path,
    options: ReadOptions,
    where: _Line,
) -> Post:
    post_id = str(tweet.get("id") or "")
    note = _object(tweet.get("note_tweet"))
    text = note["text"] if isinstance(note.get("text"), str) else tweet.get("text")
    if not post_id or not isinstance(text, str):
        raise where.error("a v2 tweet without an id or text: is this a twarc2 / X API v2 file?")
    references = {ref.get("type") for ref in tweet.get("referenced_tweets") or [] if isinstance(ref, dict)}
    kind = next((k for name, k in _REFERENCE_KINDS if name in references), None)
    if kind is None:
        kind = Kind.RETWEET if text.startswith("RT @") else Kind.ORIGINAL
    reply_to = users.get(str(tweet.get("in_reply_to_user_id"))) if kind is Kind.REPLY else None
    keys = _object(tweet.get("attachments")).get("media_keys") or []
    metrics = _object(tweet.get("public_metrics"))
    lang = tweet.get("lang")
    return Post(
        platform=options.platform or "x",
        account=options.account or users.get(str(tweet.get("author_id"))) or _name(tweet.get("author")) or path.stem,
        post_id=post_id,
        text=text,
        created_at=_date(tweet.get("created_at"), "created_at", where),
        kind=kind,
        reply_to=reply_to,
        lang=lang if isinstance(lang, str) and lang else None,
        urls=_v2_urls(tweet, note),
        media=tuple(media[key] for key in keys if isinstance(key, str) and key in media),
        likes=parse_count(metrics.get("like_count")),
        reposts=parse_count(metrics.get("retweet_count")),
        raw=tweet,
    )


# -------------------------------------------------------------------------------------- generic


def _date(value: Any, name: str, where: _Line) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_datetime(str(value))
    except ValueError:
        raise where.error(f"cannot read the date {value!r} in {name!r}: use ISO 8601 (2023-02-24T06:58:32Z)") from None


def _first(record: dict[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    return next(((name, record[name]) for name in names if record.get(name) not in (None, "")), None)


def _generic_post(record: dict[str, Any], path: Path, options: ReadOptions, where: _Line) -> Post | None:
    name = next((name for name in TEXT_COLUMNS if name in record), None)
    if name is None:
        keys = ", ".join(record) or "none"
        raise where.error(f"no text field (keys: {keys}; looked for {', '.join(TEXT_COLUMNS)})")
    text = record[name]
    if text is None or (isinstance(text, str) and not text.strip()):
        return None  # nothing was said
    if not isinstance(text, str):
        raise where.error(f"the text field {name!r} holds {type(text).__name__}, not a string")
    id_field = _first(record, ID_COLUMNS)
    date_field = _first(record, DATE_COLUMNS)
    account_field = _first(record, _ACCOUNT_FIELDS)
    likes = _first(record, _LIKE_FIELDS)
    reposts = _first(record, _REPOST_FIELDS)
    lang = _first(record, LANG_COLUMNS)
    return Post(
        platform=options.platform or "jsonl",
        account=options.account or (_name(account_field[1]) if account_field else None) or path.stem,
        post_id=str(id_field[1]) if id_field else row_hash(record),
        text=text,
        created_at=_date(date_field[1], date_field[0], where) if date_field else None,
        kind=Kind.RETWEET if text.startswith("RT @") else Kind.ORIGINAL,
        lang=lang[1] if lang and isinstance(lang[1], str) else None,
        likes=parse_count(likes[1]) if likes else None,
        reposts=parse_count(reposts[1]) if reposts else None,
        raw=record,
    )
