"""`tweetlm demo`: import the bundled sample, curate, fine-tune the embedded model, generate."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

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
    from tweetlm.cli.app import console
    from tweetlm.cli.data import print_curation
    from tweetlm.cli.model import print_generation
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
    m = run.metrics
    console.print(
        f"validation loss: base model {m['eval_loss_before']:.3f} -> "
        f"fine-tuned [bold green]{m['eval_loss_after']:.3f}[/] "
        f"(perplexity {m['perplexity_before']:.1f} -> {m['perplexity_after']:.1f}), {m['train_seconds']:.0f} s"
    )
    console.rule("4. generate (machine-generated, not written by @BarackObama)")
    generator = Generator(run.run_dir)
    for i, prompt in enumerate(PROMPTS):
        print_generation(generator.generate(prompt, GenerateConfig(n=10, seed=i)))
    console.print(f"run folder: {run.run_dir}")
    return run.run_dir
