"""`tweetlm update ACCOUNT`: fetch or re-import what is new and continue training the latest run on it."""

from __future__ import annotations

from pathlib import Path

import typer

from tweetlm.cli.app import app, console
from tweetlm.cli.model import TRAIN_PANEL, TrainDisplay


@app.command("update", rich_help_panel=TRAIN_PANEL)
def update_cmd(
    account: str = typer.Argument(..., help="The account whose latest run to update."),
    sources: list[Path] = typer.Option(
        [], "--from", help="A file to import first (a newer archive or CSV); repeatable."
    ),
    fetch: bool = typer.Option(
        True, "--fetch/--no-fetch", help="Fetch from the networks the account was fetched from."
    ),
    replay: float = typer.Option(1.0, "--replay", help="Older training posts replayed per new one."),
    min_new: int = typer.Option(10, "--min-new", help="New posts needed before training; fewer: wait."),
    epochs: float | None = typer.Option(None, "--epochs", help="Passes over the new data (default: the run's)."),
    learning_rate: float | None = typer.Option(None, "--lr", help="Peak learning rate (default: the run's)."),
) -> None:
    """Keep a model fresh: take what is new, train on it, keep the result only if it is better.

    Re-imports files the account came from that have changed (and any --from file), fetches from the
    networks it was fetched from, curates with the rules of its latest run, and continues training that
    run on the new posts plus a replay sample of older ones. The new run is kept, and becomes the
    latest, only if its loss on held-out new posts is lower than the old run's; either way the command
    exits 0, and says "nothing new" when there was nothing to learn, so it can run from cron.

    Examples:

      tweetlm update BarackObama

      tweetlm update BarackObama --from twitter-2025-06-01.zip

      tweetlm update someone.bsky.social --min-new 50
    """
    from tweetlm.update import UpdateConfig, update

    config = UpdateConfig(
        account=account.lstrip("@"),
        replay=replay,
        min_new=min_new,
        epochs=epochs,
        learning_rate=learning_rate,
        fetch=fetch,
        sources=tuple(sources),
    )
    display = TrainDisplay()
    try:
        result = update(config, say=lambda line: console.print(line, highlight=False), on_event=display)
    finally:
        display.stop()
    console.print(result.message, highlight=False)
    if result.run_dir is not None:
        console.print(f"run folder: [bold]{result.run_dir}[/]")
