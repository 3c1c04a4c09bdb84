"""The X/Twitter archive ("Download an archive of your data"): the .zip, its extracted folder, or a
bare `tweets.js`.

Archive files are JavaScript: `window.YTD.tweets.part0 = [ {"tweet": {...}}, ... ]`. Everything up
to the first `=` is dropped and the rest parsed as JSON. Large accounts get split exports
(`tweets.js`, `tweets-part1.js`, ...; older archives say `tweet.js`). The handle comes from
`data/account.js` or `data/manifest.js`. Posts over 280 characters are truncated in `tweets.js`
and whole in `note-tweet.js`; the full text replaces the truncated one.

A zip is read in memory, member by member, and never extracted: member names that would escape
the archive are refused, as is any member bigger than `ReadOptions.max_bytes` (checked against
the size the zip declares and against the bytes really read).
"""

from __future__ import annotations

import html
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from tweetlm.errors import InputError, NoDataError, SourceFormatError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources import MAX_POST_CHARS, ReadOptions, register, too_long
from tweetlm.sources.csv_source import X_STATUS_URL, parse_count, parse_datetime

_TWEETS_FILE = re.compile(r"^tweets?(?:-part(\d+))?\.js$")
_NOTES_FILE = re.compile(r"^note-tweet(?:-part(\d+))?\.js$")
# What X puts at the end of a truncated long post: an ellipsis and a t.co link to the post itself.
_TRUNCATED_TAIL = re.compile(r"\s*…\s*https://t\.co/\w+\s*$")
_LEADING_MENTIONS = re.compile(r"^(?:@\w+\s+)+")
_DRIVE = re.compile(r"^[A-Za-z]:")
_TWITTER_TIME = "%a %b %d %H:%M:%S %z %Y"
_LISTED = 8  # names shown when saying what a zip or folder holds instead
# `window.YTD.tweets.part0 = `, `window.__THAR_CONFIG = ` (manifest.js): matched, not scanned for, so a
# file without it is reported at its start rather than at some '=' inside a post.
_ASSIGNMENT = re.compile(r"\s*(?:window\.)?[\w$]+(?:\.[\w$]+)*\s*=\s*")
_NON_SPACE = re.compile(r"\S")
# Real archive members deflate by at most about 10:1 (JSON of posts); a member that inflates over 100
# times its compressed size, and to more than a few MB, is a bomb (e.g. 1 GB of spaces), refused early.
_MAX_RATIO = 100
_RATIO_FLOOR = 8 * 1024**2
_READ_CHUNK = 1 << 20


@dataclass
class _Layout:
    """Where the parts of one archive are: names relative to the container."""

    tweets: list[str] = field(default_factory=list)  # in part order
    notes: list[str] = field(default_factory=list)
    account: str | None = None
    manifest: str | None = None


Loader = Callable[[str], bytes]


# ------------------------------------------------------------------------------------ detection


def detect(path: Path) -> bool:
    if path.is_dir():
        return bool(_layout_of(_folder_names(path)).tweets)
    return path.is_file() and (path.suffix.lower() == ".zip" or bool(_TWEETS_FILE.match(path.name)))


def _part(name: str, pattern: re.Pattern[str]) -> int | None:
    """The part number of an archive file name (`tweets.js` is part 0), None if it is no such file."""
    match = pattern.match(PurePosixPath(name).name)
    if match is None:
        return None
    return int(match[1]) if match[1] else 0


def _layout_in(names: Iterable[str], data_dir: PurePosixPath) -> _Layout:
    layout = _Layout()
    tweets: list[tuple[int, str]] = []
    notes: list[tuple[int, str]] = []
    for name in names:
        posix = PurePosixPath(name)
        if posix.parent != data_dir:
            continue
        if (part := _part(name, _TWEETS_FILE)) is not None:
            tweets.append((part, name))
        elif (part := _part(name, _NOTES_FILE)) is not None:
            notes.append((part, name))
        elif posix.name == "account.js":
            layout.account = name
        elif posix.name == "manifest.js":
            layout.manifest = name
    layout.tweets = [name for _, name in sorted(tweets)]
    layout.notes = [name for _, name in sorted(notes)]
    return layout


