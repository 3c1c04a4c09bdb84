"""Hyperparameter sweeps on Optuna: HuggingTweets' search, objective and importance analysis, on one machine or many.

Each trial draws a configuration from the search space, fine-tunes one model per account from it
(`dataclasses.replace` on a base `TrainConfig`, `train(..., save_model=False)`), and is scored by
HuggingTweets' robust objective: **mean + 1 standard deviation** of the per-account best validation
losses (population std), so that settings which work for everyone win over ones that shine on one
account. Per epoch the running objective is reported to a pruner, so hopeless trials stop early.

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

import csv
import dataclasses
import hashlib
import json
import math
import os
import socket
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import __version__, paths
from tweetlm.dataset import split_posts
from tweetlm.errors import InputError, ModelError, NoDataError, TrainingError, TweetlmError
from tweetlm.store import Store
from tweetlm.train import EventHandler, TrainConfig, TrainingInterrupted, train

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

STORAGE_FILE = "sweeps.sqlite3"
OBJECTIVE = "mean + 1 std of the per-account best validation losses"
PRUNERS = ("median", "halving", "none")
MAX_RETRIES = 2  # a trial whose worker keeps dying (killed for memory?) is retried this often, then left FAILED
# Settings a space file may search or fix; the rest are the sweep's own (accounts, base model) or bookkeeping.
NOT_SEARCHABLE = frozenset({"accounts", "base_model", "report_to", "keep_checkpoints", "max_minutes"})
# What a study records about itself (study user attrs); a worker that disagrees on any of them is refused.
DEFINITION = ("accounts", "data", "base_model", "space")

_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


# ---- the search space -------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (`low`..`high`, optionally log-scaled) or a set of `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    @property
    def largest(self) -> float:
        return max(self.choices) if self.choices else float(self.high or 0)

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


def _default_dimensions() -> tuple[Dimension, ...]:
    dims = [
        Dimension("epochs", 1, 10, integer=True),
        Dimension("scheduler", choices=("constant", "linear", "cosine")),
        Dimension("warmup", choices=(0.0, 0.1, 0.2)),
        Dimension("learning_rate", 1e-6, 2.5e-3, log=True),
        Dimension("grad_accum", choices=(1, 4, 8)),
        # Train everything, or freeze the embeddings and the lower blocks (limited to the model's depth).
        Dimension("freeze_layers", choices=(0, 8, 16, 24)),
    ]
    if "lora_rank" in _TRAIN_FIELDS:
        # LoRA trials train with their own learning rate (the adapters want ~10x a full fine-tune's).
        dims += [Dimension("lora_rank", choices=(0, 8, 32)), Dimension("lora_learning_rate", 1e-4, 1e-2, log=True)]
    return tuple(dims)


# Searched only in trials where the named setting is on: a LoRA learning rate means nothing without LoRA.
CONDITIONS = {"lora_learning_rate": "lora_rank", "lora_alpha": "lora_rank"}


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...] = field(default_factory=_default_dimensions)
    fixed: tuple[tuple[str, Any], ...] = ()  # settings a space file fixed (not searched)

    @classmethod
    def from_file(cls, path: Path) -> SearchSpace:
        """The default space, overridden key by key by a TOML or YAML file."""
        data = _read_space_file(path)
        dims = {d.name: d for d in cls().dimensions}
        fixed: dict[str, Any] = {}
        probe = TrainConfig(accounts=("probe",))
        for name, value in data.items():
            if name not in _TRAIN_FIELDS or name in NOT_SEARCHABLE:
                allowed = ", ".join(sorted(set(_TRAIN_FIELDS) - NOT_SEARCHABLE))
                raise InputError(f"{path}: unknown setting {name!r} (settings a sweep can search: {allowed})")
            if isinstance(value, dict):
                dims[name] = _range(path, name, value)  # a default's place in the order is kept
                tried = [dims[name].low, dims[name].high]
            elif isinstance(value, list):
                if not value or not all(isinstance(v, (str, int, float, bool)) for v in value):
                    raise InputError(f"{path}: {name}: give a non-empty list of plain values to choose from")
                dims[name] = Dimension(name, choices=tuple(value))
                tried = value
            else:
                dims.pop(name, None)
                fixed[name] = value
                tried = [value]
            for v in tried:
                try:
                    dataclasses.replace(probe, **{name: v})
                except (InputError, TypeError) as exc:
                    raise InputError(f"{path}: {exc}") from exc
        return cls(tuple(dims.values()), tuple(sorted(fixed.items())))

    def for_model(self, n_layers: int | None) -> SearchSpace:
        """Limit the default layer-freezing choices to the model's depth (at least one block trains)."""
        default = next(d for d in _default_dimensions() if d.name == "freeze_layers")
        if n_layers is None or default not in self.dimensions:
            return self
        limited = Dimension("freeze_layers", choices=tuple(c for c in default.choices if c < n_layers))
        return dataclasses.replace(self, dimensions=tuple(limited if d == default else d for d in self.dimensions))

    def max_epochs(self, base: TrainConfig) -> int:
        epochs = next((d.largest for d in self.dimensions if d.name == "epochs"), dict(self.fixed).get("epochs"))
        return max(1, math.ceil(epochs if epochs is not None else base.epochs))

    def to_dict(self) -> dict[str, Any]:
        return {"search": {d.name: d.to_dict() for d in self.dimensions}, "fixed": dict(self.fixed)}


