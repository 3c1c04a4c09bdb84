"""Command-line interface. Each module registers its commands on the one Typer `app`."""

from tweetlm.cli import data, demo, evaluate, export, fetch, model, sweep, update, web  # noqa: F401  (each registers its commands)
from tweetlm.cli.app import app, main

__all__ = ["app", "main"]
