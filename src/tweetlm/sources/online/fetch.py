"""Incremental, resumable fetching: what every online source shares.

Every platform lists an account's posts newest first, one page at a time, and each page says where
the next (older) one starts. A run works through *segments*: stretches of the timeline from a
cursor (None: the newest post) down to a floor (None: the oldest post the platform serves; else the
newest post stored before the segment began). A run first opens a segment at the top with the
store's newest post as its floor (only newer posts are asked for), then continues the segments an
earlier run left unfinished. Each page is committed together with the segments still open, so an
interrupted run loses nothing and the next run fills exactly the gap it left:

    fetch_state = {"segments": [{"floor": "1790...", "cursor": "1788..."}], "read": 1200}

The cursor is whatever lets the platform resume: the oldest id read (X `until_id`, Mastodon
`max_id`) or the opaque Bluesky cursor.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from tweetlm.errors import FetchError
from tweetlm.records import Post
from tweetlm.sources.online.http import Notify, RetryPolicy, check_base_url
from tweetlm.store import Store

PLATFORMS = ("x", "bluesky", "mastodon")


@dataclass(frozen=True)
class FetchOptions:
    include_replies: bool = False
    include_reposts: bool = False
    base_url: str | None = None  # overrides the platform's env variable and default
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    notify: Notify | None = None  # rate-limit waits and retries are reported here


@dataclass
class Page:
    """One page as the platform served it, already turned into posts."""

    posts: list[Post]
    read: int  # items the platform returned (X bills each one)
    dropped: Counter[str]  # reason -> count of items not kept
    cursor: str | None  # where the next, older page starts; None: this was the last page


@dataclass(frozen=True)
class PlannedRequest:
    """A request as `--dry-run` shows it: never with a token."""

    url: str
    params: dict[str, str]
    note: str = ""

    def __str__(self) -> str:
        query = urlencode(self.params, safe=",:.")
        line = f"GET {self.url}{'?' + query if query else ''}"
        return f"{line}    # {self.note}" if self.note else line


class OnlineSource(Protocol):
    platform: str
    account: str  # as stored: the platform's spelling once `resolve` has run
    max_posts: int | None  # the most posts the platform serves for one account (X: 3,200)

    @property
    def requests(self) -> int:
        """HTTP requests sent so far, retries included."""
        ...

    def plan_lookup(self) -> list[PlannedRequest]:
        """The account lookup `resolve` would send (for --dry-run); no network."""
        ...

    def plan(self, floor: str | None, cursor: str | None) -> list[PlannedRequest]:
        """The first request a segment would send (for --dry-run); no network."""
        ...

    def resolve(self) -> None:
        """Look the account up (the first network request); raises FetchError if it cannot be read."""
        ...

    def pages(self, floor: str | None, cursor: str | None, room: Callable[[], int | None]) -> Iterator[Page]:
        """Pages from `cursor` (None: the newest) down to `floor` (exclusive). `room()` is how many more
        posts this run may read (None: no limit), to size the requests."""
        ...

    def close(self) -> None: ...


@dataclass
class FetchSummary:
    platform: str
    account: str
    pages: int = 0
    read: int = 0  # items the platform returned
    kept: int = 0  # posts handed to the store
    added: int = 0  # of which new
    dropped: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    limited: bool = False  # stopped by --limit
    complete: bool = False  # no unfinished segment left: the store has everything the platform serves
    backfilled: bool = False  # a segment without a floor (the account's whole history) was finished

    @property
    def skipped(self) -> int:
        """Kept posts that were already in the store."""
        return self.kept - self.added


def base_url(options: FetchOptions, env: str, default: str) -> str:
    if options.base_url:
        return check_base_url(options.base_url, "--base-url")
    if os.environ.get(env):
        return check_base_url(os.environ[env], env)
    return default


def open_source(platform: str, account: str, options: FetchOptions) -> OnlineSource:
    """The source for one platform and account; checks the account's spelling but sends nothing."""
    name = platform.strip().lower()
    if name == "x":
        from tweetlm.sources.online.x_api import XSource

        return XSource(account, options)
    if name == "bluesky":
        from tweetlm.sources.online.bluesky import BlueskySource

        return BlueskySource(account, options)
    if name == "mastodon":
        from tweetlm.sources.online.mastodon import MastodonSource

        return MastodonSource(account, options)
    raise FetchError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}")


def _segments(source: OnlineSource, store: Store) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The segments a run works through, newest first, and the state they came from."""
    state = store.fetch_state(source.platform, source.account)
    newest = store.newest_post(source.platform, source.account)
    top = {"floor": newest.post_id if newest else None, "cursor": None}
    pending = [s for s in state.get("segments", []) if isinstance(s, dict) and s.get("cursor")]
    return [top, *pending], state


def plan(source: OnlineSource, store: Store) -> list[PlannedRequest]:
    """What a run would ask for first, for --dry-run: reads the store, sends nothing."""
    segments, _ = _segments(source, store)
    requests = source.plan_lookup()
    for segment in segments:
        requests.extend(source.plan(segment["floor"], segment["cursor"]))
    return requests


def fetch(
    source: OnlineSource,
    store: Store,
    *,
    limit: int | None = None,
    on_page: Callable[[FetchSummary], None] | None = None,
) -> FetchSummary:
    """Fetch what the store lacks, committing each page with the cursors to resume from.

    A FetchError on the way keeps every page already committed; its message says so.
    """
    if limit is not None and source.max_posts is not None:
        limit = min(limit, source.max_posts)
    summary = FetchSummary(source.platform, source.account)

    def room() -> int | None:
        return None if limit is None else max(0, limit - summary.read)

    try:
        source.resolve()
        summary.account = source.account
        segments, state = _segments(source, store)
        for index, segment in enumerate(segments):
            if room() == 0:
                summary.limited = True
                break
            for page in source.pages(segment["floor"], segment["cursor"], room):
                # A server that answers with the same page again would keep us here forever.
                stuck = page.cursor is not None and page.cursor == segment["cursor"]
                segment["cursor"] = None if stuck else page.cursor
                with store.transaction():
                    read, added = store.add_posts(page.posts)
                    # Below the floor everything is stored already: one known post means we reached it.
                    if segment["floor"] is not None and added < read:
                        segment["cursor"] = None
                    state["segments"] = [s for s in segments[index:] if s["cursor"]]
                    state["read"] = int(state.get("read", 0)) + page.read
                    store.set_fetch_state(source.platform, source.account, state)
                summary.pages += 1
                summary.read += page.read
                summary.kept += read
                summary.added += added
                summary.dropped.update(page.dropped)
                if on_page is not None:
                    on_page(summary)
                if segment["cursor"] is None:
                    summary.backfilled = summary.backfilled or segment["floor"] is None
                    break
                if room() == 0:
                    summary.limited = True
                    break
            if summary.limited:
                break
    except FetchError as exc:
        if not summary.pages:
            raise
        raise FetchError(
            f"{exc} ({summary.added} new posts from this run are stored; the next run continues from there)"
        ) from None
    finally:
        summary.requests = source.requests
        source.close()
    summary.complete = not any(s["cursor"] for s in segments)
    return summary


# ---- helpers the platform modules share --------------------------------------------------------

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp as the APIs write it ("2024-05-01T12:00:00.123Z"), in UTC; None if absent
    or unreadable (a missing optional field is not an error)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.10 reads only 3 or 6 fraction digits: pad or cut to 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one where the response has something else (or nothing)."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
