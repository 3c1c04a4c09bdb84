"""Model commands: train, generate, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tweetlm.cli.app import app, console, err_console, given_options
from tweetlm.train import Event

TRAIN_PANEL = "Model"


class TrainDisplay:
    """Renders training events: a progress bar with loss and time left, and one line per evaluation."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, event: Event) -> None:
        kind = event["type"]
        if kind == "curated":
            from tweetlm.cli.data import report_table
            from tweetlm.curate import CurationReport

            console.print(f"{event['account']} had no curated dataset: curated with the default rules")
            console.print(report_table(CurationReport.from_dict(event["report"]), f"curation of {event['account']}"))
        elif kind == "loading":
            console.print(f"base model: {event['base_model']} ({event['precision']})")
        elif kind == "start":
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
                "train", total=event["total_steps"], completed=event["step"], loss="-", eta="-", speed=""
            )
        elif kind == "step" and self.progress is not None:
            loss = f"{event['loss']:.3f}" if event["loss"] is not None else "-"
            self.progress.update(
                self.task,
                completed=event["step"],
                loss=loss,
                eta=clock(event["eta"]),
                speed=f"{event['tokens_per_s']:.0f} tok/s",
            )
        elif kind == "eval":
            when = "base model before training" if event["step"] == 0 else f"epoch {event['epoch']:.2f}"
            line = f"{when}: validation loss {event['eval_loss']:.3f} (perplexity {event['perplexity']:.1f})"
            (self.progress.console if self.progress else console).print(line)
        elif kind == "interrupt":
            err_console.print(event["message"])
        elif kind == "leftover":
            err_console.print(f"[yellow]note:[/] {event['message']}", highlight=False, soft_wrap=True)
        elif kind == "done":
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
def train_cmd(
    ctx: typer.Context,
    accounts: list[str] = typer.Argument(..., help="Account(s) to imitate; several are balanced and merged."),
    base_model: str = typer.Option(
        "smollm2", "--base-model", "-m", help="Embedded 'smollm2', an HF model id (gpt2, ...) or a folder."
    ),
    epochs: float = typer.Option(4.0, "--epochs", help="Passes over the training posts."),
    learning_rate: float = typer.Option(1.372e-4, "--learning-rate", "--lr", help="Peak learning rate."),
    scheduler: str = typer.Option("cosine", "--scheduler", help="constant, linear or cosine."),
    warmup: float = typer.Option(0.0, "--warmup", help="Warmup as a fraction of the steps."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Gradient accumulation steps."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Posts per batch."),
    max_length: int = typer.Option(128, "--max-length", help="Tokens per post (longer ones are cut)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 where the CPU/GPU supports it), bf16 (bf16 weights, fp32 master copy), amp (autocast) "
        "or fp32.",
    ),
    group_by_length: bool = typer.Option(
        True, "--group-by-length/--no-group-by-length", help="Batch posts of similar length (less padding)."
    ),
    freeze_layers: int = typer.Option(
        0, "--freeze-layers", help="Freeze this many lower layers and the input embeddings (a tied head still trains)."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the split, the order and the initialisation."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after this many minutes (evaluates and keeps the best)."
    ),
    report_to: str = typer.Option(
        "trackio",
        "--report-to",
        help="Trackers, comma-separated: trackio (local, in TWEETLM_HOME; `tweetlm dashboard`), wandb, mlflow, "
        "tensorboard; or none.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Run folder (default: TWEETLM_HOME/runs/<accounts>-<time>)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest interrupted run of these accounts."),
    keep_checkpoints: bool = typer.Option(
        False, "--keep-checkpoints", help="Keep the Trainer checkpoints in the run folder."
    ),
    batch_tokens: int = typer.Option(
        0, "--batch-tokens", help="Tokens per batch (posts of similar length) instead of --batch-size posts; 0: off."
    ),
    packing: bool = typer.Option(
        False, "--packing/--no-packing", help="Pack each batch's posts into rows (attention stays within a post)."
    ),
    freeze_embeddings: bool = typer.Option(
        False, "--freeze-embeddings", help="Freeze the token embeddings (and an output head tied to them)."
    ),
    lora_rank: int = typer.Option(0, "--lora-rank", help="Train LoRA adapters of this rank instead of all weights."),
    lora_alpha: float = typer.Option(32.0, "--lora-alpha", help="LoRA scale numerator (scale = alpha / rank)."),
    lora_learning_rate: float = typer.Option(1e-3, "--lora-lr", help="Peak learning rate of the LoRA adapters."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: its default, one per core)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (minutes of compiling on a CPU)."),
    attention: str = typer.Option("auto", "--attention", help="auto (eager on CPU), eager or sdpa."),
    fast: bool = typer.Option(
        False,
        "--fast",
        help="1 epoch at lr 3e-4 instead of 4 at 1.372e-4: a quarter of the time for nearly the same validation "
        "loss (docs/performance.md); --epochs and --lr given here still win.",
    ),
    params_from: str | None = typer.Option(
        None, "--params-from", help="Use a sweep study's best settings (options given here still win)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", envvar="TWEETLM_SWEEP_STORAGE", help="The study's storage URL (for --params-from)."
    ),
) -> None:
    """Fine-tune a base model on the curated posts of one or more accounts.

    Defaults are HuggingTweets' sweep result (4 epochs, lr 1.372e-4, cosine, no warmup). The run folder
    holds the model (loadable by transformers.pipeline), a model card and run.json. Ctrl-C saves a
    checkpoint; --resume continues it.

    Examples:

      tweetlm train BarackObama

      tweetlm train BarackObama --fast

      tweetlm train BarackObama --max-minutes 5

      tweetlm train alice bob --base-model gpt2 --epochs 2
    """
    from tweetlm.train import FAST, TrainConfig, train

    if fast:
        given = given_options(ctx, FAST)
        epochs = epochs if "epochs" in given else FAST["epochs"]
        learning_rate = learning_rate if "learning_rate" in given else FAST["learning_rate"]
    config = TrainConfig(
        accounts=tuple(a.lstrip("@") for a in accounts),
        base_model=base_model,
        epochs=epochs,
        learning_rate=learning_rate,
        scheduler=scheduler,
        warmup=warmup,
        grad_accum=grad_accum,
        batch_size=batch_size,
        max_length=max_length,
        weight_decay=weight_decay,
        precision=precision,
        group_by_length=group_by_length,
        freeze_layers=freeze_layers,
        seed=seed,
        max_steps=max_steps,
        max_minutes=max_minutes,
        report_to=report_to,
        keep_checkpoints=keep_checkpoints,
        batch_tokens=batch_tokens,
        packing=packing,
        freeze_embeddings=freeze_embeddings,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_learning_rate=lora_learning_rate,
        threads=threads,
        compile=compile,
        attention=attention,
    )
    if params_from:
        from tweetlm.cli.sweep import apply_study_params

        config = apply_study_params(ctx, config, params_from, storage)
    display = TrainDisplay()
    try:
        result = train(config, on_event=display, output=output, resume=resume)
    finally:
        display.stop()
    m = result.metrics
    console.print(
        f"validation loss {m['eval_loss_before']:.3f} -> [bold green]{m['eval_loss_after']:.3f}[/] "
        f"(perplexity {m['perplexity_before']:.1f} -> {m['perplexity_after']:.1f}) "
        f"in {m['train_seconds'] / 60:.1f} min, {m['steps']} steps"
    )
    console.print(f"run folder: [bold]{result.run_dir}[/]")
    console.print(f'next: tweetlm generate {result.run_dir.name} "I don\'t like" -n 10')