def _read_space_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the space file {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            raise InputError(f"{path}: a space file is TOML (.toml) or YAML (.yaml, .yml)")
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise InputError(f"{path} is not valid {suffix[1:].upper()}: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        if type(exc).__module__.startswith("yaml"):
            raise InputError(f"{path} is not valid YAML: {' '.join(str(exc).split())[:200]}") from exc
        raise
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected settings by name (e.g. `epochs = {{ low = 1, high = 4 }}`)")
    return data


def _range(path: Path, name: str, spec: dict[str, Any]) -> Dimension:
    unknown = set(spec) - {"low", "high", "log"}
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if unknown or not numbers or not isinstance(log, bool):
        raise InputError(f"{path}: {name}: a range is {{ low = NUMBER, high = NUMBER, log = true|false }}")
    assert isinstance(low, (int, float)) and isinstance(high, (int, float))
    if not low < high:
        raise InputError(f"{path}: {name}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise InputError(f"{path}: {name}: a log-scaled range needs low > 0")
    integer = isinstance(low, int) and isinstance(high, int)
    if str(_TRAIN_FIELDS[name].type).startswith("int") and not integer:
        raise InputError(f"{path}: {name}: takes whole numbers (low = {low}, high = {high})")
    return Dimension(name, low, high, log=log, integer=integer)


# ---- storage ----------------------------------------------------------------------------------


def default_storage() -> str:
    return f"sqlite:///{paths.home() / STORAGE_FILE}"


def mask_url(url: str) -> str:
    """The URL with its password hidden (for messages and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show only the scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def _require_optuna() -> None:
    import importlib.util

    for module in ("optuna", "sqlalchemy"):
        if importlib.util.find_spec(module) is None:
            raise InputError(f"sweeps need Optuna: pip install 'tweetlm[sweep]' ({module} is missing)")


def open_storage(url: str | None = None, heartbeat: int | None = None) -> RDBStorage:
    """An Optuna RDB storage; with `heartbeat`, workers heartbeat and silent workers' trials are retried."""
    _require_optuna()
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.engine import make_url

    url = url or default_storage()
    masked = mask_url(url)
    shape = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise InputError(f"--storage {masked} is not a database URL ({shape})") from exc
    engine_kwargs: dict[str, Any] = {}
    if parsed.drivername == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the sweep extra installs psycopg2.
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    elif parsed.get_backend_name() == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"cannot open the sweep database {masked} (cannot create {folder}: {exc.strerror}); check --storage"
                ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            beat: dict[str, Any] = {}
            if heartbeat is not None:
                beat = {
                    "heartbeat_interval": heartbeat,
                    "grace_period": 3 * heartbeat,  # tolerant of a loaded machine's slow heartbeat thread
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
                }
            return RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise InputError(f"--storage {masked}: no database driver for it ({shape})") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise InputError(_unreachable(parsed, masked, exc)) from exc


def _unreachable(parsed: Any, masked: str, exc: Exception) -> str:
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    reason = reason.split(" (Background on this error", 1)[0]
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    if parsed.get_backend_name() == "sqlite":
        where = f"SQLite file {parsed.database}"
    else:
        where = f"host {parsed.host or 'localhost'}:{parsed.port or 'default port'}, database {parsed.database}"
    return f"cannot open the sweep database {masked} ({where}): {reason[:300]}; check --storage"


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """An existing study, or NoDataError naming the studies that exist."""
    import optuna

    if storage is None and not (paths.home() / STORAGE_FILE).is_file():  # looking creates no database
        raise NoDataError(
            f"no sweep study {name!r} in {mask_url(default_storage())} (there are no studies there yet); "
            "run `tweetlm sweep` first"
        )
    rdb = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=rdb)
    except KeyError:
        names = optuna.get_all_study_names(rdb)
        known = f"studies there: {', '.join(names)}" if names else "there are no studies there yet"
        where = mask_url(storage or default_storage())
        raise NoDataError(f"no sweep study {name!r} in {where} ({known}); run `tweetlm sweep` first") from None


def study_name(accounts: tuple[str, ...]) -> str:
    return "sweep-" + "+".join(a.lstrip("@") for a in accounts)


# ---- running a sweep --------------------------------------------------------------------------


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


class _Interrupted(Exception):
    """A trial stopped by the deadline or Ctrl-C: recorded FAILED, then re-queued."""


def run_sweep(
    config: SweepConfig,
    on_event: EventHandler | None = None,
    store: Store | None = None,
    stop: threading.Event | None = None,
) -> SweepResult:
    """Join (or create) the study and run trials until it has `n_trials`, the deadline, or `stop`.

    Events: {"type": "study", ...} once, then per trial "trial_start", "account" (one per account
    trained) and "trial_end"; "waiting" while other workers finish the last trials.
    """
    _require_optuna()
    import optuna
    from optuna.exceptions import ExperimentalWarning

    emit = on_event or (lambda event: None)
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    stop = stop or threading.Event()
    own_store = store is None
    store = store or Store()
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
                pruner=_pruner(config.pruner),
                load_if_exists=True,
            )
            _claim(study, definition, base, masked)
            counted = _budget_used(study.get_trials(deepcopy=False))
            emit({"type": "study", "study": study.study_name, "storage": masked, "n_trials": config.n_trials,
                  "done": counted, "space": space.to_dict(), "objective": OBJECTIVE})  # fmt: skip
            if deadline is not None:
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), stop.set)
                timer.daemon = True
                timer.start()
            trial_runner = _TrialRunner(config, base, space, store, stop, emit)
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
        raise ModelError(f"cannot read the config of base model {base_model!r}: {str(exc).splitlines()[0]}") from exc
    layers = getattr(config, "num_hidden_layers", None)
    return int(layers) if isinstance(layers, int) else None


