"""What training and sweeps tell their caller while they run: one frozen dataclass per kind of event.

A handler is any callable that takes an `Event`; it matches on the classes (`match event: case Step():`),
so a misspelt kind is a NameError, not an event silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tweetlm.runs import Metrics, Stopping

# ---- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curated:
    """An account had no curated dataset: it was curated with the default rules."""

    account: str
    report: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class Loading:
    base_model: str
    precision: str


@dataclass(frozen=True)
class Started:
    """The Trainer starts (at `step` > 0 when resuming)."""

    total_steps: int
    step: int
    steps_per_epoch: int
    tokens_per_epoch: int


@dataclass(frozen=True)
class Step:
    step: int
    total_steps: int
    epoch: float | None
    elapsed: float
    eta: float
    tokens_per_s: float
    loss: float | None  # the last logged training loss


@dataclass(frozen=True)
class Evaluated:
    """A validation loss: of the base model at step 0, then `evals_per_epoch` times an epoch."""

    step: int
    epoch: float
    eval_loss: float
    perplexity: float


@dataclass(frozen=True)
class Logged:
    """What the Trainer logged at a step: loss, learning rate, gradient norm, ..."""

    step: int
    loss: float
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EarlyStopOff:
    """Early stopping is on, but this run trains its fixed schedule: `message` says why (too few validation
    posts to judge)."""

    message: str


@dataclass(frozen=True)
class Stopped:
    """Training ended: when and why (`stopping.message`), before the run is measured and saved."""

    stopping: Stopping


@dataclass(frozen=True)
class Interrupting:
    message: str


@dataclass(frozen=True)
class Leftover:
    """A `.partial` folder that a killed training left: removed, or offered to `--resume`."""

    message: str


@dataclass(frozen=True)
class Done:
    run_dir: str | None  # None for a sweep trial
    metrics: Metrics


# ---- sweeps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyOpened:
    study: str
    storage: str  # password hidden
    n_trials: int
    done: int  # trials the study had already taken
    space: dict[str, Any]
    objective: str


@dataclass(frozen=True)
class TrialStarted:
    number: int
    params: dict[str, Any]


@dataclass(frozen=True)
class TrainingAccount:
    """A trial starts training its `index`-th account of `of`."""

    number: int
    account: str
    index: int
    of: int


@dataclass(frozen=True)
class TrialEnded:
    row: dict[str, Any]  # `tweetlm.sweep.report.trial_row`: number, state, value, losses, params, ...


@dataclass(frozen=True)
class Waiting:
    """This worker's trials are done; `running` trials run on other workers."""

    running: int


Event = (
    Curated
    | Loading
    | Started
    | Step
    | Evaluated
    | Logged
    | EarlyStopOff
    | Stopped
    | Interrupting
    | Leftover
    | Done
    | StudyOpened
    | TrialStarted
    | TrainingAccount
    | TrialEnded
    | Waiting
)
EventHandler = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The handler of a caller that wants no events."""
