"""Measuring commands: eval, compare, report, dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from tweetlm.cli.app import app, console, err_console
from tweetlm.cli.options import config_options
from tweetlm.evaluate import EvalConfig

PANEL = "Measure"


@app.command("eval", rich_help_panel=PANEL)
@config_options(EvalConfig)
def eval_cmd(
    run: str = typer.Argument(..., help="A run folder, its name, or an account (its latest run)."),
    as_json: bool = typer.Option(False, "--json", help="Print eval.json instead of the table."),
    options: dict[str, Any] | None = None,
) -> None:
    """Measure a run against its untouched base model: validation loss, copying, diversity, shape, voice.

    Saves eval.json in the run folder. The same run, seed and machine give the same figures.

    Examples:

      tweetlm eval BarackObama

      tweetlm eval BarackObama -n 200 --seed 1 --json

      tweetlm eval BarackObama --contrast-run alrocar   # a model of another account: should not sound like Obama

    The voice check needs at least 3 other accounts in the store (--min-other-accounts): against a single
    one, telling the account apart is too easy to mean anything.
    """
    from tweetlm.evaluate import evaluate_run
    from tweetlm.runs import RunFolder

    config = EvalConfig(**(options or {}))
    run_dir = RunFolder.resolve(run).path
    with console.status("evaluating") as status:
        result = evaluate_run(run_dir, config, progress=lambda message: status.update(message))
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print_eval(result)
    console.print(f"saved {run_dir / 'eval.json'}; next: tweetlm report {run_dir.name}")


def print_eval(result: dict[str, Any]) -> None:
    from tweetlm.evaluate import table_header, table_rows, voice_summary

    settings = result["settings"]
    table = Table(
        title=f"{result['run']}: fine-tuned vs base model ({result['base_model']})",
        caption=f"{settings['n']} posts per model, seed {settings['seed']}; generated posts are {result['label']}",
    )
    first, *columns = table_header(result)
    table.add_column(first)
    for name in columns:
        table.add_column(name, justify="right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    if line := voice_summary(result):
        console.print(line, style="dim", highlight=False)
    for note in result["notes"]:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


@app.command("compare", rich_help_panel=PANEL)
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Run folders, names or accounts (each account's latest run)."),
    output: Path = typer.Option(
        Path("compare-losses.png"), "--output", "-o", help="Where to write the plot of validation losses (PNG)."
    ),
) -> None:
    """Compare runs (accounts or settings): a table and one plot of their validation-loss curves.

    Examples:

      tweetlm compare BarackObama elonmusk

      tweetlm compare runs/a-20240101-120000 runs/a-20240102-090000 -o lr.png
    """
    from tweetlm.report import comparison_rows, load_runs, plot_validation_losses, write_png
    from tweetlm.runs import RunFolder

    loaded = load_runs([RunFolder.resolve(r).path for r in runs])
    rows = comparison_rows(loaded)
    path = write_png(output, plot_validation_losses([(run_dir.name, run) for run_dir, run in loaded]))

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.0f}%"

    bases = sorted({row["base"] for row in rows})
    table = Table(
        title=f"validation loss by run, best first (base model: {', '.join(bases)})",
        caption="loss: validation loss after training (epoch 0 in the plot: before); from `tweetlm eval RUN`: "
        "copies: generated posts sharing 8+ words with a training post, dist-2: distinct bigrams, "
        "voice: generated posts attributed to the account",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("run", overflow="fold")
    if len(bases) > 1:
        table.add_column("base")
    for name in ("steps", "loss", "ppl", "copies", "dist-2", "voice"):
        table.add_column(name, justify="right")
    for row in sorted(rows, key=lambda r: r["eval_loss_after"]):
        table.add_row(
            row["run"],
            *([row["base"]] if len(bases) > 1 else []),
            str(row["steps"]),
            f"{row['eval_loss_after']:.3f}",
            f"{row['perplexity_after']:.1f}",
            pct(row["copies"]),
            "–" if row["distinct_2"] is None else f"{row['distinct_2']:.2f}",
            pct(row["voice"]),
        )
    console.print(table)
    console.print(f"plot: [bold]{path}[/]")


@app.command("report", rich_help_panel=PANEL)
def report_cmd(
    run: str = typer.Argument(..., help="A run folder, its name, or an account (its latest run)."),
) -> None:
    """Write report.html in the run folder: loss curves, curation, evaluation and sample predictions.

    A single self-contained page (no external files). Run `tweetlm eval RUN` first to include the evaluation.

    Example:

      tweetlm report BarackObama
    """
    from tweetlm.report import write_report
    from tweetlm.runs import RunFolder

    path = write_report(RunFolder.resolve(run).path)
    console.print(f"report: [bold]{path}[/]")


@app.command("map", rich_help_panel=PANEL)
def map_cmd(
    accounts: list[str] = typer.Argument(None, help="Accounts (default: every imported account)."),
    topics: int = typer.Option(0, "--topics", "-k", help="Topics per account (0: about sqrt(posts / 15))."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clustering and the projection."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Folder of map.html, the PNGs and map.json."),
    runs: list[str] = typer.Option(
        [], "--run", "-r", help="Place this evaluated run's posts (repeatable; default: each account's latest)."
    ),
) -> None:
    """Map topics within each account (clusters of post embeddings, labelled by c-TF-IDF) and the
    accounts by style, with the posts `tweetlm eval` generated for each placed on the same map.

    Examples:

      tweetlm map BarackObama

      tweetlm map BarackObama elonmusk --topics 6 --seed 1 -o maps/

      tweetlm map --run BarackObama-20261205-025315 --run elonmusk-20261205-031331
    """
    from tweetlm import paths
    from tweetlm.curate import account_texts
    from tweetlm.evaluate import Embedder
    from tweetlm.maps import (
        account_maps,
        generated_by_account,
        plot_style,
        plot_topics,
        run_posts,
        topic_rows,
        write_maps_page,
    )
    from tweetlm.report import write_png
    from tweetlm.store import Store

    given = run_posts(runs)  # before the store is opened: a bad --run leaves TWEETLM_HOME as it was
    with Store(create=False) as store:
        named = [store.resolve_account(a) for a in accounts] if accounts else []
        everyone = sorted({s.account for s in store.accounts()})
        real = {a: account_texts(store, a) for a in everyone}
    real = {a: texts for a, texts in real.items() if texts}
    topics_of = named or sorted(real)
    with console.status("embedding posts and clustering"):
        topic_maps, style, notes = account_maps(
            real, generated_by_account(sorted(real), given), Embedder(), topics_of, topics or None, seed
        )
    folder = output or paths.home() / "maps"
    folder.mkdir(parents=True, exist_ok=True)
    for tm in topic_maps:
        table = Table(title=f"topics of @{tm.account} ({len(tm.labels)} posts, seed {seed})", box=box.SIMPLE_HEAD)
        for name in ("topic", "posts", "share", "distinctive words (c-TF-IDF)", "closest post"):
            table.add_column(name, overflow="fold")
        for row in topic_rows(tm):
            table.add_row(*row)
        console.print(table)
        write_png(folder / f"topics-{tm.account}.png", plot_topics(tm))
    if style is not None:
        for account, share in style.lands_near.items():
            console.print(f"generated posts of @{account}: {100 * share:.0f}% nearest its own centroid")
        write_png(folder / "style-map.png", plot_style(style))
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    data = {"topics": [tm.to_dict() for tm in topic_maps], "style": style.to_dict() if style else None}
    paths.write_json(folder / "map.json", data)
    page = write_maps_page(folder / "map.html", topic_maps, style, notes)
    console.print(f"map: [bold]{page}[/]")


@app.command("dashboard", rich_help_panel=PANEL)
def dashboard_cmd(
    port: int | None = typer.Option(None, "--port", help="Port of the dashboard (default: trackio's)."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open it in the browser."),
) -> None:
    """Open the trackio dashboard of tracked training runs (kept locally in TWEETLM_HOME/trackio).

    Examples:

      tweetlm dashboard

      tweetlm dashboard --port 7861 --no-open
    """
    import importlib.util

    from tweetlm.errors import InputError
    from tweetlm.tracking import PROJECT, use_trackio_dir

    if importlib.util.find_spec("trackio") is None:
        raise InputError("trackio is not installed: pip install 'tweetlm[eval]'")
    folder = use_trackio_dir()
    if not (folder / f"{PROJECT}.db").is_file():
        raise InputError(f"no tracked runs in {folder}: train one with `tweetlm train ACCOUNT` (--report-to trackio)")
    import trackio

    console.print(f"trackio runs in {folder} (Ctrl-C to stop)")
    trackio.show(project=PROJECT, open_browser=open_browser, server_port=port, block_thread=True)
