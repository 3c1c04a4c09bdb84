"""The shared retrying HTTP client, against a real server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tweetlm import __version__
from tweetlm.errors import FetchError
from tweetlm.sources.online.http import HttpClient, RetryPolicy, reset_wait

FAST = RetryPolicy(timeout=2.0, retries=2, backoff=0.001, max_backoff=0.01, rate_limit_waits=2, max_rate_wait=5.0)
SECRET = "AAAAAAAAAAAAAAAAAAAAAsecret-token-for-tests"


def client(server: HTTPServer, notes: list[str] | None = None, policy: RetryPolicy = FAST) -> HttpClient:
    return HttpClient(
        server.url_for("").rstrip("/"),
        service="Test API",
        policy=policy,
        headers={"Authorization": f"Bearer {SECRET}"},
        secrets=(SECRET,),
        notify=None if notes is None else notes.append,
    )


def test_sends_user_agent_and_returns_json(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ok", query_string="a=1").respond_with_json({"ok": True})
    http = client(httpserver)
    response = http.get("/ok", {"a": "1"})
    assert http.json(response) == {"ok": True}
    request, _ = httpserver.log[0]
    assert request.headers["User-Agent"] == f"tweetlm/{__version__} (+https://github.com/tweetlm)"


def test_waits_out_a_429_then_succeeds(httpserver: HTTPServer) -> None:
    past = str(int(time.time()) - 5)  # a reset already passed: retry after the (tiny) backoff
    httpserver.expect_oneshot_request("/r").respond_with_json(
        {"title": "Too Many Requests"}, status=429, headers={"x-rate-limit-reset": past}
    )
    httpserver.expect_request("/r").respond_with_json({"ok": 1})
    notes: list[str] = []
    assert client(httpserver, notes).get("/r").status_code == 200
    assert len(httpserver.log) == 2
    assert any("rate limit" in n for n in notes)


def test_a_429_that_resets_too_late_stops_with_a_message(httpserver: HTTPServer) -> None:
    later = str(int(time.time()) + 3600)
    httpserver.expect_request("/r").respond_with_json({}, status=429, headers={"x-rate-limit-reset": later})
    with pytest.raises(FetchError, match=r"rate limit reached \(it resets in 60 min\).*run the same command"):
        client(httpserver).get("/r")
    assert len(httpserver.log) == 1  # no waiting an hour


def test_retries_a_500_then_succeeds(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/s").respond_with_data("oops", status=500)
    httpserver.expect_request("/s").respond_with_json({"ok": 1})
    notes: list[str] = []
    assert client(httpserver, notes).get("/s").status_code == 200
    assert notes == ["Test API answered HTTP 500; retrying in 0.001 s (1/2)"]


def test_gives_up_on_5xx_after_the_retries(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/s").respond_with_data("down", status=503)
    with pytest.raises(FetchError, match=r"server error \(HTTP 503\).*after 2 retries: try again later"):
        client(httpserver).get("/s")
    assert len(httpserver.log) == 3


def test_4xx_comes_back_to_the_caller(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/missing").respond_with_json({"error": "Record not found"}, status=404)
    assert client(httpserver).get("/missing").status_code == 404
    assert len(httpserver.log) == 1


def test_a_broken_connection_is_retried_then_reported(httpserver: HTTPServer) -> None:
    def cut_short(request: Request) -> Response:
        response = Response('{"data": [', content_type="application/json")
        response.headers["Content-Length"] = "5000"  # the server hangs up 5000 bytes early
        return response

    httpserver.expect_request("/cut").respond_with_handler(cut_short)
    with pytest.raises(FetchError, match=r"the connection to .* broke .*after 3 attempts") as info:
        client(httpserver).get("/cut")
    assert "\n" not in str(info.value)


def test_timeout(httpserver: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(0.3)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    policy = RetryPolicy(timeout=0.1, retries=1, backoff=0.001)
    with pytest.raises(FetchError, match=r"did not answer within 0.1 s after 2 attempts: .* try again later"):
        client(httpserver, policy=policy).get("/slow")


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http = HttpClient(f"http://127.0.0.1:{port}", service="Test API", policy=FAST)
    with pytest.raises(FetchError, match=r"cannot connect to 127.0.0.1:\d+ .*check your network connection"):
        http.get("/x")


def test_not_json(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/html").respond_with_data("<html>maintenance</html>", content_type="text/html")
    http = client(httpserver)
    with pytest.raises(FetchError, match=r"not JSON \(HTTP 200, text/html\) for /html"):
        http.json(http.get("/html"))


def test_errors_and_notes_never_show_the_secret(httpserver: HTTPServer) -> None:
    def echo(request: Request) -> Response:  # a server that echoes the header back in its error
        return Response(f"bad gateway for {request.headers['Authorization']}", status=502)

    httpserver.expect_request("/echo").respond_with_handler(echo)
    notes: list[str] = []
    http = client(httpserver, notes)
    with pytest.raises(FetchError) as info:
        http.get("/echo")
    assert SECRET not in str(info.value)
    response = httpx.Response(400, text=f"token {SECRET} rejected")
    assert SECRET not in str(http.error(response.text))
    assert notes and all(SECRET not in n for n in notes)


def test_reset_wait_reads_every_header_style() -> None:
    now = 1_700_000_000.0
    assert reset_wait(httpx.Headers({"x-rate-limit-reset": "1700000030"}), now) == 30
    assert reset_wait(httpx.Headers({"ratelimit-reset": "1700000010"}), now) == 10
    assert reset_wait(httpx.Headers({"x-ratelimit-reset": "2023-11-14T22:14:20.000Z"}), now) == 60
    assert reset_wait(httpx.Headers({"retry-after": "7"}), now) == 7
    assert reset_wait(httpx.Headers({}), now) is None
