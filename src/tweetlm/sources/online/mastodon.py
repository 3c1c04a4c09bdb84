"""Mastodon: an account's public posts from its instance's REST API (no login).

`GET /api/v1/accounts/lookup?acct=user`, then `GET /api/v1/accounts/:id/statuses` newest first
(`max_id` from the `Link` header, else the last id). Statuses are HTML: `html_to_text` turns them
into the plain text a reader sees. A content warning (`spoiler_text`) is kept as the text's first
line, written `CW: <warning>`: the author wrote it, it is part of the post as published, and the
fixed prefix lets curation drop it with one rule.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

import httpx

from tweetlm.errors import FetchError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources.online.fetch import (
    FetchOptions,
    Page,
    PlannedRequest,
    as_int,
    base_url,
    parse_time,
)
from tweetlm.sources.online.http import HttpClient, flat_text

URL_ENV = "TWEETLM_MASTODON_URL"
PAGE_SIZE = 40  # the most statuses the API returns per request
_ACCOUNT = re.compile(r"^@?([A-Za-z0-9_][A-Za-z0-9_.-]*)@([A-Za-z0-9.-]+\.[A-Za-z]{2,}|localhost)(:\d+)?$")


class MastodonSource:
    platform = "mastodon"
    max_posts: int | None = None

    def __init__(self, account: str, options: FetchOptions) -> None:
        match = _ACCOUNT.match(account.strip())
        if not match:
            raise FetchError(
                f"{account!r} is not a Mastodon account: write it with its instance, like @user@mastodon.social"
            )
        self.username = match.group(1)
        self.instance = (match.group(2) + (match.group(3) or "")).lower()
        self.account = f"{self.username}@{self.instance}"
        self.options = options
        self.base_url = base_url(options, URL_ENV, f"https://{self.instance}")
        self.account_id: str | None = None
        self._http: HttpClient | None = None

    @property
    def requests(self) -> int:
        return self._http.requests if self._http is not None else 0

    def _params(self, floor: str | None, cursor: str | None, size: int = PAGE_SIZE) -> dict[str, str]:
        params = {
            "limit": str(size),
            "exclude_reblogs": "false" if self.options.include_reposts else "true",
            "exclude_replies": "false" if self.options.include_replies else "true",
        }
        if floor:
            params["since_id"] = floor
        if cursor:
            params["max_id"] = cursor
        return params

    def plan_lookup(self) -> list[PlannedRequest]:
        return [PlannedRequest(f"{self.base_url}/api/v1/accounts/lookup", {"acct": self.username})]

    def plan(self, floor: str | None, cursor: str | None) -> list[PlannedRequest]:
        note = "statuses newer than the newest stored one" if floor else "all public statuses"
        if cursor:
            note = "the rest of an unfinished earlier run"
        return [
            PlannedRequest(
                f"{self.base_url}/api/v1/accounts/{self.account_id or ':id'}/statuses",
                self._params(floor, cursor),
                f"{note}; then max_id from the Link header until a page is empty",
            )
        ]

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                self.base_url, service="Mastodon", policy=self.options.policy, notify=self.options.notify
            )
        return self._http

    def _get(self, path: str, params: dict[str, str]) -> tuple[Any, httpx.Response]:
        http = self._client()
        response = http.get(path, params)
        if response.status_code >= 400:
            body = http.json_or_none(response)
            detail = flat_text(str(body.get("error")), 200) if isinstance(body, dict) and body.get("error") else ""
            where = f"@{self.account}"
            messages = {
                404: f"no Mastodon account {where} ({detail or 'not found'}): check the name and the instance",
                410: f"Mastodon account {where} is suspended or gone ({detail or 'HTTP 410'})",
                401: f"{self.instance} lets only logged-in users read {where} ({detail or 'HTTP 401'}); "
                "tweetlm reads public posts without an account",
                403: f"{self.instance} does not let anyone read {where} ({detail or 'HTTP 403'})",
            }
            raise http.error(
                messages.get(response.status_code, f"Mastodon answered HTTP {response.status_code}: {detail}")
            )
        return http.json(response), response

    def resolve(self) -> None:
        body, _ = self._get("/api/v1/accounts/lookup", {"acct": self.username})
        if not isinstance(body, dict) or not body.get("id"):
            raise self._client().error(f"Mastodon sent an unexpected answer when looking up @{self.account}")
        if body.get("suspended"):
            raise FetchError(f"Mastodon account @{self.account} is suspended: its posts cannot be read")
        self.account_id = str(body["id"])
        self.username = str(body.get("username") or self.username)
        self.account = f"{self.username}@{self.instance}"

    def pages(self, floor: str | None, cursor: str | None, room: Callable[[], int | None]) -> Iterator[Page]:
        if self.account_id is None:
            self.resolve()
        path = f"/api/v1/accounts/{self.account_id}/statuses"
        while True:
            left = room()
            size = PAGE_SIZE if left is None else max(1, min(PAGE_SIZE, left))
            body, response = self._get(path, self._params(floor, cursor, size))
            if not isinstance(body, list):
                raise self._client().error("Mastodon sent an unexpected answer (a list of statuses was expected)")
            page = Page(posts=[], read=len(body), dropped=Counter(), cursor=None)
            for status in body:
                post = self._post(status, page.dropped)
                if post is not None:
                    page.posts.append(post)
            if body:
                page.cursor = _next_max_id(response) or _last_id(body)
            yield page
            if page.cursor is None:
                return
            cursor = page.cursor

    def _post(self, status: Any, dropped: Counter[str]) -> Post | None:
        if not isinstance(status, dict) or not status.get("id"):
            dropped["malformed (no id)"] += 1
            return None
        kind = Kind.ORIGINAL
        shown = status
        if isinstance(status.get("reblog"), dict):
            if not self.options.include_reposts:
                dropped["repost"] += 1
                return None
            kind, shown = Kind.RETWEET, status["reblog"]
        reply_to = None
        if status.get("in_reply_to_id") and kind is Kind.ORIGINAL:
            kind = Kind.REPLY
            # Mastodon keeps an author's replies to themselves (threads) even with exclude_replies.
            if str(status.get("in_reply_to_account_id")) == self.account_id:
                reply_to = self.account
            elif not self.options.include_replies:
                dropped["reply"] += 1
                return None
            else:
                reply_to = next(
                    (
                        str(m.get("acct"))
                        for m in status.get("mentions") or []
                        if isinstance(m, dict) and str(m.get("id")) == str(status.get("in_reply_to_account_id"))
                    ),
                    None,
                )
        if kind is Kind.ORIGINAL and status.get("quote"):  # Mastodon 4.5 quote posts
            kind = Kind.QUOTE
        html = shown.get("content")
        text, urls = html_to_text(html) if isinstance(html, str) else ("", ())
        spoiler = shown.get("spoiler_text")
        if text and isinstance(spoiler, str) and spoiler.strip():
            text = f"CW: {' '.join(spoiler.split())}\n{text}"
        if not text:
            dropped["no text"] += 1
            return None
        media = tuple(
            str(m["url"]) for m in shown.get("media_attachments") or [] if isinstance(m, dict) and m.get("url")
        )
        return Post(
            platform="mastodon",
            account=self.account,
            post_id=str(status["id"]),
            text=text,
            created_at=parse_time(status.get("created_at")),
            kind=kind,
            reply_to=reply_to,
            lang=shown.get("language") if isinstance(shown.get("language"), str) else None,
            urls=urls,
            media=media,
            likes=as_int(shown.get("favourites_count")),
            reposts=as_int(shown.get("reblogs_count")),
            raw=status,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _next_max_id(response: httpx.Response) -> str | None:
    link = response.links.get("next", {}).get("url")
    if not link:
        return None
    value = httpx.URL(link).params.get("max_id")
    return str(value) if value else None


def _last_id(statuses: list[Any]) -> str | None:
    last = statuses[-1]
    return str(last["id"]) if isinstance(last, dict) and last.get("id") else None


# ---- HTML to plain text ------------------------------------------------------------------------

_BLOCKS = frozenset({"p", "div", "blockquote", "pre", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6"})
_VOID = frozenset({"br", "img", "hr", "wbr", "input", "meta", "link", "source"})


class _Text(HTMLParser):
    """Mastodon's status HTML as a reader sees it: `<p>` are paragraphs, `<br>` line breaks, links
    their visible text (the `invisible` parts of a long URL dropped, the `ellipsis` part followed by
    "…"), and the `quote-inline` fallback of quote posts left out, as the web interface does."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.urls: list[Url] = []
        self._open: list[tuple[str, bool, str]] = []  # tag, hides its content, class
        self._links: list[tuple[str, int, bool]] = []  # href, where its text starts, is a real link
        self._breaks = 0  # newlines owed before the next text
        self._pre = 0

    @property
    def hidden(self) -> bool:
        return any(hides for _, hides, _ in self._open)

    def _block(self, newlines: int) -> None:
        if self.out:
            self._breaks = max(self._breaks, newlines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        classes = set(values.get("class", "").split())
        if tag == "br":
            if not self.hidden:
                self.out.append("\n" * (self._breaks + 1))
                self._breaks = 0
            return
        if tag in _VOID:
            return
        if tag in _BLOCKS:
            self._block(1 if tag == "li" else 2)
        if tag == "pre":
            self._pre += 1
        hides = bool(classes & {"invisible", "quote-inline"})
        self._open.append((tag, hides, values.get("class", "")))
        if tag == "a":
            real = not (classes & {"mention", "hashtag"}) and "tag" not in values.get("rel", "").split()
            self._links.append((values.get("href", ""), len(self.out), real))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not any(name == tag for name, _, _ in self._open):
            return  # a stray end tag
        while self._open:
            name, _, classes = self._open.pop()
            if name == "span" and "ellipsis" in classes.split() and not self.hidden:
                self.out.append("…")
            if name == "a" and self._links:
                href, start, real = self._links.pop()
                shown = "".join(self.out[start:]).strip()
                if real and href and not self.hidden:
                    self.urls.append(Url(shown or href, href))
            if name == "pre":
                self._pre -= 1
            if name == tag:
                break
        if tag in _BLOCKS:
            self._block(1 if tag == "li" else 2)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if not self._pre:
            data = re.sub(r"\s*\n\s*", " ", data)
            if not data.strip() and (self._breaks or not self.out):
                return  # whitespace between blocks
        if self._breaks:
            self.out.append("\n" * self._breaks)
            self._breaks = 0
        self.out.append(data)


def html_to_text(html: str) -> tuple[str, tuple[Url, ...]]:
    """Plain text and the links (as shown, target) of a status's HTML `content`; entities unescaped."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.out).split("\n")
    return "\n".join(line.rstrip() for line in lines).strip(), tuple(parser.urls)
