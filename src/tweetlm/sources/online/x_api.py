"""X API v2: an account's posts from `GET /2/users/:id/tweets`, with an app's Bearer Token.

A small client of our own on httpx rather than tweepy: it must point at a local replay server in
the tests, and the retries, progress and commit-per-page logic are ours (tweepy compatibility is not
a goal). The endpoint serves at most the newest 3,200 posts of an account; X bills every post read.
"""

from __future__ import annotations

import os
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
from tweetlm.sources.online.http import HttpClient, flat_text, is_local

DEFAULT_URL = "https://api.x.com"
URL_ENV = "TWEETLM_X_API_URL"
TOKEN_ENV = "X_BEARER_TOKEN"
PORTAL = "https://developer.x.com/en/portal/dashboard"
MAX_POSTS = 3200  # the timeline endpoint serves no older posts than the newest 3,200
TWEET_FIELDS = (
    "created_at,public_metrics,entities,lang,referenced_tweets,note_tweet,in_reply_to_user_id,"
    "conversation_id,attachments"
)
_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,15}$")
TOKEN_HINT = f"create an app in the X developer portal ({PORTAL}), copy its Bearer Token and set {TOKEN_ENV} to it"


class XSource:
    platform = "x"
    max_posts: int | None = MAX_POSTS

    def __init__(self, account: str, options: FetchOptions) -> None:
        username = account.strip().removeprefix("@")
        if not _USERNAME.match(username):
            raise FetchError(f"{account!r} is not an X username (1 to 15 letters, digits or _, like @jack)")
        self.account = username
        self.options = options
        self.base_url = base_url(options, URL_ENV, DEFAULT_URL)
        self.user_id: str | None = None
        self._http: HttpClient | None = None

    @property
    def requests(self) -> int:
        return self._http.requests if self._http is not None else 0

    # ---- requests --------------------------------------------------------------------------------

    def _params(self, floor: str | None, cursor: str | None, size: int = 100) -> dict[str, str]:
        params = {
            "max_results": str(size),
            "tweet.fields": TWEET_FIELDS,
            "expansions": "attachments.media_keys,in_reply_to_user_id",
            "media.fields": "url,preview_image_url,type",
            "user.fields": "username",
        }
        exclude = [
            name
            for name, wanted in (("retweets", self.options.include_reposts), ("replies", self.options.include_replies))
            if not wanted
        ]
        if exclude:
            params["exclude"] = ",".join(exclude)
        if floor:
            params["since_id"] = floor
        if cursor:
            params["until_id"] = cursor
        return params

    def plan_lookup(self) -> list[PlannedRequest]:
        token = "set" if os.environ.get(TOKEN_ENV) else "NOT set: the real run would stop here"
        return [
            PlannedRequest(
                f"{self.base_url}/2/users/by/username/{self.account}",
                {"user.fields": "protected"},
                f"with Authorization: Bearer ${TOKEN_ENV} ({token})",
            )
        ]

    def plan(self, floor: str | None, cursor: str | None) -> list[PlannedRequest]:
        where = "posts newer than the newest stored one" if floor else "the account's newest 3,200 posts"
        if cursor:
            where = "the rest of an unfinished earlier run"
        return [
            PlannedRequest(
                f"{self.base_url}/2/users/{self.user_id or ':id'}/tweets",
                self._params(floor, cursor),
                f"{where}; then pagination_token=meta.next_token until there is none",
            )
        ]

    def _client(self) -> HttpClient:
        if self._http is None:
            token = os.environ.get(TOKEN_ENV, "").strip()
            if not token:
                raise FetchError(f"{TOKEN_ENV} is not set: {TOKEN_HINT}")
            if self.base_url.startswith("http://") and not is_local(self.base_url):
                raise FetchError(
                    f"refusing to send {TOKEN_ENV} over plain http to {self.base_url}: use an https:// URL"
                )
            self._http = HttpClient(
                self.base_url,
                service="X API",
                policy=self.options.policy,
                headers={"Authorization": f"Bearer {token}"},
                secrets=(token,),
                notify=self.options.notify,
            )
        return self._http

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        http = self._client()
        response = http.get(path, params)
        if response.status_code == 401:
            raise http.error(f"X API refused the token (HTTP 401 Unauthorized): {TOKEN_HINT}")
        if response.status_code == 403:
            raise http.error(
                f"X API refused access (HTTP 403): the app needs an access level that includes reading "
                f"timelines; check it in the developer portal ({PORTAL}) and set {TOKEN_ENV} to that app's "
                f"Bearer Token (X said: {_problem(http.json_or_none(response))})"
            )
        if response.status_code >= 400:
            raise http.error(
                f"X API answered HTTP {response.status_code} for {path}: {_problem(http.json_or_none(response))}"
            )
        body = http.json(response)
        if not isinstance(body, dict):
            raise http.error(f"X API sent an unexpected response for {path} (a JSON object was expected)")
        return body

    # ---- the account -----------------------------------------------------------------------------

    def resolve(self) -> None:
        body = self._get(f"/2/users/by/username/{self.account}", {"user.fields": "protected"})
        user = body.get("data")
        if not isinstance(user, dict) or not user.get("id"):
            raise self._client().error(self._account_error(body.get("errors")))
        if user.get("protected"):
            raise FetchError(
                f"@{user.get('username', self.account)}'s posts are protected: X shows them only to "
                "approved followers, so the API cannot read them; ask for the account's archive instead"
            )
        self.user_id = str(user["id"])
        self.account = str(user.get("username") or self.account)

    def _account_error(self, errors: Any) -> str:
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        title = str(first.get("title", ""))
        detail = str(first.get("detail", "")) or title or "no user data in the response"
        if "suspended" in detail.lower():
            return f"X account @{self.account} is suspended: {detail}"
        if title == "Not Found Error":
            return f"no X account @{self.account} ({detail}): check the spelling"
        if title in ("Authorization Error", "Forbidden"):
            return f"X does not let this app read @{self.account} ({detail})"
        return f"cannot read X account @{self.account}: {title + ': ' if title else ''}{detail}"

    # ---- the timeline ----------------------------------------------------------------------------

    def pages(self, floor: str | None, cursor: str | None, room: Callable[[], int | None]) -> Iterator[Page]:
        if self.user_id is None:
            self.resolve()
        params = self._params(floor, cursor)
        path = f"/2/users/{self.user_id}/tweets"
        while True:
            left = room()
            params["max_results"] = str(100 if left is None else max(5, min(100, left)))  # X: 5 to 100
            body = self._get(path, params)
            data = body.get("data")
            if data is None and body.get("errors"):
                raise self._client().error(self._account_error(body.get("errors")))
            if not isinstance(data, list):
                data = []
            meta = as_dict(body.get("meta"))
            page = self._page(data, body.get("includes"))
            token = meta.get("next_token")
            ids = [int(t["id"]) for t in data if isinstance(t, dict) and str(t.get("id", "")).isdigit()]
            oldest = str(meta.get("oldest_id") or (min(ids) if ids else "")) or None
            page.cursor = oldest if token and oldest else None  # resumable: until_id=oldest
            yield page
            if page.cursor is None:
                return
            params["pagination_token"] = str(token)

    def _page(self, tweets: list[Any], includes: Any) -> Page:
        includes = as_dict(includes)
        users = {
            str(u.get("id")): str(u.get("username"))
            for u in includes.get("users") or []
            if isinstance(u, dict) and u.get("username")
        }
        media = {
            str(m.get("media_key")): str(m.get("url") or m.get("preview_image_url"))
            for m in includes.get("media") or []
            if isinstance(m, dict) and (m.get("url") or m.get("preview_image_url"))
        }
        posts: list[Post] = []
        dropped: Counter[str] = Counter()
        for tweet in tweets:
            post = self._post(tweet, users, media, dropped)
            if post is not None:
                posts.append(post)
        return Page(posts=posts, read=len(tweets), dropped=dropped, cursor=None)

    def _post(self, tweet: Any, users: dict[str, str], media: dict[str, str], dropped: Counter[str]) -> Post | None:
        if not isinstance(tweet, dict) or not tweet.get("id"):
            dropped["malformed (no id)"] += 1
            return None
        note = as_dict(tweet.get("note_tweet"))
        text = note.get("text") or tweet.get("text")  # posts over 280 characters live in note_tweet
        if not isinstance(text, str) or not text.strip():
            dropped["no text"] += 1
            return None
        kinds = {r.get("type") for r in tweet.get("referenced_tweets") or [] if isinstance(r, dict)}
        reply_to_id = tweet.get("in_reply_to_user_id")
        kind = Kind.ORIGINAL
        if "retweeted" in kinds:
            kind = Kind.RETWEET
        elif "replied_to" in kinds or reply_to_id:
            kind = Kind.REPLY
        elif "quoted" in kinds:
            kind = Kind.QUOTE
        # The request excludes these already; a server that sends them anyway does not get them stored.
        if kind is Kind.RETWEET and not self.options.include_reposts:
            dropped["repost"] += 1
            return None
        if kind is Kind.REPLY and not self.options.include_replies and str(reply_to_id) != self.user_id:
            dropped["reply"] += 1
            return None
        entities = note.get("entities") if note.get("text") else tweet.get("entities")
        urls = tuple(
            Url(str(u["url"]), str(u.get("expanded_url") or u["url"]))
            for u in (entities or {}).get("urls") or []
            if isinstance(u, dict) and u.get("url")
        )
        keys = (tweet.get("attachments") or {}).get("media_keys") or []
        metrics = as_dict(tweet.get("public_metrics"))
        return Post(
            platform="x",
            account=self.account,
            post_id=str(tweet["id"]),
            text=text,
            created_at=parse_time(tweet.get("created_at")),
            kind=kind,
            reply_to=users.get(str(reply_to_id)) or (self.account if str(reply_to_id) == self.user_id else None),
            lang=tweet.get("lang") if isinstance(tweet.get("lang"), str) else None,
            urls=urls,
            media=tuple(media[str(k)] for k in keys if str(k) in media),
            likes=as_int(metrics.get("like_count")),
            reposts=as_int(metrics.get("retweet_count")),
            raw=tweet,
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _problem(body: Any) -> str:
    """The title and detail of an X error body ({"title", "detail"} or {"errors": [...]})."""
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"] and isinstance(body["errors"][0], dict):
            body = body["errors"][0]
        parts = [str(body[k]) for k in ("title", "detail", "reason") if body.get(k)]
        if parts:
            return flat_text(": ".join(dict.fromkeys(parts)), 200)
    return "no details"
