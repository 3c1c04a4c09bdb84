"""Bluesky getAuthorFeed fetching against a local server replaying recorded responses
(tests/recordings/bluesky)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from pytest_httpserver import HTTPServer

from tests.conftest import CURSOR_2, CURSOR_3, DID, FEED, HANDLE, Replay, as_json
from tweetlm.errors import FetchError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources.online.fetch import FetchOptions, FetchSummary, fetch, open_source
from tweetlm.sources.online.http import RetryPolicy
from tweetlm.store import Store

FAST = RetryPolicy(timeout=5.0, retries=2, backoff=0.001, max_backoff=0.01, rate_limit_waits=2, max_rate_wait=5.0)


def uri(rkey: str) -> str:
    return f"at://{DID}/app.bsky.feed.post/{rkey}"


@pytest.fixture
def replay(httpserver: HTTPServer) -> Replay:
    state = Replay()
    httpserver.expect_request(FEED).respond_with_handler(state.feed)
    return state


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as opened:
        yield opened


def run(
    server: HTTPServer,
    store: Store,
    account: str = HANDLE,
    include_replies: bool = False,
    include_reposts: bool = False,
) -> FetchSummary:
    options = FetchOptions(
        base_url=server.url_for("/"), policy=FAST, include_replies=include_replies, include_reposts=include_reposts
    )
    return fetch(open_source("bluesky", account, options), store)


def feed_requests(server: HTTPServer) -> list[dict[str, str]]:
    return [dict(request.args) for request, _ in server.log if request.path == FEED]


def posts(store: Store) -> dict[str, Post]:
    return {p.post_id: p for p in store.iter_posts(HANDLE, "bluesky")}


def test_pages_through_the_feed_dropping_reposts(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store, account="@Ada.Example.Social")

    assert (summary.pages, summary.read, summary.kept, summary.added) == (3, 9, 7, 7)
    assert summary.dropped == {"repost": 1, "no text": 1}
    assert summary.complete
    first, second, third = feed_requests(httpserver)
    assert first == {"actor": HANDLE, "limit": "100", "filter": "posts_no_replies"}
    assert second["cursor"] == CURSOR_2 and third["cursor"] == CURSOR_3

    stored = posts(store)
    assert len(stored) == 7
    assert not any("Grace" in p.text for p in stored.values())  # the repost
    linked = stored[uri("3ksz5xmkd2c2a")]
    assert linked.text == "Wrote up the café notes at last: ada.example.org/notes/cafe-…"
    assert linked.urls == (Url("ada.example.org/notes/cafe-…", "https://ada.example.org/notes/cafe-writing-sessions"),)
    assert (linked.likes, linked.reposts, linked.lang, linked.kind) == (87, 12, "en", Kind.ORIGINAL)
    assert linked.created_at == datetime(2024, 5, 13, 18, 2, 11, 123000, tzinfo=timezone.utc)
    assert linked.raw is not None and linked.raw["post"]["uri"] == linked.post_id
    assert stored[uri("3ksz3xmkd2c2b")].kind is Kind.QUOTE
    assert stored[uri("3ksz2xmkd2c2c")].media == (
        "https://cdn.bsky.app/img/feed_fullsize/plain/did:plc:a3dvk2zq6x4mbc7nelwqyi5h/bafkreiimg1@jpeg",
    )
    sparse = stored[uri("3ksy6xmkd2c2e")]  # no createdAt, langs or counts in the record
    assert sparse.created_at == datetime(2024, 5, 9, 12, tzinfo=timezone.utc)  # indexedAt instead
    assert (sparse.lang, sparse.likes, sparse.reposts) == (None, None, None)


def test_second_run_stops_at_the_first_known_post(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store)
    replay.newer = True
    httpserver.clear_log()

    summary = run(httpserver, store)

    assert feed_requests(httpserver) == [{"actor": HANDLE, "limit": "100", "filter": "posts_no_replies"}]
    assert (summary.added, summary.skipped) == (1, 2)
    assert uri("3kt22xmkd2c2z") in posts(store)


def test_disconnect_then_resume_adds_only_the_missing_posts(
    httpserver: HTTPServer, replay: Replay, store: Store
) -> None:
    replay.cut_at = CURSOR_2
    with pytest.raises(FetchError, match=r"broke .*\(3 new posts from this run are stored"):
        run(httpserver, store)
    assert len(posts(store)) == 3
    assert store.fetch_state("bluesky", HANDLE)["segments"] == [{"floor": None, "cursor": CURSOR_2}]

    replay.cut_at = None
    httpserver.clear_log()
    summary = run(httpserver, store)

    assert summary.added == 4
    assert [r.get("cursor") for r in feed_requests(httpserver)] == [None, CURSOR_2, CURSOR_3]
    assert len(posts(store)) == 7 and summary.complete


def test_reposts_are_kept_when_asked(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store, include_reposts=True)
    repost = posts(store)[f"at://{DID}/app.bsky.feed.repost/3ksz5aaaaaa2c"]  # the repost record, not Grace's post
    assert repost.kind is Kind.RETWEET and repost.account == HANDLE


def test_replies(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store, include_replies=True)
    assert feed_requests(httpserver)[0]["filter"] == "posts_with_replies"
    stored = posts(store)
    assert stored[uri("3kt1bxmkd2c2a")].reply_to == "grace.example.social"
    assert stored[uri("3kt1cxmkd2c2b")].reply_to == HANDLE
    assert {p.kind for p in stored.values()} == {Kind.REPLY, Kind.ORIGINAL}


def test_replies_to_others_are_dropped_even_if_the_server_sends_them(
    httpserver: HTTPServer, replay: Replay, store: Store
) -> None:
    replay.ignore_filter = True
    summary = run(httpserver, store)
    assert summary.dropped == {"reply": 1}
    assert uri("3kt1bxmkd2c2a") not in posts(store)
    assert posts(store)[uri("3kt1cxmkd2c2b")].kind is Kind.REPLY  # a thread of one's own stays


def test_rate_limit_then_success(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    headers = {
        "ratelimit-limit": "3000",
        "ratelimit-remaining": "0",
        "ratelimit-policy": "3000;w=300",
        "ratelimit-reset": str(int(time.time()) - 1),
    }
    httpserver.expect_oneshot_request(FEED).respond_with_json(
        {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}, status=429, headers=headers
    )
    assert run(httpserver, store).added == 7


def test_server_error_then_success(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    httpserver.expect_oneshot_request(FEED).respond_with_json(
        {"error": "InternalServerError", "message": "Internal Server Error"}, status=500
    )
    assert run(httpserver, store).added == 7


@pytest.mark.parametrize(
    ("recording", "message"),
    [
        ("profile_not_found", r"no Bluesky account ada.example.social \(Profile not found\): check the handle"),
        ("account_takedown", r"ada.example.social has been taken down .*\(Account has been suspended\)"),
    ],
)
def test_unknown_or_taken_down_account(httpserver: HTTPServer, store: Store, recording: str, message: str) -> None:
    httpserver.expect_request(FEED).respond_with_response(as_json(recording, 400))
    with pytest.raises(FetchError, match=message):
        run(httpserver, store)
    assert len(httpserver.log) == 1


def test_not_a_handle() -> None:
    with pytest.raises(FetchError, match=r"not a Bluesky handle or DID \(did you mean ada.bsky.social\?\)"):
        open_source("bluesky", "ada", FetchOptions())


def test_unexpected_shape(httpserver: HTTPServer, store: Store) -> None:
    httpserver.expect_request(FEED).respond_with_json({"posts": []})
    with pytest.raises(FetchError, match="unexpected feed response"):
        run(httpserver, store)
