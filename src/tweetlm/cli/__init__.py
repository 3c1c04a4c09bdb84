"""Command-line interface. Each module registers its commands on the one Typer `app`."""

from tweetlm.cli import data  # noqa: F401  (registers import, accounts, curate, show)
from tweetlm.cli.app import app, main

__all__ = ["app", "main"]
