"""CSV files of posts: one row a post, a header row naming the columns.

The text column is found by name (`text`, `full_text`, `tweet`, `content`) or chosen with
`--text-column`; dates, ids, counts and the account come from the usual column names when present.
The file is streamed through the csv module, so its size does not matter.

Also home to the helpers the other text sources share: `text_encoding` (which encoding a text file
is in, checked before anything is yielded), `parse_datetime` and `parse_count`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tweetlm.errors import InputError, NoDataError, SourceFormatError
from tweetlm.records import Kind, Post
from tweetlm.sources import ReadOptions, register

log = logging.getLogger("tweetlm")

TEXT_COLUMNS = ("text", "full_text", "tweet", "content")
DATE_COLUMNS = ("created_at", "date", "timestamp", "time")
ID_COLUMNS = ("id", "id_str", "tweet_id", "post_id")
LIKE_COLUMNS = ("favorites", "likes", "favorite_count")
REPOST_COLUMNS = ("retweets", "retweet_count", "reposts")
ACCOUNT_COLUMNS = ("user", "screen_name", "username")
LANG_COLUMNS = ("lang", "language")
URL_COLUMNS = ("url",)

X_STATUS_URL = re.compile(
    r"^https?://(?:www\.|mobile\.)?(?:twitter|x)\.com/(?P<user>\w+)/status(?:es)?/(?P<id>\d+)", re.IGNORECASE
)
_X_HOST = re.compile(r"^https?://(?:[\w-]+\.)?(?:twitter|x)\.com(?:[/:?#]|$)", re.IGNORECASE)

_CHUNK = 1 << 16
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 control bytes that never occur in a text file (tab, newlines, form feed, ESC and ^Z do).
_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\t\n\r\x0b\x0c\x1a\x1b")
_NOT_CONTROL_BYTES = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

_TWITTER_TIME = "%a %b %d %H:%M:%S %z %Y"
_DATE_FORMATS = (
    _TWITTER_TIME,
    "%m/%d/%y %H:%M",
    "%m/%d/%Y %H:%M",
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S %Z",
)
_EPOCH = re.compile(r"\d{9,13}(?:\.\d+)?")


# ---------------------------------------------------------------------------------------- helpers


def parse_datetime(value: str) -> datetime:
    """A timestamp as exports write them, in UTC: ISO 8601, Twitter's `Fri Feb 24 06:58:32 +0000 2023`,
    `10/16/17 22:59` (month/day/year) or Unix seconds/milliseconds. No zone means UTC.

    Raises ValueError when the value is none of these.
    """
    text = value.strip()
    parsed: datetime | None = None
    if _EPOCH.fullmatch(text):
        seconds = float(text)
        return datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            break
    if parsed is None:
        raise ValueError(f"unknown date format: {value!r}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_count(value: object) -> int | None:
    """A like/repost count: ints, and strings such as `"12"` or `"1,234"`; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        if text.isdigit():
            return int(text)
    return None


def status_id(url: str) -> str | None:
    """The status id at the end of an X permalink (twitter.com or x.com), else None."""
    match = X_STATUS_URL.match(url.strip())
    return match["id"] if match else None


@dataclass(frozen=True)
class _Scan:
    bad: tuple[int, int] | None  # first byte that does not decode, and its offset
    nul: int | None  # offset of the first NUL byte
    controls: bool  # any control byte a text file never has


