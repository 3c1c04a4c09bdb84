"""The one record type for a post: every source yields it, every later stage reads it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class Kind(str, enum.Enum):
    ORIGINAL = "original"
    RETWEET = "retweet"
    REPLY = "reply"
    QUOTE = "quote"


@dataclass(frozen=True, slots=True)
class Url:
    short: str  # as it appears in the text (t.co for X), or the same as expanded
    expanded: str


@dataclass(frozen=True, slots=True)
class Post:
    """One published post, as the platform delivered it.

    `text` is the text as published (entities, t.co links and all): curation cleans it later,
    so the store keeps what was really said.
    """

    platform: str  # "x", "bluesky", "mastodon", "csv", "text", ...
    account: str  # handle without "@" (mastodon: "user@instance")
    post_id: str
    text: str
    created_at: datetime | None = None  # always UTC
    kind: Kind = Kind.ORIGINAL
    reply_to: str | None = None  # account replied to
    lang: str | None = None
    urls: tuple[Url, ...] = ()
    media: tuple[str, ...] = ()  # media URLs
    likes: int | None = None
    reposts: int | None = None
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.platform or not self.account or not self.post_id:
            raise ValueError("a post needs a platform, an account and a post id")
        if self.created_at is not None and self.created_at.tzinfo is None:
            object.__setattr__(self, "created_at", self.created_at.replace(tzinfo=timezone.utc))
        elif self.created_at is not None:
            object.__setattr__(self, "created_at", self.created_at.astimezone(timezone.utc))
        if not isinstance(self.kind, Kind):
            object.__setattr__(self, "kind", Kind(self.kind))
