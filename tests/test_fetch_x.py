"""X API v2 fetching against a local server replaying recorded responses (tests/recordings/x)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tweetlm.errors import FetchError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources.online.fetch import FetchOptions, FetchSummary, fetch, open_source, plan
from tweetlm.sources.online.http import RetryPolicy
from tweetlm.store import Store

RECORDINGS = Path(__file__).parent / "recordings" / "x"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAFakeBearerTokenForTests%3Dx9"
USER_ID = "2244994945"
TIMELINE = f"/2/users/{USER_ID}/tweets"
TOKEN_2 = "7140dibdnow9c7btw3w3y5b6jqjnk3k4g5zkmfkvqwa"
TOKEN_3 = "7140dibdnow9c7btw3w3y5b6jqjnk3k4g5zkmfkvqwb"
FAST = RetryPolicy(timeout=5.0, retries=2, backoff=0.001, max_backoff=0.01, rate_limit_waits=2, max_rate_wait=5.0)


def recording(name: str) -> str:
    return (RECORDINGS / f"{name}.json").read_text(encoding="utf-8")


def as_json(name: str, status: int = 200) -> Response:
    return Response(recording(name), status=status, content_type="application/json")


@dataclass
class Replay:
    """The X API as the recordings describe it: three pages of history, optionally one newer post."""

    newer: bool = False
    cut_at: str | None = None  # the pagination token whose page the server breaks off
    garbage_at: str | None = None  # the pagination token whose page is an HTML error page
    ignore_exclude: bool = False

    def authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def user(self, request: Request) -> Response:
        return as_json("user") if self.authorized(request) else as_json("unauthorized", 401)

    def timeline(self, request: Request) -> Response:
        if not self.authorized(request):
            return as_json("unauthorized", 401)
        args = request.args
        token = args.get("pagination_token")
        if token is not None and token == self.cut_at:
            broken = Response('{"data": [{"id": "17900', content_type="application/json")
            broken.headers["Content-Length"] = "4096"  # the connection drops mid-body
            return broken
        if token is not None and token == self.garbage_at:
            return Response("<html>upstream error</html>", status=200, content_type="text/html")
        if self.ignore_exclude or "replies" not in args.get("exclude", ""):
            return as_json("tweets_with_replies")
        if args.get("since_id"):
            newer = self.newer and args["since_id"] < "1790000000000000010"
            return as_json("tweets_newer" if newer else "tweets_empty")
        if token == TOKEN_3:
            return as_json("tweets_page3")
        if token == TOKEN_2 or args.get("until_id") == "1790000000000000007":
            return as_json("tweets_page2")
        return as_json("tweets_page1")


@pytest.fixture
def replay(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Replay:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    state = Replay()
    httpserver.expect_request("/2/users/by/username/adaexample").respond_with_handler(state.user)
    httpserver.expect_request(TIMELINE).respond_with_handler(state.timeline)
    return state


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as opened:
        yield opened


def run(
    server: HTTPServer,
    store: Store,
    *,
    limit: int | None = None,
    notes: list[str] | None = None,
    include_replies: bool = False,
    include_reposts: bool = False,
) -> FetchSummary:
    options = FetchOptions(
        base_url=server.url_for("/"),
        policy=FAST,
        notify=None if notes is None else notes.append,
        include_replies=include_replies,
        include_reposts=include_reposts,
    )
    return fetch(open_source("x", "@adaexample", options), store, limit=limit)


def timeline_requests(server: HTTPServer) -> list[dict[str, str]]:
    return [dict(request.args) for request, _ in server.log if request.path == TIMELINE]


def posts(store: Store) -> dict[str, Post]:
    return {p.post_id: p for p in store.iter_posts("AdaExample", "x")}


def test_pages_through_the_whole_timeline(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store)

    assert (summary.pages, summary.read, summary.kept, summary.added) == (3, 8, 7, 7)
    assert summary.dropped == {"no text": 1}
    assert summary.account == "AdaExample"  # the spelling X returns, not the one typed
    assert summary.complete and summary.backfilled
    first, second, third = timeline_requests(httpserver)
    assert first["max_results"] == "100"
    assert first["exclude"] == "retweets,replies"
    assert set(first["tweet.fields"].split(",")) >= {
        "created_at",
        "public_metrics",
        "entities",
        "lang",
        "referenced_tweets",
        "note_tweet",
        "in_reply_to_user_id",
        "conversation_id",
    }
    assert "pagination_token" not in first and "since_id" not in first
    assert second["pagination_token"] == TOKEN_2 and third["pagination_token"] == TOKEN_3
    request, _ = httpserver.log[1]
    assert request.headers["User-Agent"].startswith("tweetlm/")

    stored = posts(store)
    assert len(stored) == 7 and "1790000000000000005" not in stored  # the one without text
    long = stored["1790000000000000009"]
    assert len(long.text) > 280 and long.text.endswith("Details: https://t.co/AbCdEf1234")  # note_tweet
    assert long.urls == (Url("https://t.co/AbCdEf1234", "https://ada.example.org/notes/writing-tools"),)
    assert (long.likes, long.reposts, long.lang) == (87, 12, "en")
    assert long.created_at == datetime(2024, 5, 13, 18, 2, 11, tzinfo=timezone.utc)
    assert long.raw is not None and long.raw["id"] == "1790000000000000009"
    quote = stored["1790000000000000007"]
    assert quote.kind is Kind.QUOTE
    assert quote.media == ("https://pbs.twimg.com/media/FAKEchart001.jpg",)
    sparse = stored["1790000000000000004"]  # default fields only: no date, metrics or language
    assert (sparse.created_at, sparse.likes, sparse.lang, sparse.kind) == (None, None, None, Kind.ORIGINAL)


def test_second_run_asks_only_for_newer_posts(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store)
    replay.newer = True
    httpserver.clear_log()

    summary = run(httpserver, store)

    (request,) = timeline_requests(httpserver)
    assert request["since_id"] == "1790000000000000009"
    assert "until_id" not in request and "pagination_token" not in request
    assert (summary.read, summary.added) == (1, 1)
    assert summary.complete and not summary.backfilled
    assert "1790000000000000010" in posts(store)


def test_rate_limit_then_success(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    httpserver.expect_oneshot_request(TIMELINE).respond_with_response(
        Response(
            recording("too_many_requests"),
            status=429,
            content_type="application/json",
            headers={
                "x-rate-limit-limit": "900",
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(int(time.time()) - 1),
            },
        )
    )
    notes: list[str] = []
    summary = run(httpserver, store, notes=notes)
    assert summary.added == 7
    assert any("rate limit reached: waiting" in note for note in notes)


def test_server_error_then_success(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    httpserver.expect_oneshot_request(TIMELINE).respond_with_response(as_json("server_error", 503))
    notes: list[str] = []
    assert run(httpserver, store, notes=notes).added == 7
    assert notes == ["X API answered HTTP 503; retrying in 0.001 s (1/2)"]


def test_disconnect_mid_run_keeps_page_one_and_the_next_run_fills_the_rest(
    httpserver: HTTPServer, replay: Replay, store: Store
) -> None:
    replay.cut_at = TOKEN_2
    with pytest.raises(FetchError, match=r"broke .*\(3 new posts from this run are stored; the next run continues"):
        run(httpserver, store)
    assert set(posts(store)) == {"1790000000000000009", "1790000000000000008", "1790000000000000007"}
    assert store.fetch_state("x", "AdaExample")["segments"] == [{"floor": None, "cursor": "1790000000000000007"}]

    replay.cut_at = None
    httpserver.clear_log()
    summary = run(httpserver, store)

    assert summary.added == 4 and summary.skipped == 0
    assert len(posts(store)) == 7
    newer, resumed, last = timeline_requests(httpserver)
    assert newer["since_id"] == "1790000000000000009"  # first: anything new since page 1
    assert resumed["until_id"] == "1790000000000000007" and "since_id" not in resumed  # then the rest
    assert last["pagination_token"] == TOKEN_3
    assert summary.complete
    assert store.fetch_state("x", "AdaExample")["segments"] == []


def test_limit_stops_and_the_next_run_continues(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store, limit=3)
    assert (summary.read, summary.limited, summary.complete) == (3, True, False)
    assert timeline_requests(httpserver)[0]["max_results"] == "5"  # X's smallest page
    assert run(httpserver, store).added == 4


def test_replies_are_kept_only_when_asked(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store, include_replies=True)
    assert timeline_requests(httpserver)[0]["exclude"] == "retweets"
    stored = posts(store)
    assert stored["1790000000000000022"].kind is Kind.REPLY
    assert stored["1790000000000000022"].reply_to == "grace_h"
    assert stored["1790000000000000021"].reply_to == "AdaExample"  # a thread of one's own
    assert summary.dropped == {}


def test_replies_a_server_sends_anyway_are_dropped(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    replay.ignore_exclude = True
    summary = run(httpserver, store)
    assert summary.dropped == {"reply": 1}
    assert set(posts(store)) == {"1790000000000000021"}


def test_exclude_follows_the_flags(store: Store) -> None:
    def exclude(replies: bool, reposts: bool) -> str | None:
        options = FetchOptions(base_url="https://api.x.com", include_replies=replies, include_reposts=reposts)
        return plan(open_source("x", "jack", options), store)[1].params.get("exclude")

    assert exclude(replies=False, reposts=False) == "retweets,replies"
    assert exclude(replies=True, reposts=False) == "retweets"
    assert exclude(replies=False, reposts=True) == "replies"
    assert exclude(replies=True, reposts=True) is None


def test_401_says_how_to_get_a_token(
    httpserver: HTTPServer, replay: Replay, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", "not-the-right-token-123")
    with pytest.raises(FetchError) as info:
        run(httpserver, store)
    message = str(info.value)
    assert "401" in message and "developer portal" in message and "X_BEARER_TOKEN" in message
    assert "not-the-right-token-123" not in message
    assert len(httpserver.log) == 1  # no retrying a refused token


def test_403_client_not_enrolled(httpserver: HTTPServer, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    httpserver.expect_request("/2/users/by/username/adaexample").respond_with_json(
        {
            "client_id": "12345678",
            "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use keys and tokens "
            "from a Twitter developer App that is attached to a Project.",
            "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
            "title": "Client Forbidden",
            "required_enrollment": "Appropriate Level of API Access",
            "reason": "client-not-enrolled",
            "type": "https://api.twitter.com/2/problems/client-forbidden",
        },
        status=403,
    )
    with pytest.raises(FetchError, match=r"HTTP 403\): .*developer portal.*X said: Client Forbidden"):
        run(httpserver, store)


@pytest.mark.parametrize(
    ("name", "message"),
    [("nosuchuser_xyz", r"no X account @nosuchuser_xyz \(Could not find user"), ("gone_account", "is suspended")],
)
def test_unknown_or_suspended_account(
    httpserver: HTTPServer, store: Store, monkeypatch: pytest.MonkeyPatch, name: str, message: str
) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    body = "user_not_found" if name == "nosuchuser_xyz" else "user_suspended"
    httpserver.expect_request(f"/2/users/by/username/{name}").respond_with_response(as_json(body))
    options = FetchOptions(base_url=httpserver.url_for("/"), policy=FAST)
    with pytest.raises(FetchError, match=message):
        fetch(open_source("x", name, options), store)


def test_missing_token_and_bad_names_fail_before_any_request(
    httpserver: HTTPServer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    options = FetchOptions(base_url=httpserver.url_for("/"), policy=FAST)
    with pytest.raises(FetchError, match="X_BEARER_TOKEN is not set: create an app in the X developer portal"):
        fetch(open_source("x", "jack", options), store)
    with pytest.raises(FetchError, match="not an X username"):
        open_source("x", "not a name!", options)
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    with pytest.raises(FetchError, match="refusing to send X_BEARER_TOKEN over plain http"):
        fetch(open_source("x", "jack", FetchOptions(base_url="http://api.example.com")), store)
    assert httpserver.log == []


def test_malformed_json_keeps_earlier_pages(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    replay.garbage_at = TOKEN_2
    with pytest.raises(FetchError, match=r"not JSON .*\(3 new posts from this run are stored"):
        run(httpserver, store)
    assert len(posts(store)) == 3


def test_the_store_never_holds_the_token(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store)
    store.close()
    files = [p for p in store.path.parent.rglob("*") if p.is_file()]
    assert files and all(TOKEN.encode() not in p.read_bytes() for p in files)
