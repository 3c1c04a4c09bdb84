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


class HubError(TweetlmError):
    """The Hugging Face Hub refused or failed an upload."""
