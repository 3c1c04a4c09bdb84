"""The one HTTP client of the online sources: a timeout on every request, exponential backoff on
server errors and broken connections, waits for rate-limit resets, and errors that never show a
secret (httpx messages can carry URLs and headers, so every message is redacted before it leaves).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from tweetlm import __version__
from tweetlm.errors import FetchError

USER_AGENT = f"tweetlm/{__version__} (+https://github.com/tweetlm)"

Notify = Callable[[str], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How patient the client is. Tests use tiny delays; the defaults suit the real services."""

    timeout: float = 30.0  # seconds, for connecting and for each read
    retries: int = 4  # extra attempts after a 5xx, a timeout or a broken connection
    backoff: float = 1.0  # first delay in seconds, doubled on each retry
    max_backoff: float = 60.0
    rate_limit_waits: int = 3  # how many 429s in a row to sit out before giving up
    max_rate_wait: float = 15 * 60.0  # a reset further away than this ends the run instead

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The defaults, or TWEETLM_HTTP_TIMEOUT / TWEETLM_HTTP_RETRIES / TWEETLM_HTTP_BACKOFF (seconds)."""
        values: dict[str, Any] = {}
        for field, env, kind in (
            ("timeout", "TWEETLM_HTTP_TIMEOUT", float),
            ("retries", "TWEETLM_HTTP_RETRIES", int),
            ("backoff", "TWEETLM_HTTP_BACKOFF", float),
        ):
            raw = os.environ.get(env)
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise FetchError(f"{env}={raw!r} is not a number: unset it or give e.g. {env}=2") from None
                if values[field] < 0:
                    raise FetchError(f"{env}={raw!r} must not be negative")
        return cls(**values)

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2**attempt))


def flat_text(text: str, limit: int = 300) -> str:
    """Collapse whitespace (error bodies can span lines) and cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def check_base_url(url: str, what: str) -> str:
    """An http(s) URL without a trailing slash, or a FetchError naming the option to fix."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError(f"{what} must be an http:// or https:// URL, got {url!r}")
    return url.strip().rstrip("/")


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("localhost", "127.0.0.1", "::1")


class HttpClient:
    """GET with retries against one service. Statuses other than 429 and 5xx come back to the caller,
    which knows what the platform means by them."""

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        policy: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        notify: Notify | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self.service = service
        self.policy = policy or RetryPolicy()
        self._secrets = tuple(s for s in secrets if s)
        self._notify = notify
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=base_url,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            timeout=self.policy.timeout,
            follow_redirects=True,  # httpx drops Authorization on a redirect to another origin
        )
        self.requests = 0  # sent, retries included

    def close(self) -> None:
        self._client.close()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(self, message: str) -> FetchError:
        return FetchError(flat_text(self.redact(message), 400))

    def _say(self, message: str) -> None:
        if self._notify is not None:
            self._notify(flat_text(self.redact(message)))

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        host = urlsplit(self.base_url).netloc
        attempt = waits = 0
        while True:
            try:
                self.requests += 1
                response = self._client.get(path, params=dict(params or {}))
            except httpx.TransportError as exc:
                problem = self._transport_problem(exc, host)
                if attempt >= self.policy.retries:
                    hint = "check your network connection (and --base-url if you set one)"
                    if isinstance(exc, httpx.TimeoutException):
                        hint = "the service may be overloaded: try again later"
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise self.error(f"{problem}{tries}: {hint}") from None
                delay = self.policy.delay(attempt)
                attempt += 1
                self._say(f"{problem}; retrying in {delay:g} s ({attempt}/{self.policy.retries})")
                self._sleep(delay)
                continue

            if response.status_code == 429:
                wait = reset_wait(response.headers)
                if waits >= self.policy.rate_limit_waits or (wait or 0) > self.policy.max_rate_wait:
                    when = f" (it resets in {_duration(wait)})" if wait and wait > 0 else ""
                    raise self.error(f"{self.service} rate limit reached{when}: run the same command again later")
                if wait is None or wait <= 0:  # no (or a past) reset time: back off instead
                    wait = self.policy.delay(waits)
                waits += 1
                self._say(f"{self.service} rate limit reached: waiting {_duration(wait)} for it to reset")
                self._sleep(wait)
                continue

            if response.status_code >= 500:
                if attempt >= self.policy.retries:
                    raise self.error(
                        f"{self.service} server error (HTTP {response.status_code}) at {host}"
                        f"{f' after {attempt} retries' if attempt else ''}: try again later"
                    )
                delay = self.policy.delay(attempt)
                attempt += 1
                self._say(
                    f"{self.service} answered HTTP {response.status_code}; "
                    f"retrying in {delay:g} s ({attempt}/{self.policy.retries})"
                )
                self._sleep(delay)
                continue
            return response

    def _transport_problem(self, exc: httpx.TransportError, host: str) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            return f"connecting to {host} timed out after {self.policy.timeout:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"{self.service} at {host} did not answer within {self.policy.timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            reason = str(exc).split("] ")[-1] or type(exc).__name__
            return f"cannot connect to {host} ({reason})"
        return f"the connection to {host} broke ({type(exc).__name__}: {exc})"

    @staticmethod
    def json_or_none(response: httpx.Response) -> Any:
        """The parsed body of an error response, if it has one."""
        try:
            return response.json()
        except ValueError:
            return None

    def json(self, response: httpx.Response) -> Any:
        """The parsed body, or a FetchError that says the service sent something else."""
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise self.error(
                f"{self.service} sent a response that is not JSON (HTTP {response.status_code}, {kind}) "
                f"for {response.request.url.path}: try again later, or check --base-url"
            ) from None


def _duration(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def reset_wait(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds until a rate limit resets, from whichever header the service sends: `retry-after`
    (seconds or a date), `x-rate-limit-reset` (X, epoch seconds), `ratelimit-reset` (Bluesky, epoch
    seconds) or `x-ratelimit-reset` (Mastodon, ISO 8601)."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            try:
                return parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError):
                pass
    for name in ("x-rate-limit-reset", "ratelimit-reset", "x-ratelimit-reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            return float(value) - now
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return moment.timestamp() - now
    return None
