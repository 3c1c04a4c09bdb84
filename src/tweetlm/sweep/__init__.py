"""Hyperparameter sweeps on Optuna: HuggingTweets' search, objective and importance analysis, on one machine or many.

Each trial draws a configuration from the search space, fine-tunes one model per account from it
(`dataclasses.replace` on a base `TrainConfig`, `train_trial(...)`), and is scored by
HuggingTweets' robust objective: **mean + 1 standard deviation** of the per-account best validation
losses (population std), so that settings which work for everyone win over ones that shine on one
account. After each evaluation the running objective is reported to a pruner, so hopeless trials stop
early.

Studies live in an Optuna RDB storage: by default `TWEETLM_HOME/sweeps.sqlite3`; with a
`postgresql://` URL any number of workers on any number of machines join one study. Workers send
heartbeats; a trial whose worker went silent is marked FAILED and re-queued (same parameters) for
another worker, as is a trial stopped by the deadline or Ctrl-C. `--trials N` is the size of the
study, shared by all its workers: "count the trials, then start one" runs under a lock (a PostgreSQL
advisory lock, or a file lock beside the SQLite file), so the study ends with exactly N trials that
finished (COMPLETE, PRUNED, or FAILED and not retried).

The search space is HuggingTweets' (epochs 1-10, scheduler, warmup 0/0.1/0.2, learning rate
log-uniform 1e-6..2.5e-3, gradient accumulation 1/4/8) plus which layers to train (and the LoRA rank
where `TrainConfig` has one). A TOML or YAML file overrides it key by key: a table/mapping
`{low, high, log}` is a range (whole numbers if both ends are), a list is a set of choices, and a plain
value fixes the setting::

    learning_rate = { low = 1e-5, high = 1e-3, log = true }
    epochs = { low = 1, high = 4 }
    scheduler = ["linear", "cosine"]
    batch_size = 8            # fixed, not searched
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tweetlm import __version__
from tweetlm.dataset import split_posts
from tweetlm.errors import InputError, ModelError, NoDataError, TrainingError, first_line
from tweetlm.events import EventHandler, StudyOpened, Waiting, ignore
from tweetlm.store import Store
from tweetlm.sweep.objective import OBJECTIVE, TrialRunner, pruning_callback
from tweetlm.sweep.report import (
    IMPORTANCE_METHODS,
    Report,
    best_trial,
    count_states,
    param_importances,
    study_train_settings,
    sweep_report,
    trial_row,
)
from tweetlm.sweep.space import Dimension, SearchSpace
from tweetlm.sweep.storage import (
    BudgetLock,
    budget_used,
    default_storage,
    load_study,
    mask_url,
    open_storage,
    require_optuna,
    retried_numbers,
    study_name,
)
from tweetlm.train import TrainConfig

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

__all__ = [
    "IMPORTANCE_METHODS",
    "OBJECTIVE",
    "Dimension",
    "Report",
    "SearchSpace",
    "SweepConfig",
    "SweepResult",
    "default_storage",
    "load_study",
    "mask_url",
    "open_storage",
    "param_importances",
    "pruning_callback",
    "run_sweep",
    "study_train_settings",
    "sweep_report",
]

PRUNERS = ("median", "halving", "none")
# What a study records about itself (study user attrs); a worker that disagrees on any of them is refused.
DEFINITION = ("accounts", "data", "base_model", "space")


@dataclass(frozen=True)
class SweepConfig:
    base: TrainConfig  # what every trial starts from (its accounts are the sweep's accounts)
    n_trials: int = 20
    study: str | None = None  # default: sweep-<accounts>
    storage: str | None = None  # default: sqlite under TWEETLM_HOME
    space: SearchSpace = field(default_factory=SearchSpace)
    max_minutes: float | None = None
    pruner: str = "median"
    keep_models: bool = False
    heartbeat: int = 60

    def __post_init__(self) -> None:
        checks = [
            (self.n_trials >= 1, "trials", "must be >= 1"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be > 0"),
            (self.pruner in PRUNERS, "pruner", f"must be one of {', '.join(PRUNERS)}"),
            (self.heartbeat >= 1, "heartbeat", "must be >= 1 second"),
        ]
        for ok, flag, why in checks:
            if not ok:
                value = getattr(self, "n_trials" if flag == "trials" else flag)
                raise InputError(f"--{flag.replace('_', '-')} {value}: {why}")

    @property
    def name(self) -> str:
        return self.study or study_name(self.base.accounts)


@dataclass
class SweepResult:
    study: str
    storage: str  # masked
    n_trials: int
    states: dict[str, int]  # trials of the whole study by state
    retried: int  # FAILED trials that were re-queued (they live on in their retry)
    ran: list[int]  # trial numbers this worker ran
    best: dict[str, Any] | None  # number, value, params, user_attrs of the best COMPLETE trial
    stopped: str | None  # None (budget reached), "deadline" or "interrupted"


def run_sweep(
    config: SweepConfig,
    on_event: EventHandler | None = None,
    store: Store | None = None,
    stop: threading.Event | None = None,
) -> SweepResult:
    """Join (or create) the study and run trials until it has `n_trials`, the deadline, or `stop`.

    Events (`tweetlm.events`): StudyOpened once, then per trial TrialStarted, TrainingAccount (one per
    account trained) and TrialEnded; Waiting while other workers finish the last trials.
    """
    require_optuna()
    import optuna
    from optuna.exceptions import ExperimentalWarning

    emit = on_event or ignore
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    stop = stop or threading.Event()
    own_store = store is None
    store = store or Store(create=False)
    timer: threading.Timer | None = None
    try:
        accounts, data = _check_data(store, config.base)
        base = dataclasses.replace(config.base, accounts=accounts, **dict(config.space.fixed))
        space = config.space.for_model(_model_layers(base.base_model))
        definition = {"accounts": list(accounts), "data": data, "base_model": base.base_model, "space": space.to_dict()}
        storage = open_storage(config.storage, heartbeat=config.heartbeat)
        masked = mask_url(config.storage or default_storage())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            study = optuna.create_study(
                study_name=config.name,
                storage=storage,
                direction="minimize",
                sampler=optuna.samplers.TPESampler(constant_liar=True),
                pruner=_pruner(config.pruner, base.evals_per_epoch),
                load_if_exists=True,
            )
            _claim(study, definition, base, masked)
            counted = budget_used(study.get_trials(deepcopy=False))
            emit(StudyOpened(study.study_name, masked, config.n_trials, counted, space.to_dict(), OBJECTIVE))
            if deadline is not None:
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop.set)
                timer.daemon = True
                timer.start()
            trial_runner = TrialRunner(config, base, space, store, stop, emit)
            stopped = _loop(study, storage, config, trial_runner, stop, deadline, emit)
        return _result(study, masked, config.n_trials, trial_runner.ran, stopped)
    finally:
        if timer:
            timer.cancel()
        if own_store:
            store.close()


def _check_data(store: Store, base: TrainConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """Every account must have a curated dataset big enough to split: the same data for every trial."""
    accounts = tuple(store.resolve_account(a) for a in base.accounts)
    if len(set(accounts)) != len(accounts):
        raise InputError("an account is named twice")
    data: dict[str, str] = {}
    for account in accounts:
        dataset = store.dataset(account)
        if dataset is None:
            raise NoDataError(
                f"{account} has no curated dataset: run `tweetlm curate {account}` first "
                "(every trial must train on the same data)"
            )
        try:
            split_posts(dataset.texts, base.seed)
        except TrainingError as exc:
            raise NoDataError(f"{account}: {exc}") from exc
        data[account] = dataset.hash
    return accounts, data


def _model_layers(base_model: str) -> int | None:
    """The number of transformer blocks of the base model (None if its config does not say)."""
    from transformers import AutoConfig

    from tweetlm.models import resolve_base_model

    path = resolve_base_model(base_model).path
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of base model {base_model!r}: {first_line(exc)}") from exc
    layers = getattr(config, "num_hidden_layers", None)
    return int(layers) if isinstance(layers, int) else None


def _pruner(kind: str, evals_per_epoch: int) -> optuna.pruners.BasePruner:
    """The pruner of a study whose trials report `evals_per_epoch` times an epoch: its steps are evaluations."""
    import optuna

    if kind == "median":
        # No pruning before 5 trials finished, nor in a trial's first epoch.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=evals_per_epoch)
    if kind == "halving":  # rungs after 1, 4, 16, ... epochs
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=evals_per_epoch)
    return optuna.pruners.NopPruner()


def _claim(study: optuna.Study, definition: dict[str, Any], base: TrainConfig, masked: str) -> None:
    """Record what the study optimises, or check that this worker agrees with what it recorded."""
    attrs = study.user_attrs
    if "space" not in attrs:
        if study.get_trials(deepcopy=False):
            raise InputError(
                f"study {study.study_name!r} in {masked} was not created by `tweetlm sweep`: choose another --study"
            )
        for key, value in definition.items():
            study.set_user_attr(key, value)
        study.set_user_attr("objective", OBJECTIVE)
        study.set_user_attr("train_config", {k: v for k, v in base.to_dict().items() if k != "accounts"})
        study.set_user_attr("tweetlm", __version__)
        attrs = study.user_attrs
    for key in DEFINITION:
        mine, theirs = _plain(definition[key]), attrs.get(key)
        if mine != theirs:
            what = "a different search space" if key == "space" else f"different {key.replace('_', ' ')}"
            hint = "the same --space file" if key == "space" else f"the same {key.replace('_', ' ')}"
            raise InputError(
                f"study {study.study_name!r} in {masked} exists with {what} ({_diff(mine, theirs)}): "
                f"use another --study name, or {hint}"
            )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _diff(mine: Any, theirs: Any) -> str:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            if mine.get(key) != theirs.get(key):
                return f"{key}: {_diff(mine.get(key), theirs.get(key))}"
    return f"{json.dumps(mine)} here, {json.dumps(theirs)} in the study"


def _loop(
    study: optuna.Study,
    storage: RDBStorage,
    config: SweepConfig,
    runner: TrialRunner,
    stop: threading.Event,
    deadline: float | None,
    emit: EventHandler,
) -> str | None:
    import optuna
    from optuna.trial import TrialState

    lock = BudgetLock(storage, study.study_name)
    runner.lock = lock
    # Any error fails the trial, not the sweep: it is recorded with its reason and the next trial starts
    # (an out-of-memory, a NaN loss, a setting the model cannot take). Ctrl-C is not an Exception.
    catch = (Exception,)
    announced_wait = False
    while True:
        if stop.is_set():
            return "deadline" if deadline and time.monotonic() >= deadline else "interrupted"
        with lock.held():
            optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if budget_used(trials) < config.n_trials or waiting:
                runner.current = None
                try:
                    study.optimize(runner, n_trials=1, catch=catch, callbacks=[runner.finished])
                except KeyboardInterrupt:
                    stop.set()
                    runner.requeue_interrupted(study)
                continue
            running = sum(t.state == TrialState.RUNNING for t in trials)
        if not running:
            return None
        if not announced_wait:
            emit(Waiting(running))
            announced_wait = True
        stop.wait(config.heartbeat)  # until they finish, or go silent and come back as retries


def _result(study: optuna.Study, masked: str, n_trials: int, ran: list[int], stopped: str | None) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    row = trial_row(best) if best else None
    retried = len(retried_numbers(trials))
    return SweepResult(study.study_name, masked, n_trials, count_states(trials), retried, ran, row, stopped)
