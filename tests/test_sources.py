"""The CSV, JSONL and plain-text sources, and the registry that finds them."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OBAMA_CSV
from tweetlm.errors import InputError, SourceFormatError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources import ReadOptions, csv_source, jsonl_source, registry, resolve, text_source
from tweetlm.sources.csv_source import parse_datetime

UTC = timezone.utc


def _csv(path: Path, **options: Any) -> list[Post]:
    return list(csv_source.read(path, ReadOptions(**options)))


def _jsonl(path: Path, **options: Any) -> list[Post]:
    return list(jsonl_source.read(path, ReadOptions(**options)))


def _text(path: Path, **options: Any) -> list[Post]:
    return list(text_source.read(path, ReadOptions(**options)))


def _write_jsonl(path: Path, *records: Any) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------- registry


def test_registry_has_the_four_file_sources() -> None:
    assert {"x-archive", "csv", "jsonl", "text"} <= set(registry())


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("posts.csv", "csv"),
        ("POSTS.CSV", "csv"),
        ("posts.jsonl", "jsonl"),
        ("posts.ndjson", "jsonl"),
        ("posts.txt", "text"),
    ],
)
def test_resolve_by_file_type(tmp_path: Path, name: str, source: str) -> None:
    path = tmp_path / name
    path.write_text("text\nhello\n", encoding="utf-8")
    assert resolve(path, None).name == source


# ------------------------------------------------------------------------------------------- CSV


@pytest.mark.shared
@pytest.mark.slow
def test_obama_csv(caplog: pytest.LogCaptureFixture) -> None:
    raw = OBAMA_CSV.read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode("mac_roman"), newline="")))
    with caplog.at_level(logging.WARNING, logger="tweetlm"):
        posts = _csv(OBAMA_CSV)
    assert len(posts) == len(rows) == 3207
    assert "mac_roman" in caplog.text and "--encoding" in caplog.text
    assert {p.account for p in posts} == {"BarackObama"}
    assert {p.platform for p in posts} == {"x"}
    assert [p.post_id for p in posts] == [r["url"].rsplit("/", 1)[1] for r in rows]
    assert len({p.post_id for p in posts}) == 3207
    assert posts[0].post_id == "920061541986250758"
    assert posts[0].created_at == datetime(2017, 10, 16, 22, 59, tzinfo=UTC)
    assert all(p.created_at is not None and p.created_at.tzinfo == UTC for p in posts)
    assert posts[0].likes == 641842 and posts[0].reposts == 89916
    assert sum(p.kind is Kind.RETWEET for p in posts) == sum(r["text"].startswith("RT @") for r in rows)
    assert any("‰Û" in p.text for p in posts)  # the mojibake is kept for curation to repair
    assert posts[0].raw == rows[0]


@pytest.mark.shared
def test_obama_csv_with_explicit_utf8_fails_with_the_line() -> None:
    raw = OBAMA_CSV.read_bytes()
    with pytest.raises(UnicodeDecodeError) as bad:
        raw.decode("utf-8")
    line = raw.count(b"\n", 0, bad.value.start) + 1
    byte = raw[bad.value.start]
    with pytest.raises(SourceFormatError, match=re.escape(f"(byte 0x{byte:02x} at line {line})")):
        _csv(OBAMA_CSV, encoding="utf-8")


@pytest.mark.parametrize(
    ("data", "byte", "line"),
    [
        (b"text,id\nhello,1\nbin\x00ary,2\n", 0x00, 3),
        (b"text,id\nhello,1\n\x01\x02\x03,2\n\xe4\x80\x04,3\n", 0xE4, 4),
    ],
)
def test_binary_csv_is_refused(tmp_path: Path, data: bytes, byte: int, line: int) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(data)
    message = (
        f"{path} is not a UTF-8 text CSV (byte 0x{byte:02x} at line {line}): convert it to UTF-8 or pass --encoding"
    )
    with pytest.raises(SourceFormatError, match=re.escape(message)):
        _csv(path)


def test_cp1252_csv_is_read_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "legacy.csv"
    path.write_bytes("text\n“Café” — naïve\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="tweetlm"):
        posts = _csv(path)
    assert [p.text for p in posts] == ["“Café” — naïve"]
    assert "cp1252" in caplog.text


def test_explicit_encoding(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text\nolé\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="tweetlm"):
        assert [p.text for p in _csv(path, encoding="latin-1")] == ["olé"]
    assert not caplog.records
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        _csv(path, encoding="klingon")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_byte_order_marks(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("Text,Likes\nhéllo,3\n".encode(encoding))
    posts = _csv(path)
    assert [(p.text, p.likes) for p in posts] == [("héllo", 3)]
    assert _csv(path, encoding=encoding.removesuffix("-sig")) == posts


def test_csv_without_text_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("when,body,who\n2023-01-01,hi,me\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match=r"columns: 'when', 'body', 'who'.*--text-column") as error:
        _csv(path)
    assert "\n" not in str(error.value)
    assert [p.text for p in _csv(path, text_column="BODY")] == ["hi"]
    with pytest.raises(SourceFormatError, match="no column 'message'"):
        _csv(path, text_column="message")


def test_csv_text_column_choice_wins_over_detection(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("text,content\nfrom text,from content\n", encoding="utf-8")
    assert [p.text for p in _csv(path)] == ["from text"]
    assert [p.text for p in _csv(path, text_column="content")] == ["from content"]


def test_csv_columns_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "my_posts.csv"
    path.write_text(
        "Tweet_ID,Full_Text,Timestamp,Likes,Reposts,Screen_Name,Lang\n"
        '11,plain,2023-02-24T06:58:32Z,"1,234",5,@someone,en\n'
        '12,"two\nlines",2023-02-24T08:58:32+02:00,,,,\n'
        "13,,2023-02-24,1,1,someone,en\n"
        "14,RT @other: hello,Fri Feb 24 06:58:32 +0000 2023,0,0,someone,en\n"
        "15,naive,2023-02-24 06:58:32,0,0,someone,en\n",
        encoding="utf-8",
    )
    posts = _csv(path)
    assert [p.post_id for p in posts] == ["11", "12", "14", "15"]  # 13 has no text
    assert [p.account for p in posts] == ["someone", "my_posts", "someone", "someone"]
    assert {p.platform for p in posts} == {"csv"}
    stamp = datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)
    assert [p.created_at for p in posts] == [stamp] * 4
    assert posts[0].likes == 1234 and posts[0].reposts == 5 and posts[0].lang == "en"
    assert posts[1].text == "two\nlines" and posts[1].likes is None and posts[1].lang is None
    assert [p.kind for p in posts] == [Kind.ORIGINAL, Kind.ORIGINAL, Kind.RETWEET, Kind.ORIGINAL]
    overridden = _csv(path, account="boss", platform="mastodon")
    assert {(p.account, p.platform) for p in overridden} == {("boss", "mastodon")}


def test_csv_ids_from_url_or_content(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text(
        "text,url\na,https://x.com/someone/status/42\nb,https://example.com/post/7\nc,\nd,\n",
        encoding="utf-8",
    )
    posts = _csv(path)
    assert posts[0].post_id == "42" and posts[0].platform == "x"
    assert [p.platform for p in posts[1:]] == ["csv", "csv", "csv"]
    hashed = [p.post_id for p in posts[1:]]
    assert len(set(hashed)) == 3 and all(re.fullmatch(r"[0-9a-f]{20}", h) for h in hashed)
    assert [p.post_id for p in _csv(path)] == [p.post_id for p in posts]  # stable


def test_csv_bad_date_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("text,date\nok,2023-01-01\nbad,next tuesday\n", encoding="utf-8")
    with pytest.raises(SourceFormatError, match=r"line 3: cannot read the date 'next tuesday'"):
        _csv(path)


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceFormatError, match="is empty"):
        _csv(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-02-24T06:58:32Z", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
        ("2023-02-24T06:58:32.000Z", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
        ("2023-02-24T01:58:32-05:00", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
        ("Fri Feb 24 06:58:32 +0000 2023", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
        ("10/16/17 22:59", datetime(2017, 10, 16, 22, 59, tzinfo=UTC)),
        ("1/1/15 0:01", datetime(2015, 1, 1, 0, 1, tzinfo=UTC)),
        ("1677221912", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
        ("1677221912000", datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)),
    ],
)
def test_parse_datetime(value: str, expected: datetime) -> None:
    parsed = parse_datetime(value)
    assert parsed == expected and parsed.tzinfo == UTC


# ----------------------------------------------------------------------------------------- JSONL

V2_PAGE: dict[str, Any] = {
    "data": [
        {
            "id": "1001",
            "text": "A long post that X cut short… https://t.co/abc",
            "note_tweet": {
                "text": "A long post that X cut short, here in full " + "and more " * 40,
                "entities": {"urls": [{"url": "https://t.co/n1", "expanded_url": "https://example.org/n"}]},
            },
            "created_at": "2023-02-24T06:58:32.000Z",
            "author_id": "7",
            "lang": "en",
            "public_metrics": {"like_count": 3, "retweet_count": 1, "reply_count": 0, "quote_count": 0},
            "entities": {"urls": [{"url": "https://t.co/abc", "expanded_url": "https://example.com/x"}]},
            "attachments": {"media_keys": ["3_1"]},
            "edit_history_tweet_ids": ["1001"],
        },
        {
            "id": "1002",
            "text": "@friend sure",
            "created_at": "2023-02-24T07:00:00.000Z",
            "author_id": "7",
            "in_reply_to_user_id": "8",
            "referenced_tweets": [{"type": "replied_to", "id": "999"}],
            "public_metrics": {"like_count": 0, "retweet_count": 0},
        },
        {
            "id": "1003",
            "text": "RT @friend: their words",
            "created_at": "2023-02-24T07:01:00.000Z",
            "author_id": "7",
            "referenced_tweets": [{"type": "retweeted", "id": "998"}],
        },
        {
            "id": "1004",
            "text": "look at this https://t.co/q",
            "created_at": "2023-02-24T07:02:00.000Z",
            "author_id": "7",
            "referenced_tweets": [{"type": "quoted", "id": "997"}],
        },
    ],
    "includes": {
        "users": [{"id": "7", "username": "me_myself", "name": "Me"}, {"id": "8", "username": "friend"}],
        "media": [{"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/a.jpg"}],
    },
    "meta": {"result_count": 4, "newest_id": "1004", "oldest_id": "1001"},
}


def test_jsonl_twarc2_pages(tmp_path: Path) -> None:
    path = tmp_path / "timeline.jsonl"
    path.write_text(json.dumps(V2_PAGE) + "\n\n" + json.dumps(V2_PAGE) + "\n", encoding="utf-8")
    posts = _jsonl(path)
    assert len(posts) == 8  # blank line skipped, both pages read
    first, reply, retweet, quote = posts[:4]
    assert first.text == V2_PAGE["data"][0]["note_tweet"]["text"]
    assert first.account == "me_myself" and first.platform == "x" and first.post_id == "1001"
    assert first.created_at == datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)
    assert (first.likes, first.reposts, first.lang) == (3, 1, "en")
    assert first.urls == (
        Url("https://t.co/abc", "https://example.com/x"),
        Url("https://t.co/n1", "https://example.org/n"),
    )
    assert first.media == ("https://pbs.twimg.com/media/a.jpg",)
    assert first.raw == V2_PAGE["data"][0]
    assert (reply.kind, reply.reply_to) == (Kind.REPLY, "friend")
    assert retweet.kind is Kind.RETWEET and retweet.reply_to is None
    assert quote.kind is Kind.QUOTE


def test_jsonl_twarc2_flattened(tmp_path: Path) -> None:
    tweet = {
        **V2_PAGE["data"][1],
        "author": {"id": "7", "username": "me_myself"},
        "in_reply_to_user": {"id": "8", "username": "friend"},
        "__twarc": {"url": "https://api.twitter.com/2/users/7/tweets", "version": "2.14.0"},
    }
    posts = _jsonl(_write_jsonl(tmp_path / "flat.jsonl", tweet))
    assert [(p.account, p.kind, p.reply_to) for p in posts] == [("me_myself", Kind.REPLY, "friend")]


def test_jsonl_v1_tweets(tmp_path: Path) -> None:
    tweet = {
        "id_str": "5",
        "created_at": "Fri Feb 24 06:58:32 +0000 2023",
        "full_text": "@pal agreed",
        "in_reply_to_status_id_str": "4",
        "in_reply_to_screen_name": "pal",
        "entities": {"urls": [], "user_mentions": []},
        "favorite_count": 2,
        "retweet_count": 0,
        "user": {"screen_name": "v1user"},
    }
    posts = _jsonl(_write_jsonl(tmp_path / "v1.jsonl", tweet, {"tweet": {**tweet, "id_str": "6"}}))
    assert [(p.post_id, p.account, p.kind, p.reply_to, p.likes) for p in posts] == [
        ("5", "v1user", Kind.REPLY, "pal", 2),
        ("6", "v1user", Kind.REPLY, "pal", 2),
    ]


def test_jsonl_generic_objects(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "notes.jsonl",
        {"id": 1, "content": "first", "date": "2023-02-24T06:58:32Z", "username": "@writer", "likes": 4},
        {"text": "no id here", "author": {"handle": "writer"}},
        {"text": ""},
        {"full_text": "RT @x: y", "created_at": 1677221912},
    )
    posts = _jsonl(path)
    assert [p.text for p in posts] == ["first", "no id here", "RT @x: y"]
    assert [p.account for p in posts] == ["writer", "writer", "notes"]
    assert {p.platform for p in posts} == {"jsonl"}
    assert posts[0].post_id == "1" and posts[0].likes == 4
    assert re.fullmatch(r"[0-9a-f]{20}", posts[1].post_id)
    assert posts[0].created_at == posts[2].created_at == datetime(2023, 2, 24, 6, 58, 32, tzinfo=UTC)
    assert posts[2].kind is Kind.RETWEET
    assert posts[1].raw == {"text": "no id here", "author": {"handle": "writer"}}
    assert {p.account for p in _jsonl(path, account="boss")} == {"boss"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('{"text": "ok"}\n\n{"text": "broken"\n', r"line 3: malformed JSON"),
        ('{"text": "ok"}\n[1, 2]\n', r"line 2: expected a JSON object, found list"),
        ('{"body": "x", "when": 1}\n', r"line 1: no text field \(keys: body, when;"),
        ('{"text": "ok", "created_at": "someday"}\n', r"line 1: cannot read the date 'someday'"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, lines: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(lines, encoding="utf-8")
    with pytest.raises(SourceFormatError, match=message) as error:
        _jsonl(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ text


def test_text_one_post_a_line(tmp_path: Path) -> None:
    path = tmp_path / "diary.txt"
    path.write_bytes(b"first post\r\n\r\n   \nsecond  post \nRT @a: b\nno newline at the end")
    posts = _text(path)
    assert [(p.post_id, p.text) for p in posts] == [
        ("1", "first post"),
        ("4", "second  post "),
        ("5", "RT @a: b"),
        ("6", "no newline at the end"),
    ]
    assert {(p.account, p.platform) for p in posts} == {("diary", "text")}
    assert [p.kind for p in posts] == [Kind.ORIGINAL, Kind.ORIGINAL, Kind.RETWEET, Kind.ORIGINAL]
    assert {p.account for p in _text(path, account="me")} == {"me"}


def test_text_that_is_not_utf8(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "old.txt"
    path.write_bytes("déjà vu\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="tweetlm"):
        assert [p.text for p in _text(path)] == ["déjà vu"]
    assert "cp1252" in caplog.text
    path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(SourceFormatError, match="is not a UTF-8 text file"):
        _text(path)


# ------------------------------------------------------------------------------------- streaming

ROW = "A post long enough to make the file big, and quoted, so parsing costs something real. " * 3


def _big_csv(path: Path, rows: int) -> None:
    path.write_text("id,text\n" + "".join(f'{i},"{ROW}{i}"\n' for i in range(rows)), encoding="utf-8")


def _big_jsonl(path: Path, rows: int) -> None:
    path.write_text("".join(json.dumps({"id": i, "text": ROW}) + "\n" for i in range(rows)), encoding="utf-8")


def _big_text(path: Path, rows: int) -> None:
    path.write_text("".join(f"{ROW}{i}\n" for i in range(rows)), encoding="utf-8")


@pytest.mark.parametrize(
    ("write", "read", "suffix"),
    [
        (_big_csv, csv_source.read, ".csv"),
        (_big_jsonl, jsonl_source.read, ".jsonl"),
        (_big_text, text_source.read, ".txt"),
    ],
)
def test_readers_stream_with_flat_memory(
    tmp_path: Path, write: Callable[[Path, int], None], read: Callable[..., Any], suffix: str
) -> None:
    path = tmp_path / f"big{suffix}"
    rows = 12_000
    write(path, rows)
    size = path.stat().st_size
    assert size > 3_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in read(path, ReadOptions()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < size / 4, f"peak {peak:,} bytes reading a {size:,} byte file: not streaming"