def _layout_of(names: list[str]) -> _Layout:
    """The layout of the shallowest `data/` folder that holds a tweets file (empty if none does)."""
    data_dirs = {
        PurePosixPath(n).parent
        for n in names
        if PurePosixPath(n).parent.name == "data" and _part(n, _TWEETS_FILE) is not None
    }
    if not data_dirs:
        return _Layout()
    return _layout_in(names, min(data_dirs, key=lambda d: (len(d.parts), str(d))))


def _folder_names(root: Path) -> list[str]:
    """Files of `root/data`, `root/*/data`, and of `root` itself when it is the data folder,
    as names relative to `root.parent` (media folders are not walked)."""
    root = root.resolve()
    names: list[str] = []
    candidates = [root / "data", *(d / "data" for d in sorted(root.iterdir()) if d.is_dir())]
    if root.name == "data":
        candidates.append(root)
    for data in candidates:
        if data.is_dir():
            names += [f.relative_to(root.parent).as_posix() for f in sorted(data.iterdir()) if f.is_file()]
    return names


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_LISTED]) or "nothing"
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _LISTED else shown


# ------------------------------------------------------------------------------------- reading


@register(
    "x-archive",
    detect=detect,
    help="X/Twitter archive: the .zip X delivers, its extracted folder, or a tweets.js",
)
def read(path: Path, options: ReadOptions) -> Iterator[Post]:
    if path.is_dir():
        names = _folder_names(path)
        layout = _layout_of(names)
        if not layout.tweets:
            found = _listing(p.name for p in path.iterdir())
            raise InputError(f"{path} is not an X archive folder: no data/tweets.js inside (found: {found})")
        base = path.resolve().parent  # what _folder_names' names are relative to
        yield from _posts(layout, _file_loader(base, options.max_bytes), options, path, f"{base}/")
    elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        yield from _read_zip(path, options)
    else:
        base = path.parent
        siblings = [f.name for f in sorted(base.iterdir()) if f.is_file()]
        layout = _layout_in(siblings, PurePosixPath("."))
        layout.tweets = [path.name]
        yield from _posts(layout, _file_loader(base, options.max_bytes), options, path, f"{base}/")


def _file_loader(base: Path, max_bytes: int) -> Loader:
    def load(name: str) -> bytes:
        file = base / name
        try:
            if not file.is_file():
                raise InputError(f"{file} is not a regular file: refusing it")
            if file.stat().st_size > max_bytes:
                raise InputError(f"{file} is over {max_bytes:,} bytes: no real X export file is, refusing it")
            with file.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"{file} cannot be read ({exc.strerror}): check its permissions") from None
        if len(data) > max_bytes:
            raise InputError(f"{file} is over {max_bytes:,} bytes: no real X export file is, refusing it")
        return data

    return load


def _escapes(name: str) -> bool:
    posix = name.replace("\\", "/")
    return posix.startswith("/") or bool(_DRIVE.match(posix)) or ".." in PurePosixPath(posix).parts