def _scan(path: Path, encoding: str) -> _Scan:
    """Decode the whole file in chunks (flat memory) and note where it stops decoding."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    fed = 0
    nul: int | None = None
    controls = False
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            if nul is None and (at := chunk.find(b"\x00")) >= 0:
                nul = fed + at
            controls = controls or bool(chunk.translate(None, _NOT_CONTROL_BYTES))
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return _Scan((exc.object[exc.start], fed - pending + exc.start), nul, controls)
            except UnicodeError:  # e.g. UTF-16 without a byte order mark: the codec refuses the start
                return _Scan((chunk[0], fed), nul, controls)
            fed += len(chunk)
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return _Scan((exc.object[exc.start], fed - pending + exc.start), nul, controls)
    return _Scan(None, nul, controls)


def _line_at(path: Path, offset: int) -> int:
    """The 1-based line that byte `offset` is on."""
    lines = 1
    with path.open("rb") as fh:
        while offset > 0 and (chunk := fh.read(min(_CHUNK, offset))):
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines


def text_encoding(path: Path, encoding: str | None, what: str = "text file") -> str:
    """The encoding to open `path` with, checked over the whole file so reading it cannot fail later.

    An explicit `encoding` must decode every byte. Otherwise: a UTF-16/32 BOM names the encoding;
    UTF-8 (BOM or not) if it decodes; a file with NUL bytes or binary control bytes is refused;
    else cp1252 if it decodes, else mac_roman, with a warning saying which was assumed.
    """
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise InputError(
                f"unknown encoding {encoding!r}: pass a Python codec name such as utf-8 or cp1252"
            ) from None
        _check_strict(path, codec, what, hint=f"it is not {encoding}: pass the right --encoding")
        return "utf-8-sig" if codec == "utf-8" else codec  # a BOM is no part of the text
    with path.open("rb") as fh:
        head = fh.read(4)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            _check_strict(path, codec, what, hint=f"it starts with a {codec} byte order mark but is damaged")
            return codec
    scan = _scan(path, "utf-8")
    if scan.nul is not None:
        raise _not_utf8(path, what, 0, scan.nul)
    if scan.bad is None:
        return "utf-8-sig"  # UTF-8, without its BOM if it has one
    byte, offset = scan.bad
    if scan.controls:
        raise _not_utf8(path, what, byte, offset)
    codec = "cp1252" if _scan(path, "cp1252").bad is None else "mac_roman"  # mac_roman decodes anything
    log.warning(
        "%s is not UTF-8 (byte 0x%02x at line %d): reading it as %s; pass --encoding to choose",
        path,
        byte,
        _line_at(path, offset),
        codec,
    )
    return codec


def _not_utf8(path: Path, what: str, byte: int, offset: int) -> SourceFormatError:
    return SourceFormatError(
        f"{path} is not a UTF-8 {what} (byte 0x{byte:02x} at line {_line_at(path, offset)}): "
        "convert it to UTF-8 or pass --encoding"
    )


def _check_strict(path: Path, codec: str, what: str, hint: str) -> None:
    bad = _scan(path, codec).bad
    if bad is not None:
        byte, offset = bad
        line = _line_at(path, offset)
        raise SourceFormatError(f"{path} is not a valid {codec} {what} (byte 0x{byte:02x} at line {line}): {hint}")


def _column(fieldnames: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first header name matching one of `candidates` (case and surrounding spaces ignored)."""
    by_name = {name.strip().lower(): name for name in reversed(fieldnames)}
    for candidate in candidates:
        if candidate.lower() in by_name:
            return by_name[candidate.lower()]
    return None


@dataclass(frozen=True)
class _Columns:
    text: str
    date: str | None
    id: str | None
    url: str | None
    likes: str | None
    reposts: str | None
    account: str | None
    lang: str | None


def _columns(path: Path, fieldnames: Sequence[str], text_column: str | None, delimiter: str = ",") -> _Columns:
    found = ", ".join(repr(name) for name in fieldnames)
    split = f"columns separated by {delimiter!r}"
    if len(fieldnames) == 1:
        split += "; pass --delimiter if the header row uses another separator"
    if text_column is not None:
        text = _column(fieldnames, (text_column,))
        if text is None:
            raise SourceFormatError(
                f"{path} has no column {text_column!r} (columns: {found}; {split}): check --text-column"
            )
    else:
        text = _column(fieldnames, TEXT_COLUMNS)
        if text is None:
            raise SourceFormatError(
                f"{path} has no text column (columns: {found}; looked for {', '.join(TEXT_COLUMNS)}; {split}): "
                "pass --text-column NAME"
            )
    return _Columns(
        text=text,
        date=_column(fieldnames, DATE_COLUMNS),
        id=_column(fieldnames, ID_COLUMNS),
        url=_column(fieldnames, URL_COLUMNS),
        likes=_column(fieldnames, LIKE_COLUMNS),
        reposts=_column(fieldnames, REPOST_COLUMNS),
        account=_column(fieldnames, ACCOUNT_COLUMNS),
        lang=_column(fieldnames, LANG_COLUMNS),
    )


