"""`tweetlm fetch`: download an account's public posts from X, Bluesky or Mastodon into the store.

Only typer is imported at module level: the online sources (httpx) load when the command runs, so
`tweetlm --help` and `tweetlm fetch --help` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tweetlm.cli.app import app, console, err_console

if TYPE_CHECKING:
    from tweetlm.sources.online.fetch import FetchSummary, OnlineSource
    from tweetlm.store import Store


@app.command("fetch", rich_help_panel="Data")
def fetch_command(
    platform: str = typer.Argument(..., help="x, bluesky or mastodon.", show_default=False),
    account: str = typer.Argument(
        ..., help="@handle (X), handle.bsky.social (Bluesky) or @user@instance (Mastodon).", show_default=False
    ),
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=1, help="Read at most N posts in this run (X bills every post read)."
    ),
    include_replies: bool = typer.Option(False, "--include-replies", help="Keep replies to other accounts."),
    include_reposts: bool = typer.Option(False, "--include-reposts", help="Keep reposts (retweets, boosts)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the requests a run would send (never the token) and send none."
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        metavar="URL",
        help="API root to talk to instead of the platform's (for tests and mirrors; env TWEETLM_X_API_URL, "
        "TWEETLM_BLUESKY_URL, TWEETLM_MASTODON_URL).",
    ),
) -> None:
    """Fetch an account's public posts from X, Bluesky or Mastodon into the store.

    Each run asks only for what the store lacks: posts newer than the newest stored one, plus
    whatever an interrupted or --limit-ed earlier run left unread. Every page is stored as it
    arrives, so a failure or Ctrl-C loses nothing: run the same command again to continue.

    X needs an app's Bearer Token in **X_BEARER_TOKEN** (developer.x.com portal) and serves only an
    account's newest 3,200 posts (import the archive for older ones); Bluesky and Mastodon need no
    account. Reposts and replies to others are left out unless asked for.

    Examples:

      X_BEARER_TOKEN=... tweetlm fetch x @jack --limit 500

      tweetlm fetch bluesky jay.bsky.team

      tweetlm fetch mastodon @Gargron@mastodon.social --include-replies

      tweetlm fetch x @jack --dry-run
    """
    from tweetlm.sources.online.fetch import FetchOptions, open_source, plan
    from tweetlm.sources.online.http import RetryPolicy
    from tweetlm.store import Store

    def notify(message: str) -> None:
        err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)

    options = FetchOptions(
        include_replies=include_replies,
        include_reposts=include_reposts,
        base_url=base_url,
        policy=RetryPolicy.from_env(),
        notify=notify,
    )
    source = open_source(platform, account, options)
    with Store() as store:
        if dry_run:
            console.print(f"dry run: the requests `tweetlm fetch {source.platform}` would send first (none is sent)")
            for request in plan(source, store):
                console.print(f"  {request}", highlight=False, soft_wrap=True, markup=False)
            return
        summary = _run(source, store, limit)
    _report(summary)


def _run(source: OnlineSource, store: Store, limit: int | None) -> FetchSummary:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from tweetlm.sources.online.fetch import fetch

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} posts read"),
        TimeElapsedColumn(),
    )
    total = limit if limit is not None else source.max_posts
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task(f"fetching {source.platform} {source.account}", total=total)

        def on_page(summary: FetchSummary) -> None:
            progress.update(
                task,
                completed=summary.read,
                description=f"fetching {source.platform} {summary.account}: {summary.added} new",
            )

        try:
            return fetch(source, store, limit=limit, on_page=on_page)
        except KeyboardInterrupt:
            progress.stop()
            err_console.print(
                "interrupted: every page fetched so far is stored; run the same command again to continue"
            )
            raise typer.Exit(130) from None


def _report(summary: FetchSummary) -> None:
    name = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon"}[summary.platform]
    dropped = sum(summary.dropped.values())
    reasons = ", ".join(f"{reason}: {n}" for reason, n in summary.dropped.most_common())
    console.print(
        f"{name} {summary.account}: read {_count(summary.read, 'post')} in {_count(summary.pages, 'page')} "
        f"({_count(summary.requests, 'request')}): {summary.added} new, {summary.skipped} already stored, "
        f"{dropped} dropped{f' ({reasons})' if reasons else ''}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.platform == "x":
        console.print(f"X bills API access per post read: this run read {summary.read} posts.", highlight=False)
        if summary.backfilled:
            console.print(
                "X serves only an account's newest 3,200 posts: for older ones, import the account's archive "
                "(tweetlm import twitter-archive.zip).",
                highlight=False,
            )
    if summary.complete:
        console.print("Up to date: the next run asks only for newer posts.", highlight=False)
    elif summary.limited:
        console.print("Stopped at --limit: run the same command again to fetch older posts.", highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
