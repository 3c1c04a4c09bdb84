"""Bluesky: an account's posts from `app.bsky.feed.getAuthorFeed` on the public AppView (no login).

The feed has no "newer than" parameter: an incremental run pages from the newest post until it
meets one already stored. Reposts (and anything not written by the account) are dropped unless
--include-reposts; replies to other accounts are dropped unless --include-replies.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from tweetlm.errors import FetchError
from tweetlm.records import Kind, Post, Url
from tweetlm.sources.online.fetch import (
    FetchOptions,
    Page,
    PlannedRequest,
    as_dict,
    as_int,
    base_url,
    parse_time,
)
from tweetlm.sources.online.http import HttpClient, flat_text

DEFAULT_URL = "https://public.api.bsky.app"
URL_ENV = "TWEETLM_BLUESKY_URL"
FEED = "/xrpc/app.bsky.feed.getAuthorFeed"
REPOST = "app.bsky.feed.defs#reasonRepost"
LINK = "app.bsky.richtext.facet#link"
QUOTES = ("app.bsky.embed.record", "app.bsky.embed.recordWithMedia")
_HANDLE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*[a-z0-9]$")
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]+$")
_ACCOUNT_ERRORS = {
    "AccountTakedown": "has been taken down by Bluesky moderation",
    "AccountDeactivated": "is deactivated",
    "BlockedActor": "blocks this viewer",
    "BlockedByActor": "is blocked",
}


class BlueskySource:
    platform = "bluesky"
    max_posts: int | None = None

    def __init__(self, account: str, options: FetchOptions) -> None:
        actor = account.strip().removeprefix("@")
        actor = actor if actor.startswith("did:") else actor.lower()
        if not (_DID.match(actor) or _HANDLE.match(actor)):
            hint = f" (did you mean {actor}.bsky.social?)" if re.fullmatch(r"[a-z0-9-]+", actor) else ""
            raise FetchError(f"{account!r} is not a Bluesky handle or DID{hint}: write it like alice.bsky.social")
        self.account = actor
        self.options = options
        self.base_url = base_url(options, URL_ENV, DEFAULT_URL)
        self._http: HttpClient | None = None

    @property
    def requests(self) -> int:
        return self._http.requests if self._http is not None else 0

    def _params(self, cursor: str | None, size: int = 100) -> dict[str, str]:
        params = {
            "actor": self.account,
            "limit": str(size),
            "filter": "posts_with_replies" if self.options.include_replies else "posts_no_replies",
        }
        if cursor:
            params["cursor"] = cursor
        return params

    def plan_lookup(self) -> list[PlannedRequest]:
        return []  # the feed takes the handle itself

    def plan(self, floor: str | None, cursor: str | None) -> list[PlannedRequest]:
        note = "until a page holds a post already stored" if floor else "the whole feed"
        if cursor:
            note = "the rest of an unfinished earlier run"
        return [PlannedRequest(f"{self.base_url}{FEED}", self._params(cursor), f"{note}; then cursor=<cursor>")]

    def resolve(self) -> None:
        """Nothing to look up: an unknown actor shows in the first feed request."""
        if self._http is None:
            self._http = HttpClient(
                self.base_url, service="Bluesky", policy=self.options.policy, notify=self.options.notify
            )

    def pages(self, floor: str | None, cursor: str | None, room: Callable[[], int | None]) -> Iterator[Page]:
        self.resolve()
        assert self._http is not None
        http = self._http
        while True:
            left = room()
            params = self._params(cursor, 100 if left is None else max(1, min(100, left)))
            response = http.get(FEED, params)
            if response.status_code >= 400:
                raise http.error(self._account_error(response.status_code, http.json_or_none(response)))
            body = http.json(response)
            if not isinstance(body, dict) or not isinstance(body.get("feed"), list):
                raise http.error("Bluesky sent an unexpected feed response (no `feed` list): try again later")
            feed = body["feed"]
            next_cursor = body.get("cursor")
            cursor = str(next_cursor) if next_cursor and feed else None
            page = Page(posts=[], read=len(feed), dropped=Counter(), cursor=cursor)
            for item in feed:
                post = self._post(item, page.dropped)
                if post is not None:
                    page.posts.append(post)
            yield page
            if cursor is None:
                return

    def _account_error(self, status: int, body: Any) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        message = flat_text(str(body.get("message") or error), 200) if isinstance(body, dict) else ""
        if error in _ACCOUNT_ERRORS:
            return f"Bluesky account {self.account} {_ACCOUNT_ERRORS[error]} ({message})"
        if "not found" in message.lower():
            return f"no Bluesky account {self.account} ({message}): check the handle"
        return f"Bluesky answered HTTP {status}: {message or 'no details'}"

    def _is_author(self, author: Any) -> bool:
        if not isinstance(author, dict):
            return False
        if self.account.startswith("did:"):
            return author.get("did") == self.account
        return str(author.get("handle", "")).lower() == self.account

    def _post(self, item: Any, dropped: Counter[str]) -> Post | None:
        post = item.get("post") if isinstance(item, dict) else None
        if not isinstance(post, dict) or not post.get("uri"):
            dropped["malformed (no post uri)"] += 1
            return None
        reason = as_dict(item.get("reason"))
        repost = reason.get("$type") == REPOST or not self._is_author(post.get("author"))
        if repost and not self.options.include_reposts:
            dropped["repost"] += 1
            return None
        record = as_dict(post.get("record"))
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            dropped["no text"] += 1
            return None
        author = as_dict(post.get("author"))
        kind = Kind.ORIGINAL
        reply_to = None
        if isinstance(record.get("reply"), dict):
            kind = Kind.REPLY
            parent_uri = str((record["reply"].get("parent") or {}).get("uri", ""))
            parent = (item.get("reply") or {}).get("parent") or {}
            reply_to = (parent.get("author") or {}).get("handle")
            own = bool(author.get("did")) and parent_uri.startswith(f"at://{author['did']}/")
            if own:
                reply_to = reply_to or author.get("handle")
            elif not self.options.include_replies:
                dropped["reply"] += 1
                return None
        embed = as_dict(record.get("embed"))
        if embed.get("$type") in QUOTES:
            kind = Kind.QUOTE if kind is Kind.ORIGINAL else kind
        if repost:
            kind = Kind.RETWEET
        langs = record.get("langs")
        return Post(
            platform="bluesky",
            account=self.account,
            # A repost is stored under its own record, not under the reposted post's uri.
            post_id=str(reason.get("uri") or post["uri"]) if repost else str(post["uri"]),
            text=text,
            created_at=parse_time(record.get("createdAt")) or parse_time(post.get("indexedAt")),
            kind=kind,
            reply_to=reply_to,
            lang=langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None,
            urls=_links(text, record.get("facets")),
            media=_media(post.get("embed")),
            likes=as_int(post.get("likeCount")),
            reposts=as_int(post.get("repostCount")),
            raw=item,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _links(text: str, facets: Any) -> tuple[Url, ...]:
    """Link facets as (the text shown, the target): the shown text is often shortened."""
    data = text.encode("utf-8")
    urls: list[Url] = []
    for facet in facets if isinstance(facets, list) else []:
        if not isinstance(facet, dict):
            continue
        index = as_dict(facet.get("index"))
        start, end = as_int(index.get("byteStart")), as_int(index.get("byteEnd"))
        for feature in facet.get("features") or []:
            if isinstance(feature, dict) and feature.get("$type") == LINK and feature.get("uri"):
                uri = str(feature["uri"])
                shown = data[start:end].decode("utf-8", "replace") if start is not None and end else uri
                urls.append(Url(shown or uri, uri))
    return tuple(urls)


def _media(embed: Any) -> tuple[str, ...]:
    """Image and video URLs of a post's embed view (also inside a quote with media)."""
    if not isinstance(embed, dict):
        return ()
    if isinstance(embed.get("media"), dict):  # app.bsky.embed.recordWithMedia#view
        embed = embed["media"]
    found = [str(i["fullsize"]) for i in embed.get("images") or [] if isinstance(i, dict) and i.get("fullsize")]
    if embed.get("playlist"):  # app.bsky.embed.video#view
        found.append(str(embed["playlist"]))
    return tuple(found)