def _read_zip(path: Path, options: ReadOptions) -> Iterator[Post]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path} is not a readable zip ({exc}): download the archive again") from None
    with archive:
        infos = archive.infolist()
        for info in infos:
            if _escapes(info.filename):
                raise InputError(
                    f"{path} has a member that points outside the archive ({info.filename!r}): refusing it"
                )
        names = [info.filename for info in infos if not info.is_dir()]
        layout = _layout_of(names)
        if not layout.tweets:
            found = _listing(names)
            raise InputError(f"{path} is not an X archive: no data/tweets.js inside (found: {found})")

        def load(name: str) -> bytes:
            info = archive.getinfo(name)
            limit = options.max_bytes
            if info.file_size > limit:
                raise InputError(
                    f"{path}: {name} would unpack to {info.file_size:,} bytes, over the {limit:,} byte limit:"
                    " refusing it"
                )
            bomb = max(_RATIO_FLOOR, _MAX_RATIO * info.compress_size)
            if info.file_size > bomb:
                raise _bomb(path, name, info)
            # Streamed in chunks, so a member whose header lies about its size is stopped as it inflates.
            parts: list[bytes] = []
            size = 0
            try:
                with archive.open(info) as fh:
                    while size <= limit and (chunk := fh.read(_READ_CHUNK)):
                        parts.append(chunk)
                        size += len(chunk)
                        if size > bomb:
                            raise _bomb(path, name, info)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as exc:
                raise InputError(f"{path}: cannot read {name} ({exc}): download the archive again") from None
            if size > limit:
                raise InputError(f"{path}: {name} unpacks to over {limit:,} bytes: refusing it")
            return b"".join(parts)

        yield from _posts(layout, load, options, path, f"{path}:")


def _bomb(path: Path, name: str, info: zipfile.ZipInfo) -> InputError:
    return InputError(
        f"{path}: {name} inflates from {info.compress_size:,} bytes to over {_MAX_RATIO} times that: "
        "no real X archive does, refusing it (a zip bomb?)"
    )


