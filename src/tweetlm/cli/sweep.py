"""Sweep commands: sweep, sweep-report (and `train --params-from`'s helper)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from tweetlm.cli.app import app, console, err_console, given_options
from tweetlm.cli.options import config_options
from tweetlm.events import Event, StudyOpened, TrainingAccount, TrialEnded, TrialStarted, Waiting
from tweetlm.train import TrainConfig

if TYPE_CHECKING:
    from rich.status import Status

    from tweetlm.sweep import SweepResult


SWEEP_PANEL = "Sweeps"
STORAGE_HELP = (
    "Optuna storage URL (default: sqlite under TWEETLM_HOME). A postgresql://USER:PASSWORD@HOST:PORT/DB "
    "lets workers on many machines share one study; prefer the TWEETLM_SWEEP_STORAGE variable for passwords."
)
STORAGE_ENV = "TWEETLM_SWEEP_STORAGE"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value else f"{value:g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


class SweepDisplay:
    """Renders sweep events: the study, a status line while a trial trains, one line per finished trial."""

    def __init__(self) -> None:
        self.status: Status | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case StudyOpened():
                console.print(
                    f"study [bold]{event.study}[/] in {event.storage}: {event.done} of {event.n_trials} "
                    f"trials taken; objective: {event.objective}",
                    highlight=False,
                )
                console.print(space_table(event.space))
            case TrialStarted():
                self.stop()
                self.status = console.status(f"trial {event.number}: {escape(_params(event.params))}")
                self.status.start()
            case TrainingAccount() if self.status is not None:
                self.status.update(f"trial {event.number}: training {event.account} ({event.index + 1}/{event.of})")
            case TrialEnded():
                self.stop()
                console.print(trial_line(event.row), highlight=False, soft_wrap=True)
            case Waiting():
                self.stop()
                console.print(f"waiting for {event.running} trial(s) running on other workers", style="dim")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def space_table(space: dict[str, Any]) -> Table:
    table = Table("setting", "searched over", title="search space", title_justify="left")
    for name, dim in space["search"].items():
        if "choices" in dim:
            over = " / ".join(_value(c) for c in dim["choices"])
        else:
            over = f"{_value(dim['low'])} .. {_value(dim['high'])}" + (" (log)" if dim["log"] else "")
        table.add_row(name, over)
    for name, value in space["fixed"].items():
        table.add_row(name, f"{_value(value)} (fixed)")
    return table


def trial_line(row: dict[str, Any]) -> str:
    colour = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}.get(row["state"], "white")
    text = f"trial {row['number']:>3} [{colour}]{row['state']:<8}[/]"
    if row["value"] is not None:
        losses = ", ".join(f"{a} {v:.3f}" for a, v in row["losses"].items())
        text += f" objective [bold]{row['value']:.4f}[/] (mean {row['mean_loss']:.3f}; {losses})"
    if row["seconds"] is not None:
        text += f" {row['seconds']:.0f}s"
    if row["retry_of"] is not None:
        text += f" retry of trial {row['retry_of']}"
    if row["reason"]:
        text += f" - {escape(row['reason'])}"
    if row["state"] == "FAIL" and row["reason"] and row["reason"].startswith("interrupted"):
        text += ": re-queued"
    return text + f"\n      {escape(_params(row['params']))}"


@app.command("sweep", rich_help_panel=SWEEP_PANEL)
@config_options(
    TrainConfig,
    ("base_model", "batch_size", "max_length", "precision", "seed", "max_steps"),
    helps={"max_steps": "Cap each training at this many steps (quick, rough sweeps)."},
)
def sweep_cmd(
    accounts: list[str] = typer.Argument(..., help="Accounts: every trial trains one model per account."),
    trials: int = typer.Option(20, "--trials", "-n", help="Trials in the study, shared by all its workers."),
    study: str | None = typer.Option(None, "--study", help="Study name (default: sweep-ACCOUNT+ACCOUNT...)."),
    storage: str | None = typer.Option(None, "--storage", envvar=STORAGE_ENV, help=STORAGE_HELP),
    space: Path | None = typer.Option(
        None, "--space", help="TOML/YAML file overriding the search space: ranges, choices or fixed values."
    ),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop the sweep after this many minutes (the running trial is re-queued)."
    ),
    pruner: str = typer.Option("median", "--pruner", help="median, halving (successive halving) or none."),
    keep_models: bool = typer.Option(
        False, "--keep-models", help="Keep each trial's models under TWEETLM_HOME/sweeps/STUDY/."
    ),
    heartbeat: int = typer.Option(
        60, "--heartbeat", help="Seconds between worker heartbeats; a trial silent for 3 beats is retried."
    ),
    options: dict[str, Any] | None = None,
) -> None:
    """Search hyperparameters that work for everyone: HuggingTweets' sweep, on Optuna.

    Each trial fine-tunes one model per account and scores mean + 1 std of their best validation
    losses; hopeless trials are pruned after an evaluation. Run the same command on more machines with a shared
    --storage postgresql://... to add workers; a killed worker's trial is retried by another.

    A worker is one process: it cannot be a torchrun / accelerate launch job (each process would
    draw its own trial). Scale a sweep out with more workers, one per machine or GPU.

    Examples:

      tweetlm sweep alice bob --trials 30

      tweetlm sweep alice bob --trials 8 --max-steps 40 --max-minutes 60 --space space.toml

      TWEETLM_SWEEP_STORAGE=postgresql://me:pw@db:5432/sweeps tweetlm sweep alice bob -n 200 --study big
    """
    from tweetlm import distributed
    from tweetlm.errors import InputError
    from tweetlm.sweep import SearchSpace, SweepConfig, run_sweep

    if distributed.world_size() > 1:
        raise InputError(
            "a sweep worker cannot run under torchrun or accelerate launch: start more workers instead "
            "(the same command, with a shared --storage)"
        )

    base = TrainConfig(
        accounts=tuple(a.lstrip("@") for a in accounts),
        **(options or {}),
        report_to="none",  # one tracker run per trial and account would drown the tracker
    )
    config = SweepConfig(
        base=base,
        n_trials=trials,
        study=study,
        storage=storage,
        space=SearchSpace.from_file(space) if space else SearchSpace(),
        max_minutes=max_minutes,
        pruner=pruner,
        keep_models=keep_models,
        heartbeat=heartbeat,
    )
    _quiet_optuna()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # a weight-loading bar and warnings per trial and account drown the display
    hf_logging.disable_progress_bar()
    display = SweepDisplay()
    try:
        result = run_sweep(config, on_event=display)
    finally:
        display.stop()
    _print_result(result, base.accounts)


def _print_result(result: SweepResult, accounts: tuple[str, ...]) -> None:
    """What the sweep did, its best trial so far, and what to run next."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
    retried = f" ({result.retried} killed or stopped, then retried)" if result.retried else ""
    console.print(f"study {result.study}: {states}{retried}; {len(result.ran)} run by this worker")
    if result.best:
        console.print(
            f"best: trial {result.best['number']}, objective [bold green]{result.best['value']:.4f}[/]: "
            f"{escape(_params(result.best['params']))}",
            highlight=False,
        )
    if result.stopped == "deadline":
        console.print("stopped at --max-minutes; run the same command to go on", style="yellow")
    elif result.stopped == "interrupted":
        err_console.print("interrupted: run the same command to go on (the unfinished trial is queued)")
        raise typer.Exit(130)
    console.print(f"next: tweetlm sweep-report {result.study}")
    console.print(f"      tweetlm train {' '.join(accounts)} --params-from {result.study}")


