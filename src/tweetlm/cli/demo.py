"""`tweetlm demo`: import the bundled sample, curate, fine-tune the embedded model, generate."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import typer

from tweetlm.cli.app import app, console
from tweetlm.cli.data import print_curation
from tweetlm.cli.model import TRAIN_PANEL, TrainDisplay, print_generation, print_losses
from tweetlm.curate import CurateConfig, curate_account
from tweetlm.errors import InputError
from tweetlm.store import Store, file_hash

SAMPLE = "BarackObama-sample.csv"
ACCOUNT = "BarackObama"
PROMPTS = ("I don't like", "My fellow Americans,", "Today")
CREDIT = "400 tweets of @BarackObama from FiveThirtyEight's twitter-ratio data (CC BY 4.0)"


def sample_path() -> Path:
    return Path(str(resources.files("tweetlm").joinpath("data", SAMPLE)))


def run_demo(minutes: float, output: Path | None, display: Any) -> Path:
    from tweetlm.generate import GenerateConfig, Generator
    from tweetlm.models import check_base_model
    from tweetlm.sources import ReadOptions, resolve
    from tweetlm.train import TrainConfig, check_can_create, train

    # What can fail is checked before the sample goes into the store.
    config = TrainConfig(accounts=(ACCOUNT,), max_minutes=minutes)
    if output is not None:
        if output.exists():
            raise InputError(f"{output} already exists: choose another --output")
        check_can_create(output, "--output")
    check_base_model(config.base_model)
    path = sample_path()
    console.rule("1. import")
    console.print(f"sample: {CREDIT}")
    source = resolve(path, "csv")
    with Store() as store:
        result = store.import_posts(
            source.read(path, ReadOptions(account=ACCOUNT)), source="csv", path=str(path), file_hash=file_hash(path)
        )
        console.print(f"imported {result.read} posts: {result.added} new, {result.skipped} already in the store")
        console.rule("2. curate")
        dataset, report = curate_account(store, ACCOUNT, CurateConfig())
        print_curation(dataset, report)
        console.rule("3. fine-tune the embedded SmolLM2-135M-Instruct")
        try:
            run = train(config, store=store, on_event=display, output=output)
        finally:
            display.stop()
    print_losses(run.metrics)
    console.rule("4. generate (machine-generated, not written by @BarackObama)")
    generator = Generator(run.run_dir)
    for i, prompt in enumerate(PROMPTS):
        print_generation(generator.generate(prompt, GenerateConfig(n=10, seed=i)))
    console.print(f"run folder: {run.run_dir}")
    return run.run_dir


@app.command("demo", rich_help_panel=TRAIN_PANEL)
def demo_cmd(
    minutes: float = typer.Option(
        3.0, "--minutes", help="Time budget of the fine-tuning, model load to saved run (its schedule fits it)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run folder."),
) -> None:
    """The whole job on the embedded defaults, in about five minutes on a laptop CPU.

    Imports the bundled sample (400 tweets of @BarackObama, FiveThirtyEight, CC BY 4.0), curates it,
    fine-tunes the embedded SmolLM2-135M, shows validation loss before and after, and prints ten
    generated posts for a few prompts.

    Examples:

      tweetlm demo

      tweetlm demo --minutes 1 -o demo-run
    """
    if not minutes > 0:
        raise InputError(f"--minutes {minutes:g}: must be > 0")
    run_demo(minutes=minutes, output=output, display=TrainDisplay())
