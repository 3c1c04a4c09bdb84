"""`tweetlm fetch` as a user runs it: the real entry point in a subprocess, against a local server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from tweetlm.cli import app

REPO = Path(__file__).resolve().parents[1]
RECORDINGS = Path(__file__).parent / "recordings" / "x"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAcliTokenThatMustNeverBeWritten%2Fanywhere"


def x_server(server: HTTPServer) -> None:
    """The X API: the user lookup and one page of posts, for the right token only; a wrong token gets a
    401 whose body echoes the header it was sent (so the client must redact what it shows)."""

    def answer(name: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {TOKEN}":
                return Response(
                    f'{{"title": "Unauthorized", "detail": "bad header {sent}"}}',
                    status=401,
                    content_type="application/json",
                )
            return Response((RECORDINGS / f"{name}.json").read_text(), content_type="application/json")

        return handler

    server.expect_request("/2/users/by/username/AdaExample").respond_with_handler(answer("user"))
    server.expect_request("/2/users/2244994945/tweets").respond_with_handler(answer("tweets_page3"))


def tweetlm(home: Path, server: HTTPServer, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWEETLM_", "X_BEARER"))}
    env.update(
        TWEETLM_HOME=str(home),
        X_BEARER_TOKEN=token,
        TWEETLM_X_API_URL=server.url_for("").rstrip("/"),
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]),
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "tweetlm", "fetch", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_token_is_nowhere_under_tweetlm_home(httpserver: HTTPServer, tmp_path: Path) -> None:
    x_server(httpserver)
    home = tmp_path / "home"

    done = tweetlm(home, httpserver, "x", "@AdaExample")
    assert done.returncode == 0, done.stderr
    assert "X AdaExample: read 2 posts in 1 page (2 requests): 2 new, 0 already stored, 0 dropped" in done.stdout
    assert "X bills API access per post read: this run read 2 posts." in done.stdout

    refused = tweetlm(home, httpserver, "x", "@AdaExample", token="wrong-token-ABC123")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "X_BEARER_TOKEN" in refused.stderr
    assert "wrong-token-ABC123" not in refused.stderr  # redacted although the server echoed it

    planned = tweetlm(home, httpserver, "x", "@AdaExample", "--dry-run")
    assert planned.returncode == 0 and "/2/users/:id/tweets?" in planned.stdout  # for the stored account...
    assert "since_id=1790000000000000003" in planned.stdout  # ...and its newest post

    for result in (done, refused, planned):
        assert TOKEN not in result.stdout + result.stderr
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_dry_run_sends_no_request(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    base = httpserver.url_for("").rstrip("/")
    for args, expected in [
        (["x", "@jack"], f"GET {base}/2/users/by/username/jack?user.fields=protected"),
        (["bluesky", "ada.example.social"], "getAuthorFeed?actor=ada.example.social&limit=100&filter=posts_no_replies"),
        (["mastodon", "@ada@social.example"], "/api/v1/accounts/:id/statuses?limit=40&exclude_reblogs=true"),
    ]:
        result = CliRunner().invoke(app, ["fetch", *args, "--dry-run", "--base-url", base])
        assert result.exit_code == 0, result.output
        assert expected in result.output
        assert TOKEN not in result.output
    assert httpserver.log == []


def test_unknown_platform_is_one_line(tmp_path: Path, httpserver: HTTPServer) -> None:
    result = tweetlm(tmp_path, httpserver, "myspace", "tom")
    assert result.returncode == 1
    assert result.stderr == "error: unknown platform 'myspace': choose one of x, bluesky, mastodon\n"


def test_network_down_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETLM_HTTP_RETRIES", "1")
    monkeypatch.setenv("TWEETLM_HTTP_BACKOFF", "0.01")
    result = CliRunner().invoke(app, ["fetch", "bluesky", "ada.example.social", "--base-url", "http://127.0.0.1:9"])
    assert "cannot connect to 127.0.0.1:9 (Connection refused) after 2 attempts" in str(result.exception)


def test_help_reads_well_and_loads_no_network_code() -> None:
    result = CliRunner().invoke(app, ["fetch", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for part in ("Examples", "tweetlm fetch bluesky", "@user@instance", "--include-replies", "--dry-run"):
        assert part in result.output
    probe = "import sys, tweetlm.cli; print(sorted({'httpx', 'torch'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