def load_js(data: bytes, where: str) -> Any:
    """The JSON value of an archive file (`window.YTD.x.partN = <JSON>`; the manifest's
    `window.__THAR_CONFIG = <JSON>`)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(
            f"{where} is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
            "download the archive again"
        ) from None
    head = _ASSIGNMENT.match(text)
    if head is None:
        first = _NON_SPACE.search(text)
        found = repr(text[first.start() :][:40].splitlines()[0]) if first else "nothing but whitespace"
        line = text.count("\n", 0, first.start()) + 1 if first else 1
        column = first.start() - text.rfind("\n", 0, first.start()) if first else 1
        raise SourceFormatError(
            f"{where}:{line}:{column}: not an X archive file: expected 'window.YTD.tweets.part0 = ' at the start, "
            f"found {found}"
        )
    start = head.end()
    if (value_at := _NON_SPACE.search(text, start)) is None:
        raise SourceFormatError(f"{where}: not an X archive file: nothing after the '=' assignment")
    try:
        value, end = json.JSONDecoder().raw_decode(text, value_at.start())
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"{where}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}): the file is damaged, "
            "download the archive again"
        ) from None
    except RecursionError:
        raise SourceFormatError(f"{where}: JSON nested too deeply: the file is damaged") from None
    tail = _NON_SPACE.search(text, end)
    if tail is not None and not (text[tail.start()] == ";" and _NON_SPACE.search(text, tail.start() + 1) is None):
        line = text.count("\n", 0, tail.start()) + 1
        column = tail.start() - text.rfind("\n", 0, tail.start())
        raise SourceFormatError(f"{where}:{line}:{column}: unexpected text after the JSON: the file is damaged")
    return value


def _entries(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    """The objects of an archive array, unwrapped from `{key: {...}}` when wrapped."""
    if not isinstance(value, list):
        raise SourceFormatError(f"{where} does not hold a JSON array: it is not an X archive file")
    entries: list[dict[str, Any]] = []
    for index, entry in enumerate(value):
        inner = entry.get(key, entry) if isinstance(entry, dict) else None
        if not isinstance(inner, dict):
            raise SourceFormatError(f"{where}: entry {index} is not a {key} object")
        entries.append(inner)
    return entries


def _handle(layout: _Layout, load: Loader, prefix: str) -> str | None:
    if layout.account is not None:
        where = prefix + layout.account
        for entry in _entries(load_js(load(layout.account), where), "account", where):
            if isinstance(name := entry.get("username"), str) and name:
                return name
    if layout.manifest is not None:
        manifest = load_js(load(layout.manifest), prefix + layout.manifest)
        user = manifest.get("userInfo") if isinstance(manifest, dict) else None
        if isinstance(user, dict) and isinstance(name := user.get("userName"), str) and name:
            return name
    return None


def _posts(layout: _Layout, load: Loader, options: ReadOptions, source: Path, prefix: str) -> Iterator[Post]:
    """The posts of an archive; `prefix` + a member name says where a file is, in messages."""
    account = options.account or _handle(layout, load, prefix)
    if not account:
        raise InputError(f"{source}: cannot tell whose archive this is (no account.js or manifest.js): pass --account")
    notes = _NoteIndex()
    for name in layout.notes:
        for note in _entries(load_js(load(name), prefix + name), "noteTweet", prefix + name):
            notes.add(note)
    platform = options.platform or "x"
    seen: set[str] = set()
    for name in layout.tweets:
        where = prefix + name
        for index, tweet in enumerate(_entries(load_js(load(name), where), "tweet", where)):
            post = tweet_to_post(tweet, account=account, platform=platform, notes=notes, where=where)
            if len(post.text) > MAX_POST_CHARS:
                raise too_long(f"{where}: entry {index}", len(post.text))
            if post.post_id not in seen:
                seen.add(post.post_id)
                yield post
    if not seen:
        parts = ", ".join(prefix + name for name in layout.tweets)
        raise NoDataError(f"{parts} holds an empty list of tweets: no posts to import")


# --------------------------------------------------------------------------------- note tweets


def _second(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(microsecond=0)


class _NoteIndex:
    """Note tweets by creation second, to find the full text of a truncated long post."""

    def __init__(self) -> None:
        self._by_second: dict[datetime, list[dict[str, Any]]] = {}

    def add(self, note: dict[str, Any]) -> None:
        created, core = note.get("createdAt"), note.get("core")
        if not (isinstance(created, str) and isinstance(core, dict) and isinstance(core.get("text"), str)):
            return
        try:
            second = _second(parse_datetime(created))
        except ValueError:
            return
        self._by_second.setdefault(second, []).append(note)

    def match(self, text: str, created_at: datetime | None) -> tuple[dict[str, Any], str] | None:
        """The note whose text the truncated `text` begins, and the full text to use."""
        tail = _TRUNCATED_TAIL.search(text)
        if tail is None or created_at is None:
            return None
        prefix = html.unescape(text[: tail.start()]).rstrip()
        if not prefix:
            return None
        mentions = _LEADING_MENTIONS.match(text)
        for note in self._by_second.get(_second(created_at), []):
            full: str = note["core"]["text"]
            if html.unescape(full).startswith(prefix):
                return note, full
            # A reply's note may leave out the leading @mentions that tweets.js shows.
            if mentions and html.unescape(full).startswith(prefix[len(html.unescape(mentions[0])) :]):
                return note, mentions[0] + full
        return None


# ------------------------------------------------------------------------------------- tweets


def _urls(entities: Any) -> list[Url]:
    urls: list[Url] = []
    if isinstance(entities, dict):
        for item in entities.get("urls") or []:
            if isinstance(item, dict) and isinstance(short := item.get("url"), str) and short:
                expanded = item.get("expanded_url")
                urls.append(Url(short, expanded if isinstance(expanded, str) and expanded else short))
    return urls


def _media(tweet: dict[str, Any]) -> tuple[str, ...]:
    media: list[str] = []
    for holder in (tweet.get("extended_entities"), tweet.get("entities")):
        items = holder.get("media") if isinstance(holder, dict) else None
        for item in items or []:
            if isinstance(item, dict):
                url = item.get("media_url_https") or item.get("media_url")
                if isinstance(url, str) and url and url not in media:
                    media.append(url)
        if media:
            break
    return tuple(media)


def _is_self_link(url: Url, post_id: str) -> bool:
    match = X_STATUS_URL.match(url.expanded)
    if match is None:
        return "/i/web/status/" in url.expanded and url.expanded.rstrip("/").endswith(post_id)
    return match["id"] == post_id


def _quotes(url: Url, post_id: str) -> bool:
    match = X_STATUS_URL.match(url.expanded)
    return match is not None and match["user"].lower() != "i" and match["id"] != post_id


def _reply_to(tweet: dict[str, Any]) -> str | None:
    name = tweet.get("in_reply_to_screen_name")
    if isinstance(name, str) and name:
        return name
    user_id = str(tweet.get("in_reply_to_user_id_str") or tweet.get("in_reply_to_user_id") or "")
    entities = tweet.get("entities")
    mentions = (entities.get("user_mentions") or []) if isinstance(entities, dict) and user_id else []
    for mention in mentions:
        if isinstance(mention, dict) and str(mention.get("id_str") or mention.get("id")) == user_id:
            name = mention.get("screen_name")
            return name if isinstance(name, str) and name else None
    return None


def _kind(tweet: dict[str, Any], text: str, urls: list[Url], post_id: str) -> Kind:
    if text.startswith("RT @") or isinstance(tweet.get("retweeted_status"), dict):
        return Kind.RETWEET
    if tweet.get("in_reply_to_status_id_str") or tweet.get("in_reply_to_status_id") or _reply_to(tweet):
        return Kind.REPLY
    if (
        tweet.get("quoted_status_id_str")
        or tweet.get("quoted_status_id")
        or tweet.get("quoted_status_permalink")
        or any(_quotes(url, post_id) for url in urls)
    ):
        return Kind.QUOTE
    return Kind.ORIGINAL


def tweet_to_post(
    tweet: dict[str, Any],
    *,
    account: str,
    platform: str = "x",
    notes: _NoteIndex | None = None,
    where: str = "tweet",
) -> Post:
    """A `Post` from a tweet object as archives and the v1.1 API deliver it (`raw` is the tweet;
    a long post's note tweet, when one matched, is kept there under `noteTweet`)."""
    post_id = str(tweet.get("id_str") or tweet.get("id") or "")
    text = tweet.get("full_text") if isinstance(tweet.get("full_text"), str) else tweet.get("text")
    if not post_id or not isinstance(text, str):
        raise SourceFormatError(
            f"{where}: a tweet without an id or text (keys: {_listing(tweet)}): is this an X archive file?"
        )
    created_at = None
    if isinstance(stamp := tweet.get("created_at"), str) and stamp:
        try:
            created_at = datetime.strptime(stamp, _TWITTER_TIME).astimezone(timezone.utc)
        except ValueError:
            raise SourceFormatError(
                f"{where}: tweet {post_id} has an unreadable created_at {stamp!r}: the file is damaged"
            ) from None
    urls = _urls(tweet.get("entities"))
    raw = tweet
    found = notes.match(text, created_at) if notes is not None else None
    if found is not None:
        note, text = found
        urls = [url for url in urls if not _is_self_link(url, post_id)]
        for item in note["core"].get("urls") or []:
            short = item.get("shortUrl") if isinstance(item, dict) else None
            if isinstance(short, str) and short and all(url.short != short for url in urls):
                urls.append(Url(short, item.get("expandedUrl") or short))
        raw = {**tweet, "noteTweet": note}
    kind = _kind(tweet, text, urls, post_id)
    lang = tweet.get("lang")
    return Post(
        platform=platform,
        account=account,
        post_id=post_id,
        text=text,
        created_at=created_at,
        kind=kind,
        reply_to=_reply_to(tweet) if kind is Kind.REPLY else None,
        lang=lang if isinstance(lang, str) and lang else None,
        urls=tuple(urls),
        media=_media(tweet),
        likes=parse_count(tweet.get("favorite_count")),
        reposts=parse_count(tweet.get("retweet_count")),
        raw=raw,
    )