def _cell(row: dict[str, str | None], column: str | None) -> str:
    value = row.get(column) if column is not None else None
    return value.strip() if isinstance(value, str) else ""


def row_hash(row: object) -> str:
    """A stable id for a record that has none: a hash of its content."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ source


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


@register("csv", detect=detect, help="CSV with a header row: text column auto-detected or --text-column")
def read(path: Path, options: ReadOptions) -> Iterator[Post]:
    encoding = text_encoding(path, options.encoding, what="text CSV")
    delimiter = options.delimiter or _sniff_delimiter(path, encoding)
    with path.open(encoding=encoding, newline="") as fh:
        reader = csv.DictReader(fh, restkey="_extra", delimiter=delimiter)
        start = 1  # the line the record being read starts on
        try:
            fieldnames = reader.fieldnames
            if not fieldnames:
                raise SourceFormatError(f"{path} is empty: a CSV needs a header row and one row a post")
            columns = _columns(path, fieldnames, options.text_column, delimiter)
            rows = posts = 0
            start = reader.line_num + 1
            for row in reader:
                rows += 1
                _check_spanning(path, row, start, reader.line_num, len(fieldnames), delimiter)
                post = _post(path, row, start, columns, options)
                start = reader.line_num + 1
                if post is not None:
                    posts += 1
                    yield post
        except csv.Error as exc:
            hint = "is a quote left open there?" if "field limit" in str(exc) else "fix the quoting there"
            raise SourceFormatError(f"{path} line {start}: malformed CSV ({exc}): {hint}") from None
    if not rows:
        raise NoDataError(f"{path} has a header row ({', '.join(map(repr, fieldnames))}) and no rows: no posts")
    if not posts:
        raise NoDataError(f"{path} has {rows} rows and none has text in column {columns.text!r}: no posts")


_DELIMITERS = ",;\t|"


def _sniff_delimiter(path: Path, encoding: str) -> str:
    """The delimiter that splits the header row into the most columns (a comma when none splits it)."""
    with path.open(encoding=encoding, newline="") as fh:
        header = fh.readline(_CHUNK)
    counts = {d: len(next(csv.reader([header], delimiter=d), [])) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])  # the first (a comma) on ties
    if best != "," and counts[best] > 1:
        log.info("%s: columns separated by %r", path, best)
    return best if counts[best] > 1 else ","


def _check_spanning(path: Path, row: dict[str, str | None], start: int, end: int, width: int, delimiter: str) -> None:
    """Warn about a quoted field that spans lines shaped like rows of this file: an unterminated quote
    that merged the rows after it into itself."""
    if end == start:
        return
    for value in row.values():
        if not isinstance(value, str) or "\n" not in value:
            continue
        lines = value.split("\n")[1:]
        shaped = sum(
            1 for line in lines if line.strip() and len(next(csv.reader([line], delimiter=delimiter), [])) >= width
        )
        if width > 1 and shaped:
            log.warning(
                "%s line %d: a quoted field runs to line %d and holds %d line(s) shaped like rows: "
                "is its closing quote missing? Those rows were read as part of it",
                path,
                start,
                end,
                shaped,
            )
            return


def _post(path: Path, row: dict[str, str | None], line: int, columns: _Columns, options: ReadOptions) -> Post | None:
    text = row.get(columns.text) or ""
    if not text.strip():
        return None
    url = _cell(row, columns.url)
    created_at = None
    if date := _cell(row, columns.date):
        try:
            created_at = parse_datetime(date)
        except ValueError:
            raise SourceFormatError(
                f"{path} line {line}: cannot read the date {date!r} in column {columns.date!r}: "
                "use ISO 8601 (2023-02-24T06:58:32Z)"
            ) from None
    post_id = _cell(row, columns.id) or status_id(url) or row_hash(row)
    return Post(
        platform=options.platform or ("x" if _X_HOST.match(url) else "csv"),
        account=options.account or _cell(row, columns.account).lstrip("@") or path.stem,
        post_id=post_id,
        text=text,
        created_at=created_at,
        kind=Kind.RETWEET if text.startswith("RT @") else Kind.ORIGINAL,
        lang=_cell(row, columns.lang) or None,
        likes=parse_count(_cell(row, columns.likes)),
        reposts=parse_count(_cell(row, columns.reposts)),
        raw=dict(row),
    )