def print_generation(gen: Any) -> None:
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
def generate_cmd(
    run: str = typer.Argument(..., help="A run folder, its name, or an account (its latest run)."),
    prompt: str = typer.Argument("", help="The start of the post."),
    n: int = typer.Option(10, "-n", "--num", help="How many posts."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Sampling temperature."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling."),
    top_k: int = typer.Option(0, "--top-k", help="Top-k sampling (0: off)."),
    max_chars: int = typer.Option(280, "--max-chars", help="Cut posts to this many characters (280 on X)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (random if not given; always printed)."),
    allow_copies: bool = typer.Option(False, "--allow-copies", help="Keep outputs that copy a training post."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Generate posts in the voice of a trained run. Outputs are machine-generated and labelled so.

    Examples:

      tweetlm generate BarackObama "I don't like" -n 10

      tweetlm generate BarackObama "" -n 5 --temperature 0.8 --seed 1 --json
    """
    from tweetlm.generate import GenerateConfig, Generator, check_prompt
    from tweetlm.train import resolve_run

    config = GenerateConfig(
        n=n,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_chars=max_chars,
        seed=seed,
        allow_copies=allow_copies,
    )
    run_dir = resolve_run(run)
    check_prompt(run_dir, prompt, config)  # before the model loads
    gen = Generator(run_dir).generate(prompt, config)
    if as_json:
        typer.echo(json.dumps(gen.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_generation(gen)


@app.command("demo", rich_help_panel=TRAIN_PANEL)
def demo_cmd(
    minutes: float = typer.Option(3.0, "--minutes", help="Training time budget."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run folder."),
) -> None:
    """The whole job on the embedded defaults, in about five minutes on a laptop CPU.

    Imports the bundled sample (400 tweets of @BarackObama, FiveThirtyEight, CC BY 4.0), curates it,
    fine-tunes the embedded SmolLM2-135M, shows validation loss before and after, and prints ten
    generated posts for a few prompts.
    """
    from tweetlm.demo import run_demo

    run_demo(minutes=minutes, output=output, display=TrainDisplay())
