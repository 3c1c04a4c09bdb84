"""Command-line interface. Each module registers its commands on the one Typer `app`."""

from tweetlm.cli import data, demo, evaluate, fetch, model, sweep, web  # noqa: F401  (each module registers its commands)
from tweetlm.cli.app import app, main

__all__ = ["app", "main"]
