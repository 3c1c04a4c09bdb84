"""Model commands: train, generate, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tweetlm import distributed
from tweetlm.cli.app import app, console, err_console, given_options
from tweetlm.cli.options import config_options
from tweetlm.events import (
    Curated,
    Done,
    EarlyStopOff,
    Evaluated,
    Event,
    Interrupting,
    Leftover,
    Loading,
    Started,
    Step,
    Stopped,
)
from tweetlm.generate import GenerateConfig, Generation
from tweetlm.runs import Metrics
from tweetlm.train import TrainConfig

TRAIN_PANEL = "Model"


class TrainDisplay:
    """Renders training events: a progress bar with loss and time left, one line per evaluation and one
    on why training stopped."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, event: Event) -> None:
        match event:
            case Curated(account=account, report=report):
                from tweetlm.cli.data import report_table
                from tweetlm.curate import CurationReport

                console.print(f"{account} had no curated dataset: curated with the default rules")
                console.print(report_table(CurationReport.from_dict(report), f"curation of {account}"))
            case Loading():
                console.print(f"base model: {event.base_model} ({event.precision})")
            case Started():
                self.progress = Progress(
                    TextColumn("[bold]training"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"),
                    TextColumn("{task.fields[speed]}"),
                    TimeElapsedColumn(),
                    TextColumn("left {task.fields[eta]}"),
                    console=console,
                )
                self.progress.start()
                self.task = self.progress.add_task(
                    "train", total=event.total_steps, completed=event.step, loss="-", eta="-", speed=""
                )
            case Step() if self.progress is not None:
                self.progress.update(
                    self.task,
                    completed=event.step,
                    loss=f"{event.loss:.3f}" if event.loss is not None else "-",
                    eta=clock(event.eta),
                    speed=f"{event.tokens_per_s:.0f} tok/s",
                )
            case Evaluated():
                when = "base model before training" if event.step == 0 else f"epoch {event.epoch:.2f}"
                line = f"{when}: validation loss {event.eval_loss:.3f} (perplexity {event.perplexity:.1f})"
                (self.progress.console if self.progress else console).print(line)
            case EarlyStopOff():
                err_console.print(f"[yellow]note:[/] {event.message}", highlight=False, soft_wrap=True)
            case Stopped():
                (self.progress.console if self.progress else console).print(event.stopping.message, highlight=False)
            case Interrupting():
                err_console.print(event.message)
            case Leftover():
                err_console.print(f"[yellow]note:[/] {event.message}", highlight=False, soft_wrap=True)
            case Done():
                self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def clock(seconds: float) -> str:
    """12:05, or 1:02:05 past an hour (a bare %M:%S wraps: 3580 s would read 59:40)."""
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@app.command("train", rich_help_panel=TRAIN_PANEL)
@config_options(TrainConfig)
def train_cmd(
    ctx: typer.Context,
    accounts: list[str] = typer.Argument(..., help="Account(s) to imitate; several are balanced and merged."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Run folder (default: TWEETLM_HOME/runs/<accounts>-<time>)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest interrupted run of these accounts."),
    recipe: str = typer.Option(
        "tweetlm",
        "--recipe",
        help="tweetlm (the default: up to 2 epochs of 16-post batches at lr 2e-4 in a 4.5-minute budget, early "
        "stopping) or huggingtweets (4 epochs of 16-post batches at lr 1.372e-4, no budget, no early stopping); "
        "options given here still win.",
    ),
    params_from: str | None = typer.Option(
        None, "--params-from", help="Use a sweep study's best settings (options given here still win)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", envvar="TWEETLM_SWEEP_STORAGE", help="The study's storage URL (for --params-from)."
    ),
    as_base: str | None = typer.Option(
        None,
        "--as-base",
        help="Save the model as a post-style base NAME (in TWEETLM_HOME/bases) that --base-model NAME starts from.",
    ),
    options: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a base model on the curated posts of one or more accounts.

    The default recipe was chosen for a CPU on seven real accounts (docs/performance.md): up to 2 epochs
    of 16-post batches at lr 2e-4 (cosine), evaluated every half epoch, stopping early when the validation loss stops
    improving, in a 4.5-minute budget to which the learning-rate schedule is fitted (--max-minutes 0:
    none). --recipe huggingtweets is HuggingTweets' GPU recipe. The run folder holds the model (loadable
    by transformers.pipeline), a model card and run.json. Ctrl-C saves a checkpoint; --resume continues it.

    Examples:

      tweetlm train BarackObama

      tweetlm train BarackObama --recipe huggingtweets

      tweetlm train BarackObama --max-minutes 10

      tweetlm train alice bob --base-model gpt2 --epochs 2

      tweetlm train alice bob --mix alice=0.7,bob=0.3

      tweetlm train alice bob carol --as-base posts  # then: tweetlm train dave --base-model posts

      torchrun --standalone --nproc_per_node 2 $(which tweetlm) train BarackObama   # 2 processes (README)
    """
    from tweetlm.train import RECIPES, train

    if as_base:
        from tweetlm.errors import InputError
        from tweetlm.models import named_base_dir

        if output is not None:
            raise InputError("give --output or --as-base, not both")
        output = named_base_dir(as_base)
        if output.exists():
            raise InputError(f"a base named {as_base!r} already exists ({output}): choose another name")

    options = dict(options or {})
    if recipe not in RECIPES:
        from tweetlm.errors import InputError

        raise InputError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    given = given_options(ctx, RECIPES[recipe])
    options |= {name: value for name, value in RECIPES[recipe].items() if name not in given}
    config = TrainConfig(accounts=tuple(a.lstrip("@") for a in accounts), **options)
    if params_from:
        from tweetlm.cli.sweep import apply_study_params

        config = apply_study_params(ctx, config, params_from, storage)
    display = TrainDisplay()
    try:
        result = train(config, on_event=display, output=output, resume=resume)
    finally:
        display.stop()
    if not distributed.is_main():
        return
    print_losses(result.metrics)
    console.print(f"run folder: [bold]{result.run_dir}[/]")
    if as_base:
        console.print(f"next: tweetlm train ACCOUNT --base-model {as_base}")
    else:
        console.print(f'next: tweetlm generate {result.run_dir.name} "I don\'t like" -n 10')


def print_losses(m: Metrics) -> None:
    console.print(
        f"validation loss: base model {m.eval_loss_before:.3f} -> fine-tuned [bold green]{m.eval_loss_after:.3f}[/] "
        f"(perplexity {m.perplexity_before:.1f} -> {m.perplexity_after:.1f}) "
        f"in {m.train_seconds / 60:.1f} min, {m.steps} steps"
    )


def print_generation(gen: Generation) -> None:
    console.print(
        f"[bold]{len(gen.posts)} posts[/] from {Path(gen.run).name}, [italic]{gen.label}[/] "
        f"(seed {gen.seed}, temperature {gen.settings['temperature']}, top-p {gen.settings['top_p']})"
    )
    for i, text in enumerate(gen.posts, 1):
        console.print(f"{i:>3}. [generated] {text}", markup=False, highlight=False, soft_wrap=True)
    if gen.dropped_copies or gen.dropped_empty:
        console.print(
            f"dropped {gen.dropped_copies} that copied a training post and {gen.dropped_empty} empty ones",
            style="dim",
        )


@app.command("generate", rich_help_panel=TRAIN_PANEL)
@config_options(GenerateConfig, ("n", "temperature", "top_p", "top_k", "max_chars", "seed", "allow_copies"))
def generate_cmd(
    run: str = typer.Argument(
        ..., help="A run folder, its name, or an account (its latest run); with --few-shot, an account."
    ),
    prompt: str = typer.Argument("", help="The start of the post."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    few_shot: int = typer.Option(
        0, "--few-shot", help="No training: prompt the untouched instruct model with this many real posts."
    ),
    pick: str = typer.Option("random", "--pick", help="With --few-shot: random posts, or those similar to the prompt."),
    base_model: str = typer.Option("smollm2", "--base-model", "-m", help="With --few-shot: the model to prompt."),
    options: dict[str, Any] | None = None,
) -> None:
    """Generate posts in the voice of a trained run. Outputs are machine-generated and labelled so.

    Examples:

      tweetlm generate BarackObama "I don't like" -n 10

      tweetlm generate BarackObama "" -n 5 --temperature 0.8 --seed 1 --json

      tweetlm generate BarackObama --few-shot 8 -n 5          # no training: 8 real posts in the prompt

      tweetlm generate BarackObama "Health care" --few-shot 8 --pick similar
    """
    config = GenerateConfig(**(options or {}))
    if few_shot:
        from tweetlm.curate import account_texts
        from tweetlm.fewshot import FewShotGenerator
        from tweetlm.models import resolve_base_model
        from tweetlm.store import Store

        with Store(create=False) as store:
            account = store.resolve_account(run)
            posts = account_texts(store, account)
        embed = None
        if pick == "similar":
            from tweetlm.evaluate import Embedder

            embed = Embedder()
        generator = FewShotGenerator(resolve_base_model(base_model).path, account, posts, few_shot, pick, embed=embed)
        gen = generator.generate(prompt, config)
    else:
        from tweetlm.generate import Generator, check_prompt
        from tweetlm.runs import RunFolder

        run_dir = RunFolder.resolve(run).path
        check_prompt(run_dir, prompt, config)  # before the model loads
        gen = Generator(run_dir).generate(prompt, config)
    if as_json:
        typer.echo(json.dumps(gen.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_generation(gen)
