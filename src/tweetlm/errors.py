"""Typed errors. The library raises these; only the CLI turns them into one-line messages."""


class TweetlmError(Exception):
    """Base class: the message is one line that says what went wrong and what to do."""


class InputError(TweetlmError):
    """A file, archive or option the user gave cannot be used."""


class SourceFormatError(InputError):
    """A file is not in the format its source expects (malformed JS/JSON, missing column, ...)."""


class StoreError(TweetlmError):
    """The SQLite store cannot be opened or written."""


class NoDataError(TweetlmError):
    """An account has no posts, or nothing left after curation."""


class FetchError(TweetlmError):
    """An online source failed (network, auth, rate limit, malformed response)."""


class ModelError(TweetlmError):
    """A base model or run folder cannot be loaded."""


class TrainingError(TweetlmError):
    """Training failed (too little data, out of memory, NaN loss, ...)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, whitespace collapsed, at most `limit` characters ("" if none)."""
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split())[:limit] if lines else ""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for a message: a TweetlmError's text; any other's type and first line."""
    if isinstance(exc, TweetlmError):
        return " ".join(str(exc).split())
    return f"{type(exc).__name__}: {first_line(exc, limit)}"


class HubError(TweetlmError):
    """The Hugging Face Hub refused or failed an upload."""