def _quiet_optuna() -> None:
    """Optuna logs every trial (failures with tracebacks); the display says it in one line."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


@app.command("sweep-report", rich_help_panel=SWEEP_PANEL)
def sweep_report_cmd(
    study: str = typer.Argument(..., help="Study name (as printed by `tweetlm sweep`)."),
    storage: str | None = typer.Option(None, "--storage", envvar=STORAGE_ENV, help=STORAGE_HELP),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder for the plots and CSV (default: TWEETLM_HOME/sweeps/STUDY)."
    ),
) -> None:
    """The best trial, parameter importance (random forest and fANOVA), plots and the trials as CSV.

    Writes parallel_coordinate.png/.html, importance.png/.html and trials.csv.

    Examples:

      tweetlm sweep-report sweep-alice+bob

      tweetlm sweep-report big --storage postgresql://me:pw@db:5432/sweeps -o report/
    """
    from tweetlm.sweep import IMPORTANCE_METHODS, sweep_report

    _quiet_optuna()
    with console.status("analysing the study"):
        report = sweep_report(study, storage, output)
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(report.states.items()))
    console.print(f"study [bold]{study}[/]: {states}", highlight=False)
    if report.best:
        best = report.best
        table = Table("best trial", str(best["number"]), title="best trial", title_justify="left")
        table.add_row("objective (mean + 1 std)", f"{best['value']:.4f}")
        table.add_row("mean validation loss", f"{best['mean_loss']:.4f}")
        for account, loss in best["losses"].items():
            table.add_row(f"  {account}", f"{loss:.4f}")
        for name, value in best["params"].items():
            table.add_row(name, _value(value))
        console.print(table)
    else:
        console.print("no trial has finished yet", style="yellow")
    if report.importance:
        table = Table("parameter", *IMPORTANCE_METHODS, title="parameter importance", title_justify="left")
        for name, by_method in report.importance.items():
            table.add_row(name, *(f"{by_method[m]:.3f}" for m in IMPORTANCE_METHODS))
        console.print(table)
    if report.note:
        console.print(report.note, style="yellow")
    for path in report.files:
        console.print(f"wrote {path}", highlight=False)


def apply_study_params(ctx: typer.Context, config: TrainConfig, study: str, storage: str | None) -> TrainConfig:
    """`train --params-from`: the study's best settings replace the defaults, not options given on the command line."""
    from tweetlm.sweep import study_train_settings

    _quiet_optuna()
    settings, summary = study_train_settings(study, storage)
    given = given_options(ctx, settings)
    changes = {k: v for k, v in settings.items() if k not in given and getattr(config, k) != v}
    console.print(
        f"settings from study {study} (trial {summary['trial']}, objective {summary['value']:.4f}): "
        + (escape(_params(changes)) or "the defaults"),
        highlight=False,
    )
    if given:
        console.print(f"kept from the command line: {', '.join(sorted(given))}", style="dim")
    if summary["base_model"] and summary["base_model"] != config.base_model:
        console.print(f"note: the study tuned base model {summary['base_model']}", style="yellow", highlight=False)
    return dataclasses.replace(config, **changes)
