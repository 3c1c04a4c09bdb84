"""The Typer app and the one place where library errors become one-line messages."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import typer
from rich.console import Console

from tweetlm import __version__
from tweetlm.errors import TweetlmError

app = typer.Typer(
    name="tweetlm",
    help=(
        "Learn to write like one person: import their posts, curate them, fine-tune a small language "
        "model on a laptop CPU, and generate new posts in that voice (labelled as machine-generated).\n\n"
        "Quick start:\n\n```\n"
        "tweetlm demo                          # everything on a bundled sample\n"
        "tweetlm import twitter-archive.zip    # or a CSV, JSONL or text file\n"
        "tweetlm curate myhandle\n"
        "tweetlm train myhandle\n"
        'tweetlm generate myhandle "I don\'t like" -n 10\n```'
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def given_options(ctx: typer.Context, names: Iterable[str]) -> set[str]:
    """The parameters among `names` that the command line or the environment set (not left at defaults)."""
    # By name: Typer ships its own copy of click, whose ParameterSource is not click's.
    return {n for n in names if getattr(ctx.get_parameter_source(n), "name", None) in ("COMMANDLINE", "ENVIRONMENT")}


def _version(value: bool) -> None:
    if value:
        console.print(f"tweetlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    pass


class _StderrWarnings(logging.Handler):
    """tweetlm's logged warnings, as one `warning:` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False, soft_wrap=True)


def log_warnings_to_stderr() -> None:
    logger = logging.getLogger("tweetlm")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        logger.addHandler(_StderrWarnings(logging.WARNING))
        logger.setLevel(logging.INFO)


def main() -> None:
    log_warnings_to_stderr()
    try:
        app()
    except TweetlmError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
