"""Mastodon fetching against a local server that serves the recorded statuses
(tests/recordings/mastodon) with the API's paging rules, and the HTML-to-text conversion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tweetlm.errors import FetchError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources.online.fetch import FetchOptions, FetchSummary, fetch, open_source
from tweetlm.sources.online.http import RetryPolicy
from tweetlm.sources.online.mastodon import html_to_text
from tweetlm.store import Store

RECORDINGS = Path(__file__).parent / "recordings" / "mastodon"
ACCOUNT_ID = "109000000000000001"
LOOKUP = "/api/v1/accounts/lookup"
STATUSES = f"/api/v1/accounts/{ACCOUNT_ID}/statuses"
ACCOUNT = "ada@social.example"
PAGE = 3  # this test server's page size, so the recordings' three pages come back as three pages
FAST = RetryPolicy(timeout=5.0, retries=2, backoff=0.001, max_backoff=0.01, rate_limit_waits=2, max_rate_wait=5.0)


def recording(name: str) -> Any:
    return json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8"))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


@dataclass
class Replay:
    """A Mastodon instance holding the recorded statuses: newest first, `max_id`/`since_id`/`limit` as
    documented, and a `Link` header pointing at the next and previous pages."""

    base: str
    newer: bool = False
    cut_at: str | None = None  # the max_id whose page the server breaks off
    unfiltered: bool = False  # ignore exclude_reblogs and exclude_replies, as an old server might

    def lookup(self, request: Request) -> Response:
        if request.args.get("acct") == "ada":
            return json_response(recording("account"))
        return json_response(recording("not_found"), 404)

    def statuses(self, request: Request) -> Response:
        args = request.args
        if args.get("max_id") is not None and args.get("max_id") == self.cut_at:
            broken = Response("[{", content_type="application/json")
            broken.headers["Content-Length"] = "4096"
            return broken
        if self.unfiltered or args.get("exclude_reblogs") == "false" or args.get("exclude_replies") == "false":
            return json_response([] if "max_id" in args else recording("statuses_unfiltered"))
        timeline = recording("statuses_page1") + recording("statuses_page2") + recording("statuses_page3")
        if self.newer:
            timeline = recording("statuses_newer") + timeline
        if "max_id" in args:
            timeline = [s for s in timeline if int(s["id"]) < int(args["max_id"])]
        if "since_id" in args:
            timeline = [s for s in timeline if int(s["id"]) > int(args["since_id"])]
        page = timeline[: min(PAGE, int(args.get("limit", 20)))]
        headers = {}
        if page:
            url = f"{self.base}{STATUSES}"
            headers["Link"] = f'<{url}?max_id={page[-1]["id"]}>; rel="next", <{url}?min_id={page[0]["id"]}>; rel="prev"'
        return json_response(page, headers=headers)


@pytest.fixture
def replay(httpserver: HTTPServer) -> Replay:
    state = Replay(httpserver.url_for("").rstrip("/"))
    httpserver.expect_request(LOOKUP).respond_with_handler(state.lookup)
    httpserver.expect_request(STATUSES).respond_with_handler(state.statuses)
    return state


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as opened:
        yield opened


def run(
    server: HTTPServer,
    store: Store,
    account: str = "@ada@social.example",
    limit: int | None = None,
    include_replies: bool = False,
    include_reposts: bool = False,
) -> FetchSummary:
    options = FetchOptions(
        base_url=server.url_for("/"), policy=FAST, include_replies=include_replies, include_reposts=include_reposts
    )
    return fetch(open_source("mastodon", account, options), store, limit=limit)


def status_requests(server: HTTPServer) -> list[dict[str, str]]:
    return [dict(request.args) for request, _ in server.log if request.path == STATUSES]


def posts(store: Store) -> dict[str, Post]:
    return {p.post_id: p for p in store.iter_posts(ACCOUNT, "mastodon")}


def test_pages_through_the_statuses(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store)

    assert (summary.pages, summary.read, summary.kept, summary.added) == (4, 7, 6, 6)
    assert summary.dropped == {"no text": 1}  # the image-only status
    assert summary.account == ACCOUNT and summary.complete
    requests = status_requests(httpserver)
    assert requests[0] == {"limit": "40", "exclude_reblogs": "true", "exclude_replies": "true"}
    assert [r.get("max_id") for r in requests] == [
        None,
        "112400000000000007",
        "112400000000000004",
        "112400000000000003",
    ]
    assert dict(httpserver.log[0][0].args) == {"acct": "ada"}

    stored = posts(store)
    linked = stored["112400000000000009"]
    assert linked.text == (
        "Wrote up the notes at last: ada.example.org/notes/cafe-wri…\n\nThanks @grace for the push. #writing"
    )
    assert linked.urls == (
        Url("ada.example.org/notes/cafe-wri…", "https://ada.example.org/notes/cafe-writing-sessions"),
    )
    assert (linked.likes, linked.reposts, linked.lang) == (87, 12, "en")
    assert linked.created_at == datetime(2024, 5, 13, 18, 2, 11, 123000, tzinfo=timezone.utc)
    assert linked.raw is not None and linked.raw["content"].startswith("<p>Wrote up")
    warned = stored["112400000000000007"]
    assert warned.text == "CW: politics, long\nLine one\nline two & three <ok> — it's fine"
    thread = stored["112400000000000008"]  # a reply to oneself: Mastodon keeps it with exclude_replies
    assert (thread.kind, thread.reply_to) == (Kind.REPLY, ACCOUNT)
    assert stored["112400000000000006"].media == (
        "https://files.social.example/media_attachments/files/112/400/original/coffee.jpg",
    )
    sparse = stored["112400000000000004"]  # no counts, language or media list
    assert (sparse.text, sparse.likes, sparse.lang, sparse.media) == ("Guten Morgen aus Berlin.", None, None, ())
    assert stored["112400000000000003"].text == "First post here.\n\nHello & welcome."


def test_second_run_asks_with_since_id(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store)
    replay.newer = True
    httpserver.clear_log()

    summary = run(httpserver, store)

    first, second = status_requests(httpserver)
    assert first["since_id"] == "112400000000000009" and "max_id" not in first
    assert second == {**first, "max_id": "112400000000000010"}  # the Link header's next page: empty
    assert (summary.read, summary.added) == (1, 1)


def test_disconnect_then_resume_adds_only_the_missing_posts(
    httpserver: HTTPServer, replay: Replay, store: Store
) -> None:
    replay.cut_at = "112400000000000007"
    with pytest.raises(FetchError, match=r"broke .*\(3 new posts from this run are stored"):
        run(httpserver, store)
    assert store.fetch_state("mastodon", ACCOUNT)["segments"] == [{"floor": None, "cursor": "112400000000000007"}]

    replay.cut_at = None
    httpserver.clear_log()
    summary = run(httpserver, store)

    assert summary.added == 3 and len(posts(store)) == 6
    requests = status_requests(httpserver)
    assert requests[0]["since_id"] == "112400000000000009"
    assert requests[1]["max_id"] == "112400000000000007" and "since_id" not in requests[1]


def test_limit_then_continue(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    summary = run(httpserver, store, limit=2)
    assert (summary.read, summary.limited, summary.complete) == (2, True, False)
    assert status_requests(httpserver)[0]["limit"] == "2"

    summary = run(httpserver, store)
    assert summary.added == 4 and summary.complete
    assert len(posts(store)) == 6


def test_reblogs_and_replies_to_others_are_dropped(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    replay.unfiltered = True  # the server ignores exclude_reblogs/exclude_replies: the client drops them
    summary = run(httpserver, store)
    assert summary.dropped == {"repost": 1, "reply": 1}
    assert set(posts(store)) == {"112400000000000009"}


def test_reblogs_and_replies_are_kept_when_asked(httpserver: HTTPServer, replay: Replay, store: Store) -> None:
    run(httpserver, store, include_replies=True, include_reposts=True)
    assert status_requests(httpserver)[0]["exclude_reblogs"] == "false"
    stored = posts(store)
    boost = stored["112400000000000020"]
    assert (boost.kind, boost.text) == (Kind.RETWEET, "A thing Grace wrote.")
    reply = stored["112400000000000021"]
    assert (reply.kind, reply.reply_to) == (Kind.REPLY, "grace@mastodon.example")
    assert reply.text == "@grace Yes, noticeably, on long documents."


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, {"error": "Record not found"}, r"no Mastodon account @nobody@social.example \(Record not found\)"),
        (410, None, r"@nobody@social.example is suspended or gone"),
        (401, {"error": "This API requires an authenticated user"}, "lets only logged-in users read"),
    ],
)
def test_account_errors(
    httpserver: HTTPServer, store: Store, status: int, body: dict[str, str] | None, message: str
) -> None:
    httpserver.expect_request(LOOKUP).respond_with_response(
        json_response(body, status) if body else Response("", status=status)
    )
    with pytest.raises(FetchError, match=message):
        run(httpserver, store, account="@nobody@social.example")


def test_account_needs_an_instance() -> None:
    with pytest.raises(FetchError, match="write it with its instance, like @user@mastodon.social"):
        open_source("mastodon", "@ada", FetchOptions())
    source = open_source("mastodon", "ada@Social.Example", FetchOptions())
    assert (source.account, source.base_url) == (ACCOUNT, "https://social.example")  # type: ignore[attr-defined]


# ---- HTML to text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>one</p><p>two</p>", "one\n\ntwo"),
        ("<p>a<br>b<br/>c</p>", "a\nb\nc"),
        ("<p>&lt;tag&gt; &amp; &quot;q&quot; &#39;s&#39; caf&eacute;</p>", "<tag> & \"q\" 's' café"),
        ('<p><a href="https://m.example/tags/x" class="mention hashtag" rel="tag">#<span>x</span></a></p>', "#x"),
        ('<p class="quote-inline">RE: <a href="https://a.example/1">https://a.example/1</a></p><p>mine</p>', "mine"),
        ("<p>stray</span> end</p>", "stray end"),
        ("<blockquote><p>quoted</p></blockquote><p>reply</p>", "quoted\n\nreply"),
        ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
        ("<pre>  keep\n  spaces</pre>", "keep\n  spaces"),
        ("<p>line\none</p>", "line one"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html)[0] == text


def test_html_links_keep_their_shown_text_and_target() -> None:
    html = (
        '<p>see <a href="https://example.org/a/very/long/path" rel="nofollow noopener noreferrer" target="_blank">'
        '<span class="invisible">https://</span><span class="ellipsis">example.org/a/very</span>'
        '<span class="invisible">/long/path</span></a> and <a href="https://short.example">short.example</a></p>'
    )
    text, urls = html_to_text(html)
    assert text == "see example.org/a/very… and short.example"
    assert urls == (
        Url("example.org/a/very…", "https://example.org/a/very/long/path"),
        Url("short.example", "https://short.example"),
    )


def test_a_server_repeating_the_same_page_does_not_loop(httpserver: HTTPServer, store: Store) -> None:
    httpserver.expect_request(LOOKUP).respond_with_json(recording("account"))
    httpserver.expect_request(STATUSES).respond_with_json(recording("statuses_page3"))  # ignores max_id
    summary = run(httpserver, store)
    assert (summary.pages, summary.added, summary.complete) == (2, 1, True)
