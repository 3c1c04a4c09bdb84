"""The X archive source, on archives built from the real sample export (see tests/archives.py)."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.archives import (
    SAMPLE_TWEETS_JS,
    TRUNCATION_LINK,
    archive_files,
    build_archive_dir,
    build_archive_zip,
    build_lying_zip,
    build_malformed_archive,
    build_not_archive_zip,
    build_zip_slip,
    note_tweet_case,
    parse_js,
    sample_tweets,
    sample_user_name,
    write_zip,
)
from tests.conftest import ARCHIVE_SAMPLE
from tweetlm.errors import InputError, SourceFormatError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources import ReadOptions, resolve
from tweetlm.sources.x_archive import detect, read, tweet_to_post

TWEETS = sample_tweets() if SAMPLE_TWEETS_JS.is_file() else []  # without ../shared, its tests skip
BY_ID = {t["id_str"]: t for t in TWEETS}


def _expected_kind(tweet: dict[str, Any]) -> Kind:
    """Classified from the sample JSON on its own, the way the export's fields say."""
    if tweet["full_text"].startswith("RT @"):
        return Kind.RETWEET
    if tweet.get("in_reply_to_status_id_str"):
        return Kind.REPLY
    if tweet.get("quoted_status_id_str") or tweet.get("quoted_status_permalink"):
        return Kind.QUOTE
    return Kind.ORIGINAL


EXPECTED_KINDS = Counter(_expected_kind(t) for t in TWEETS)


def _read(path: Path, **options: Any) -> list[Post]:
    return list(read(path, ReadOptions(**options)))


def _summary(posts: list[Post]) -> list[tuple[str, str, str, Kind, str | None]]:
    return [(p.account, p.post_id, p.text, p.kind, p.reply_to) for p in posts]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> list[Post]:
    return _read(build_archive_zip(tmp_path_factory.mktemp("zip")))


@pytest.mark.shared
def test_the_sample_is_what_the_tests_expect() -> None:
    assert len(TWEETS) == 28
    assert sample_user_name() == "darkliquid"
    assert EXPECTED_KINDS[Kind.RETWEET] == 1
    assert EXPECTED_KINDS[Kind.REPLY] > EXPECTED_KINDS[Kind.ORIGINAL] > 0


@pytest.mark.shared
def test_zip_yields_every_tweet_classified(baseline: list[Post]) -> None:
    assert [p.post_id for p in baseline] == [t["id_str"] for t in TWEETS]
    assert Counter(p.kind for p in baseline) == EXPECTED_KINDS
    assert {p.account for p in baseline} == {"darkliquid"}
    assert {p.platform for p in baseline} == {"x"}
    for post in baseline:
        tweet = BY_ID[post.post_id]
        assert post.text == tweet["full_text"]  # as published: entities are not unescaped here
        assert post.raw == tweet
        assert post.lang == tweet["lang"]
        assert post.likes == int(tweet["favorite_count"]) and isinstance(post.likes, int)
        assert post.reposts == int(tweet["retweet_count"]) and isinstance(post.reposts, int)
        assert post.created_at is not None and post.created_at.tzinfo == timezone.utc
        assert post.created_at == datetime.strptime(tweet["created_at"], "%a %b %d %H:%M:%S %z %Y")


@pytest.mark.shared
def test_text_keeps_html_entities(baseline: list[Post]) -> None:
    escaped = [p for p in baseline if "&amp;" in BY_ID[p.post_id]["full_text"]]
    assert escaped and all("&amp;" in p.text for p in escaped)


@pytest.mark.shared
def test_replies_name_who_was_replied_to_and_self_replies_stay_replies(baseline: list[Post]) -> None:
    replies = [p for p in baseline if p.kind is Kind.REPLY]
    assert all(p.reply_to == BY_ID[p.post_id]["in_reply_to_screen_name"] for p in replies)
    threads = [p for p in replies if p.reply_to == "darkliquid"]
    assert len(threads) == sum(t.get("in_reply_to_screen_name") == "darkliquid" for t in TWEETS) > 0
    assert all(p.reply_to is None for p in baseline if p.kind is not Kind.REPLY)