def _pruner(kind: str) -> optuna.pruners.BasePruner:
    import optuna

    if kind == "median":
        # No pruning before 5 trials finished, nor in a trial's first epoch.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
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


def _retried(trials: list[FrozenTrial]) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that use up --trials: all but the FAILED ones that were retried (they live on in their retry)."""
    from optuna.trial import TrialState

    retried = _retried(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a copy of an unfinished trial (same parameters), recorded like Optuna's heartbeat retries."""
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )


class _BudgetLock:
    """Makes "count the trials, then start one" atomic across workers, so a study never overshoots."""

    def __init__(self, storage: RDBStorage, study: str) -> None:
        from filelock import FileLock
        from sqlalchemy.engine import make_url

        url = make_url(storage.url)
        self.engine = storage.engine if url.get_backend_name() == "postgresql" else None
        self.key = int.from_bytes(hashlib.sha256(f"tweetlm-sweep:{study}".encode()).digest()[:8], "big", signed=True)
        db = url.database if url.get_backend_name() == "sqlite" else None
        self.file = FileLock(f"{db}.lock") if db and db != ":memory:" else None
        self.connection: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self.engine is not None:
            from sqlalchemy import text

            self.connection = self.engine.connect()
            # A transaction-level lock: it ends with the transaction, or when a killed worker's connection drops.
            self.connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.key})
        elif self.file is not None:
            self.file.acquire()
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Idempotent: the trial releases it as soon as it is RUNNING (and so counted)."""
        if self.connection is not None:
            self.connection.rollback()
            self.connection.close()
            self.connection = None
        if self.file is not None and self.file.is_locked:
            self.file.release()


def _loop(
    study: optuna.Study,
    storage: RDBStorage,
    config: SweepConfig,
    runner: _TrialRunner,
    stop: threading.Event,
    deadline: float | None,
    emit: EventHandler,
) -> str | None:
    import optuna
    from optuna.trial import TrialState

    lock = _BudgetLock(storage, study.study_name)
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
            if _budget_used(trials) < config.n_trials or waiting:
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
            emit({"type": "waiting", "running": running})
            announced_wait = True
        stop.wait(config.heartbeat)  # until they finish, or go silent and come back as retries


class _TrialRunner:
    """The objective: one model per account, mean + 1 std of their best validation losses."""

    def __init__(
        self,
        config: SweepConfig,
        base: TrainConfig,
        space: SearchSpace,
        store: Store,
        stop: threading.Event,
        emit: EventHandler,
    ) -> None:
        self.config, self.base, self.space, self.store, self.stop, self.emit = config, base, space, store, stop, emit
        self.max_epochs = space.max_epochs(base)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.lock: _BudgetLock | None = None
        self.current: int | None = None
        self.ran: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        if self.lock is not None:
            self.lock.release()  # this trial is RUNNING now, so other workers count it
        self.current = trial.number
        self.ran.append(trial.number)
        started = time.monotonic()
        trial.set_user_attr("worker", self.worker)
        try:
            params: dict[str, Any] = {}
            for d in self.space.dimensions:
                condition = CONDITIONS.get(d.name)
                if condition is None or params.get(condition, getattr(self.base, condition)):
                    params[d.name] = d.suggest(trial)
            self.emit({"type": "trial_start", "number": trial.number, "params": params})
            losses: dict[str, float] = {}
            for index, account in enumerate(self.base.accounts):
                if self.stop.is_set():
                    raise _Interrupted("stopped before it finished")
                self.emit({"type": "account", "number": trial.number, "account": account, "index": index,
                           "of": len(self.base.accounts)})  # fmt: skip
                losses[account] = self._train_one(trial, index, account, params, losses)
        except TrainingInterrupted as exc:
            trial.set_user_attr("interrupted", "stopped before it finished")
            raise _Interrupted("stopped before it finished") from exc
        except _Interrupted:
            trial.set_user_attr("interrupted", "stopped before it finished")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "Ctrl-C")
            raise
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", _one_line(exc))
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
            raise
        mean, std = statistics.fmean(losses.values()), statistics.pstdev(losses.values())
        trial.set_user_attr("losses", losses)
        trial.set_user_attr("mean_loss", mean)
        trial.set_user_attr("std_loss", std)
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        return mean + std

    def _train_one(
        self, trial: optuna.Trial, index: int, account: str, params: dict[str, Any], done: dict[str, float]
    ) -> float:
        import optuna

        config = dataclasses.replace(self.base, accounts=(account,), **params)
        pruning = _pruning_callback(trial, index * self.max_epochs, self.max_epochs, list(done.values()))
        output = None
        if self.config.keep_models:
            output = paths.home() / "sweeps" / _safe(trial.study.study_name) / f"trial-{trial.number:04d}-{account}"
            output.parent.mkdir(parents=True, exist_ok=True)
        result = train(
            config,
            store=self.store,
            output=output,
            callbacks=[pruning],
            stop=self.stop,
            save_model=self.config.keep_models,
        )
        if self.config.keep_models:
            trial.set_user_attr(f"run_dir_{account}", str(result.run_dir))
        if pruning.pruned:  # type: ignore[attr-defined]
            raise optuna.TrialPruned(f"pruned while training {account}")
        trained = [h["eval_loss"] for h in result.metrics["history"] if "eval_loss" in h and h["step"] > 0]
        return float(min(trained) if trained else result.metrics["eval_loss_after"])

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs:
            _requeue(study, trial)
        self.emit({"type": "trial_end", **trial_row(trial)})

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """After Ctrl-C outside the Trainer (Optuna marked the trial FAILED and re-raised)."""
        from optuna.trial import TrialState

        if self.current is None:
            return
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == self.current)
        if trial.state == TrialState.FAIL:
            _requeue(study, trial)
            self.emit({"type": "trial_end", **trial_row(trial)})


def _pruning_callback(trial: optuna.Trial, step0: int, max_epochs: int, done: list[float]) -> Any:
    """Reports the running objective after each epoch (step = account index * max epochs + epoch) and
    stops the training when the pruner says so."""
    from transformers import TrainerCallback

    class Pruning(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.pruned = False
            self.evals = 0
            self.best = math.inf

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kw: Any) -> None:
            if state.global_step == 0:  # the base model, before training: the same for every trial
                return
            loss = metrics["eval_loss"]
            self.best = min(self.best, loss) if not math.isnan(loss) else math.nan
            losses = [*done, self.best]
            trial.report(statistics.fmean(losses) + statistics.pstdev(losses), step0 + min(self.evals, max_epochs - 1))
            self.evals += 1
            if trial.should_prune():
                self.pruned = True
                control.should_training_stop = True

    return Pruning()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, TweetlmError) else f"{type(exc).__name__}: {text}"[:500]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """A trial as plain data: what the CLI prints and the CSV holds."""
    attrs = trial.user_attrs
    reason = attrs.get("fail_reason") or (f"interrupted ({attrs['interrupted']})" if "interrupted" in attrs else None)
    if trial.state.name == "FAIL" and reason is None:
        reason = "its worker stopped sending heartbeats (killed?)"
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.state.name == "COMPLETE" else None,
        "mean_loss": attrs.get("mean_loss"),
        "std_loss": attrs.get("std_loss"),
        "losses": attrs.get("losses", {}),
        "params": dict(trial.params),
        "seconds": attrs.get("seconds"),
        "worker": attrs.get("worker"),
        "retry_of": trial.system_attrs.get("failed_trial"),
        "reason": reason,
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "finished": trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete else None,
    }


def _states(trials: list[FrozenTrial]) -> dict[str, int]:
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return states


def _result(study: optuna.Study, masked: str, n_trials: int, ran: list[int], stopped: str | None) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    row = trial_row(best) if best else None
    return SweepResult(study.study_name, masked, n_trials, _states(trials), len(_retried(trials)), ran, row, stopped)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value if t.value is not None else math.inf) if complete else None


# ---- using a study ----------------------------------------------------------------------------


def study_train_settings(name: str, storage: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """For `train --params-from`: the best trial's parameters plus the settings the study fixed
    (space file, --batch-size, ...), as TrainConfig fields; and a summary of where they came from."""
    study = load_study(name, storage)
    best = best_trial(study)
    if best is None:
        raise NoDataError(f"study {name!r} has no finished trial yet: let `tweetlm sweep` run a while longer")
    base = study.user_attrs.get("train_config", {})
    skip = NOT_SEARCHABLE | {"max_steps"}  # a sweep's --max-steps is a speed cap, not a tuned setting
    settings = {k: v for k, v in base.items() if k in _TRAIN_FIELDS and k not in skip}
    settings.update({k: v for k, v in best.params.items() if k in _TRAIN_FIELDS})
    summary = {
        "study": name,
        "trial": best.number,
        "value": best.value,
        "base_model": study.user_attrs.get("base_model"),
        "params": dict(best.params),
    }
    return settings, summary


@dataclass
class Report:
    best: dict[str, Any] | None
    states: dict[str, int]
    importance: dict[str, dict[str, float]]  # parameter -> {"random forest": x, "fANOVA": y}, by random forest
    files: list[Path]
    note: str | None  # why importance and plots are missing, if they are


IMPORTANCE_METHODS = ("random forest", "fANOVA")


def param_importances(
    study: optuna.Study, params: list[str] | None = None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Importance of each searched parameter (or of `params`) by a random forest (mean decrease in impurity,
    HuggingTweets' method) and by fANOVA, over the COMPLETE trials, ordered by the random forest."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, MeanDecreaseImpurityImportanceEvaluator

    evaluators = {
        "random forest": MeanDecreaseImpurityImportanceEvaluator(seed=seed),
        "fANOVA": FanovaImportanceEvaluator(seed=seed),
    }
    # Sorted: Optuna 5.0 pairs names and importances in name order when `params` is given in another order.
    params = sorted(params) if params is not None else None
    by_method = {
        name: optuna.importance.get_param_importances(study, evaluator=ev, params=params)
        for name, ev in evaluators.items()
    }
    order = by_method["random forest"]
    return {p: {m: float(by_method[m].get(p, 0.0)) for m in IMPORTANCE_METHODS} for p in order}


def sweep_report(name: str, storage: str | None = None, output: Path | None = None) -> Report:
    """Best trial, parameter importances, and the files: trials.csv, parallel-coordinates and importance
    plots as PNG (matplotlib) and HTML (plotly, with plotly.min.js beside them: opens offline)."""
    from optuna.trial import TrialState

    study = load_study(name, storage)
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise NoDataError(f"study {name!r} has no trials yet: run `tweetlm sweep` first")
    out = output or paths.home() / "sweeps" / _safe(name)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(trials, out / "trials.csv", study.user_attrs.get("accounts", []))]
    states = _states(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Parameters every finished trial has (a conditional one, like the LoRA learning rate, may be missing).
    names = set.intersection(*(set(t.params) for t in complete)) if complete else set()
    varied = sorted(p for p in names if len({str(t.params[p]) for t in complete}) > 1)
    best = best_trial(study)
    if len(complete) < 2 or not varied:
        note = f"importance and plots need at least 2 finished trials that differ (this study has {len(complete)})"
        return Report(trial_row(best) if best else None, states, {}, files, note)
    note = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on the plotting helpers
        importance: dict[str, dict[str, float]] = {}
        if len({t.value for t in complete}) == 1:  # the forests have no variance to explain
            note = f"no importance: all {len(complete)} finished trials scored the same ({complete[0].value:.4f})"
        else:
            try:
                importance = param_importances(study, varied)
            except RuntimeError as exc:  # Optuna's fANOVA, on trials whose trees find nothing to split
                note = f"no importance: {exc} ({len(complete)} finished trials)"
        files += _write_plots(study, out, varied, with_importance=bool(importance))
    return Report(trial_row(best) if best else None, states, importance, files, note)


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.stem}-{os.getpid()}-{threading.get_ident()}{path.suffix}")  # keeps the suffix
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_csv(trials: list[FrozenTrial], path: Path, accounts: list[str]) -> Path:
    rows = [trial_row(t) for t in trials]
    params = sorted({p for r in rows for p in r["params"]})
    names = sorted({a for r in rows for a in r["losses"]} | set(accounts))
    header = [
        "number", "state", "objective", "mean_loss", "std_loss", *[f"loss_{a}" for a in names],
        *params, "seconds", "started", "finished", "worker", "retry_of", "reason",
    ]  # fmt: skip

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(header)
            for r in rows:
                out.writerow(
                    [r["number"], r["state"], r["value"], r["mean_loss"], r["std_loss"],
                     *[r["losses"].get(a) for a in names], *[r["params"].get(p) for p in params],
                     r["seconds"], r["started"], r["finished"], r["worker"], r["retry_of"], r["reason"]]
                )  # fmt: skip

    return _atomic(path, write)


def _write_plots(study: optuna.Study, out: Path, params: list[str], with_importance: bool = True) -> list[Path]:
    """Plots of the parameters that varied (a setting with one value tells nothing); the importance plot
    only `with_importance` (it needs trials whose scores differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator

    files: list[Path] = []
    evaluator = MeanDecreaseImpurityImportanceEvaluator(seed=0)
    importance_title = "Hyperparameter importance (random forest: mean decrease in impurity)"
    plots = [
        ("parallel_coordinate", vis_mpl.plot_parallel_coordinate, vis.plot_parallel_coordinate, {}, None),
        ("importance", vis_mpl.plot_param_importances, vis.plot_param_importances, {"evaluator": evaluator},
         importance_title),
    ]  # fmt: skip
    for stem, mpl_plot, plotly_plot, kwargs, title in plots if with_importance else plots[:1]:
        axes = mpl_plot(study, params=params, **kwargs)
        if title:
            axes.set_title(title)
        figure = axes.figure
        figure.set_size_inches(11, 6)
        figure.tight_layout()
        files.append(_atomic(out / f"{stem}.png", lambda tmp, fig=figure: fig.savefig(tmp, format="png", dpi=110)))
        plt.close(figure)
        fig = plotly_plot(study, params=params, **kwargs)
        if title:
            fig.update_layout(title=title)
        files.append(
            _atomic(out / f"{stem}.html", lambda tmp, fig=fig: fig.write_html(str(tmp), include_plotlyjs="directory"))
        )
    return files
