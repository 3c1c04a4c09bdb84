"""`tweetlm serve`: the web app. Gradio loads only when the command runs (`pip install 'tweetlm[web]'`)."""

from __future__ import annotations

import importlib.util

import typer

from tweetlm.cli.app import app, console, err_console, fail


@app.command("serve", rich_help_panel="Web")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(7860, "--port", "-p", min=1, max=65535, help="Port to listen on."),
    public: bool = typer.Option(
        False,
        "--public",
        help="Allow a --host other than 127.0.0.1 (the app has no login: anyone who reaches it can use it).",
    ),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", min=1, help="Largest file a page may upload, in MB."),
) -> None:
    """Open the web app: import posts, train and generate in the browser.

    Three steps: **Data** (upload an X archive, CSV, JSONL or text file, or fetch an account; see what
    curation kept), **Train** (a live progress bar and loss chart; jobs wait in a queue and keep running
    when the page is closed), **Generate** (post cards, each labelled machine-generated).

    Examples:

      tweetlm serve

      tweetlm serve --port 8080

      tweetlm serve --host 0.0.0.0 --public    # other machines can reach it: no login!
    """
    if importlib.util.find_spec("gradio") is None:
        raise fail("the web app needs Gradio: pip install 'tweetlm[web]'")
    from tweetlm.web.ui import LOOPBACK, check_host, check_port, serve

    check_host(host, public)
    check_port(host, port)
    if host not in LOOPBACK:
        err_console.print(
            f"[bold yellow]warning:[/] serving on {host}:{port} without a login: anyone who can reach this "
            "machine can upload data, train (using its CPU) and read every run in the store",
            highlight=False,
            soft_wrap=True,
        )

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    serve(host, port, public, max_upload_mb, say=say)