@pytest.mark.shared
def test_urls_and_media_come_from_the_entities(baseline: list[Post]) -> None:
    for post in baseline:
        tweet = BY_ID[post.post_id]
        assert post.urls == tuple(Url(u["url"], u["expanded_url"]) for u in tweet["entities"]["urls"])
        media = (tweet.get("extended_entities") or tweet["entities"]).get("media", [])
        assert post.media == tuple(m["media_url_https"] for m in media)
    assert any(p.urls for p in baseline) and any(p.media for p in baseline)


VARIANTS = {
    "zip-top-folder": lambda d: build_archive_zip(d, top_folder="twitter-2023-07-02-0123abcd"),
    "zip-split": lambda d: build_archive_zip(d, split=True),
    "folder": lambda d: build_archive_dir(d),
    "folder-split": lambda d: build_archive_dir(d, split=True),
    "folder-old-names": lambda d: build_archive_dir(d, old_names=True),
    "folder-old-names-split": lambda d: build_archive_dir(d, old_names=True, split=True),
    "folder-top-folder": lambda d: build_archive_dir(d, top_folder="twitter-2023-07-02-0123abcd"),
    "data-folder": lambda d: build_archive_dir(d) / "data",
    "bare-tweets-js": lambda d: build_archive_dir(d) / "data" / "tweets.js",
    "account-js-only": lambda d: build_archive_zip(d, manifest=False, account_js=True),
    "the-sample-itself": lambda d: ARCHIVE_SAMPLE,
}


@pytest.mark.shared
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_layout_reads_the_same(variant: str, tmp_path: Path, baseline: list[Post]) -> None:
    path = VARIANTS[variant](tmp_path)
    assert detect(path)
    assert resolve(path, None).name == "x-archive"
    assert _summary(_read(path)) == _summary(baseline)


@pytest.mark.shared
def test_split_parts_use_their_own_globals(tmp_path: Path) -> None:
    files = archive_files(split=True)
    assert files["data/tweets-part2.js"].startswith(b"window.YTD.tweets.part2 = [")
    posts = _read(write_zip(tmp_path / "split.zip", files))
    assert sorted(p.post_id for p in posts) == sorted(BY_ID)


@pytest.mark.shared
def test_account_option_overrides_the_archive(tmp_path: Path) -> None:
    posts = _read(build_archive_zip(tmp_path), account="someone_else", platform="x-test")
    assert {(p.account, p.platform) for p in posts} == {("someone_else", "x-test")}


@pytest.mark.shared
def test_bare_tweets_js_without_handle_asks_for_account(tmp_path: Path) -> None:
    bare = tmp_path / "tweets.js"
    shutil.copy(SAMPLE_TWEETS_JS, bare)
    with pytest.raises(InputError, match="--account"):
        _read(bare)
    assert len(_read(bare, account="me")) == len(TWEETS)


@pytest.mark.shared
@pytest.mark.parametrize("note_mentions", [True, False])
def test_note_tweet_replaces_the_truncated_text(tmp_path: Path, note_mentions: bool) -> None:
    case = note_tweet_case(note_mentions)
    files = archive_files(note_tweet=True, note_mentions=note_mentions)
    tweets_js = parse_js(files["data/tweets.js"])
    truncated = next(e["tweet"] for e in tweets_js if e["tweet"]["id_str"] == case.tweet_id)
    assert truncated["full_text"] == case.truncated and case.truncated.endswith("… " + TRUNCATION_LINK)

    posts = {p.post_id: p for p in _read(write_zip(tmp_path / "notes.zip", files))}
    post = posts[case.tweet_id]
    assert post.text == case.full
    assert post.kind is Kind.REPLY  # the i/web/status link to itself is no quote
    assert all(url.short != TRUNCATION_LINK for url in post.urls)
    assert post.raw is not None and post.raw["noteTweet"]["core"]["text"] == case.note_text
    assert all(p.text == BY_ID[i]["full_text"] for i, p in posts.items() if i != case.tweet_id)


