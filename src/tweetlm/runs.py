"""The run folder: what a training run leaves under TWEETLM_HOME/runs/, and the one place that reads it.

    runs/<accounts>-<time>/            a finished run (`RunFolder`)
        model.safetensors, config.json, tokenizer files, generation_config.json    (save_pretrained)
        README.md                      the model card
        run.json                       `RunInfo`: config, versions, data, `Metrics` (history included)
        posts.json                     `RunPosts`: the curated training and validation posts
        samples.json                   sample predictions after each evaluation (tracking)
        eval.json                      `tweetlm eval`'s result, once run
    runs/.<accounts>-<time>.partial/   a run still training, or interrupted (checkpoints, `RESUME_FILE`)

Generate, evaluate, report, the card, the web app and the sweep read runs through this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tweetlm import paths
from tweetlm.errors import InputError, NoDataError, first_line

log = logging.getLogger("tweetlm")

RUN_FILE = "run.json"
POSTS_FILE = "posts.json"  # the curated training and validation posts (copy filter, evaluation)
EVAL_FILE = "eval.json"
SAMPLES_FILE = "samples.json"
CARD_FILE = "README.md"
RESUME_FILE = "tweetlm_config.json"  # written at the start, so --resume knows what it resumes
CHECKPOINTS = "checkpoints"


STOP_REASONS = ("early_stop", "schedule", "max_steps", "time_limit", "callback")


@dataclass
class Stopping:
    """When and why training ended, and its best evaluation (the model kept).

    `reason` is one of STOP_REASONS: the validation loss stopped improving, the schedule's last step,
    `max_steps`, `max_minutes`, or another callback (a sweep's pruner). `early_stop_off` says why early
    stopping was off (None when it was on); `message` says it all in a line."""

    reason: str
    step: int
    epoch: float
    best_step: int
    best_epoch: float
    best_loss: float
    patience: int | None
    early_stop_off: str | None
    message: str


@dataclass
class Metrics:
    """What a training run measured; `history` holds the Trainer's log (step, epoch, loss, eval_loss, ...);
    `stopping` when and why it stopped (None in runs of tweetlm before early stopping)."""

    eval_loss_before: float
    perplexity_before: float
    eval_loss_after: float
    perplexity_after: float
    steps: int
    epochs_completed: float
    train_seconds: float
    tokens_per_epoch: int
    train_posts: int
    validation_posts: int
    trainable_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopping: Stopping | None = None

    def evaluations(self, trained_only: bool = False) -> list[dict[str, float]]:
        """The history's evaluations (step 0 is the base model; `trained_only` leaves it out)."""
        return [h for h in self.history if "eval_loss" in h and (not trained_only or h.get("step", 0) > 0)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        metrics: Metrics = _known(cls, data)
        if isinstance(metrics.stopping, dict):
            metrics.stopping = _known(Stopping, metrics.stopping)
        return metrics


@dataclass
class BaseModelInfo:
    name: str
    path: str
    embedded: bool


@dataclass
class RunInfo:
    """What `run.json` holds. `config` is the resolved TrainConfig as a dict (read it with
    `TrainConfig.from_dict`); `data` has the data hash, each account's dataset (hash, rules, report, posts)
    and the mix of accounts."""

    accounts: list[str]
    base_model: BaseModelInfo
    metrics: Metrics
    tweetlm: str = ""
    created_at: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    precision: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    eos_token: str = ""
    # A run made by `tweetlm update`: the run it continued, the runs before that (oldest first), and
    # what the update measured (new posts, held-out loss before and after).
    parent: str | None = None
    chain: list[str] = field(default_factory=list)
    update: dict[str, Any] | None = None
    world_size: int = 1  # processes that trained it (torchrun, accelerate launch)
    effective_batch: int = 0  # posts per optimizer step: batch_size x world_size x grad_accum

    @property
    def keep_newlines(self) -> bool:
        """Whether the posts it trained on kept their line breaks (generated posts then keep them too)."""
        return any(d.get("rules", {}).get("keep_newlines") for d in self.data.get("datasets", {}).values())

    def to_dict(self) -> dict[str, Any]:
        """As run.json writes it: provenance first, metrics last."""
        values = dataclasses.asdict(self)
        first = (
            "tweetlm",
            "created_at",
            "accounts",
            "base_model",
            "config",
            "precision",
            "versions",
            "data",
            "eos_token",
            "world_size",
            "effective_batch",
        )
        return {**{k: values.pop(k) for k in first}, **values}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}  # the rest: defaults
        values["base_model"] = _known(BaseModelInfo, data["base_model"])
        values["metrics"] = Metrics.from_dict(data["metrics"])
        values["accounts"] = list(data["accounts"])
        return cls(**values)


@dataclass
class RunPosts:
    """What `posts.json` holds: each account's curated training and validation posts."""

    train: dict[str, list[str]] = field(default_factory=dict)
    validation: dict[str, list[str]] = field(default_factory=dict)

    def training_texts(self) -> list[str]:
        return [text for texts in self.train.values() for text in texts]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunFolder:
    """A run folder (finished, or `.partial` while training). Paths in, typed contents out."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def is_finished(self) -> bool:
        return (self.path / RUN_FILE).is_file()

    def read(self) -> RunInfo:
        """`run.json`, typed; InputError when it is missing or not a run's."""
        hint = "train again, or give another run folder or an account"
        try:
            data = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or first_line(exc)
            raise InputError(f"{self.path} is not a readable tweetlm run ({RUN_FILE}: {reason}): {hint}") from None
        try:
            if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
                raise TypeError
            return RunInfo.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(
                f"{self.path} is not a tweetlm run ({RUN_FILE} holds no run description): {hint}"
            ) from None

    def check_complete(self) -> RunFolder:
        """This run, checked to have its run.json and model files: InputError naming what is missing."""
        self.read()
        if not (self.path / "config.json").is_file() or not any((self.path / w).is_file() for w in _WEIGHTS):
            raise InputError(
                f"{self.path} is an incomplete tweetlm run (its model files are missing): train again, or give "
                "another run folder or an account"
            )
        return self

    def write(self, info: RunInfo) -> None:
        paths.write_json(self.path / RUN_FILE, info.to_dict())

    def posts(self) -> RunPosts:
        """`posts.json` (empty when the run has none, e.g. one trained by an older tweetlm)."""
        file = self.path / POSTS_FILE
        if not file.is_file():
            return RunPosts()
        data = json.loads(file.read_text(encoding="utf-8"))
        return RunPosts(dict(data.get("train", {})), dict(data.get("validation", {})))

    def write_posts(self, posts: RunPosts) -> None:
        paths.write_json(self.path / POSTS_FILE, posts.to_dict())

    def evaluation(self) -> dict[str, Any] | None:
        """`eval.json`, or None before `tweetlm eval` has run."""
        file = self.path / EVAL_FILE
        if not file.is_file():
            return None
        try:
            return dict(json.loads(file.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise InputError(f"{file} is not readable JSON ({exc}): run `tweetlm eval {self.name}` again") from exc

    def write_evaluation(self, result: dict[str, Any]) -> None:
        paths.write_json(self.path / EVAL_FILE, result)

    # ---- finding runs ------------------------------------------------------------------------------

    @classmethod
    def all(cls) -> list[tuple[RunFolder, RunInfo]]:
        """Every finished, readable run under runs/ with what its run.json holds, newest first."""
        found = []
        for run_json in paths.runs_dir().glob(f"*/{RUN_FILE}"):
            folder = cls(run_json.parent)
            if folder.name.startswith("."):
                continue
            try:
                found.append((run_json.stat().st_mtime, folder, folder.read()))
            except (OSError, InputError):
                log.warning("skipping %s: not a readable tweetlm run.json", run_json)
                continue
        found.sort(key=lambda t: (t[2].created_at or "", t[0]), reverse=True)
        return [(folder, info) for _, folder, info in found]

    @classmethod
    def latest(cls, account: str) -> RunFolder:
        """The newest finished run that trained on `account` (case-insensitive)."""
        wanted = account.lstrip("@").lower()
        runs = [f for f, info in cls.all() if any(a.lower() == wanted for a in info.accounts)]
        if not runs:
            raise NoDataError(f"no finished run for {account!r} in {paths.runs_dir()}: run `tweetlm train {account}`")
        return max(runs, key=lambda f: (f.path / RUN_FILE).stat().st_mtime)

    @classmethod
    def resolve(cls, name: str) -> RunFolder:
        """A run folder, given its path, its folder name under runs/, or an account (its latest run)."""
        path = Path(name).expanduser()
        for candidate in (path, paths.runs_dir() / name):
            if _is_dir(candidate):
                if not (candidate / RUN_FILE).is_file():
                    raise InputError(
                        f"{candidate} is not a tweetlm run (no {RUN_FILE}): give a run folder or an account"
                    )
                return cls(candidate).check_complete()
        return cls.latest(name)

    @classmethod
    def new(cls, accounts: tuple[str, ...]) -> RunFolder:
        """runs/<accounts>-<time>, with -2, -3, ... when a run of the same accounts started in the same second."""
        base = paths.runs_dir() / run_name(accounts)
        candidate, n = cls(base), 1
        while candidate.path.exists() or candidate.partial_path.exists():
            n += 1
            candidate = cls(base.with_name(f"{base.name}-{n}"))
        return candidate

    @property
    def partial_path(self) -> Path:
        """Where this run is written while it trains: `.<name>.partial` beside it."""
        return self.path.parent / f".{self.name}.partial"

    @classmethod
    def partial(cls, accounts: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
        """The newest interrupted run of `accounts` that can be resumed: its `.partial` folder and what
        its resume file holds (`config`, `final_dir`)."""
        prefix = folder_prefix(accounts) + "-"
        candidates = sorted(
            (p for p in paths.runs_dir().glob(".*.partial") if p.name[1:].startswith(prefix) and p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        for candidate in reversed(candidates):
            if any((candidate / CHECKPOINTS).glob("checkpoint-*")) and (candidate / RESUME_FILE).is_file():
                return candidate, json.loads((candidate / RESUME_FILE).read_text(encoding="utf-8"))
        raise InputError(f"no interrupted run of {', '.join(accounts)} to resume in {paths.runs_dir()}")


def run_name(accounts: tuple[str, ...]) -> str:
    """<accounts>-<UTC time>: the folder name of a run started now."""
    return f"{folder_prefix(accounts)}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


_NAME_BYTES = 100  # file names may have 255 bytes; the time, -N, the dots and .partial need room
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def folder_prefix(accounts: tuple[str, ...]) -> str:
    """The accounts as a file name: no path separators, and a long one shortened with a hash of it."""
    safe = "+".join(a.replace("/", "_").replace("@", "_").replace("\x00", "_") for a in accounts)
    if len(safe.encode()) <= _NAME_BYTES:
        return safe
    digest = hashlib.sha256(safe.encode()).hexdigest()[:12]
    return safe.encode()[: _NAME_BYTES - 13].decode(errors="ignore") + "~" + digest


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for a file name is no folder (Python < 3.12 raises)
        return False


def _known(cls: Any, data: dict[str, Any]) -> Any:
    """`cls(**data)` with the keys `cls` knows (a newer tweetlm may have written more)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