@pytest.mark.shared
def test_truncated_text_stays_when_no_note_matches(tmp_path: Path) -> None:
    case = note_tweet_case()
    files = archive_files(note_tweet=True)
    files["data/note-tweet.js"] = b"window.YTD.note_tweet.part0 = []"
    post = next(p for p in _read(write_zip(tmp_path / "a.zip", files)) if p.post_id == case.tweet_id)
    assert post.text == case.truncated


@pytest.mark.shared
def test_quotes_are_found_by_field_or_status_link() -> None:
    original = next(t for t in TWEETS if _expected_kind(t) is Kind.ORIGINAL and t["entities"]["urls"])
    linked = json.loads(json.dumps(original))
    linked["entities"]["urls"][0]["expanded_url"] = "https://x.com/someone/status/1234567890"
    assert tweet_to_post(linked, account="a").kind is Kind.QUOTE
    assert tweet_to_post({**original, "quoted_status_id_str": "1"}, account="a").kind is Kind.QUOTE
    permalink = {"url": "https://t.co/x", "expanded": "https://twitter.com/a/status/1", "display": "..."}
    assert tweet_to_post({**original, "quoted_status_permalink": permalink}, account="a").kind is Kind.QUOTE
    assert tweet_to_post(original, account="a").kind is Kind.ORIGINAL


@pytest.mark.shared
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    zip_path = build_zip_slip(tmp_path / "in")
    with pytest.raises(InputError, match=re.escape("'../evil.js'")):
        _read(zip_path)
    assert not list(tmp_path.rglob("evil.js"))


def test_zip_without_tweets_js_says_what_it_holds(tmp_path: Path) -> None:
    zip_path = build_not_archive_zip(tmp_path)
    message = f"{zip_path} is not an X archive: no data/tweets.js inside (found: notes.txt, photos/cat.jpg, tweets.js)"
    with pytest.raises(InputError, match=re.escape(message)):
        _read(zip_path)
    assert detect(zip_path)  # a zip is for this source to judge, with that message


def test_folder_without_archive(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    assert not detect(tmp_path)
    with pytest.raises(InputError, match="no data/tweets.js inside"):
        _read(tmp_path)


def test_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    fake = tmp_path / "archive.zip"
    fake.write_bytes(b"this is not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        _read(fake)


@pytest.mark.shared
def test_malformed_tweets_js_names_file_line_and_column(tmp_path: Path) -> None:
    folder = build_malformed_archive(tmp_path)
    tweets_js = folder / "data" / "tweets.js"
    with pytest.raises(json.JSONDecodeError) as expected:
        parse_js(tweets_js.read_bytes())
    where = f"{tweets_js}:{expected.value.lineno}:{expected.value.colno}: malformed JSON"
    with pytest.raises(SourceFormatError, match=re.escape(where)) as error:
        _read(folder)
    assert "\n" not in str(error.value)


@pytest.mark.shared
@pytest.mark.parametrize("build", [build_archive_zip, build_archive_dir])
def test_members_over_max_bytes_are_refused(tmp_path: Path, build: Any) -> None:
    path = build(tmp_path)
    with pytest.raises(InputError, match="1,000"):
        _read(path, max_bytes=1000)


@pytest.mark.shared
def test_a_zip_that_lies_about_sizes_is_refused(tmp_path: Path) -> None:
    path = build_lying_zip(tmp_path, declared_size=500)
    limit = SAMPLE_TWEETS_JS.stat().st_size // 2  # the manifest fits, tweets.js does not
    with pytest.raises(InputError, match="cannot read data/tweets.js"):
        _read(path, max_bytes=limit)


@pytest.mark.shared
def test_posts_are_utc_even_from_other_offsets(tmp_path: Path) -> None:
    tweet = {**TWEETS[0], "created_at": "Fri Feb 24 08:58:32 +0200 2023"}
    created = tweet_to_post(tweet, account="a").created_at
    assert created == datetime(2023, 2, 24, 6, 58, 32, tzinfo=timezone.utc) and created.tzinfo == timezone.utc
