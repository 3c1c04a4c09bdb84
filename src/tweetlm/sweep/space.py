"""The search space of a sweep: HuggingTweets' dimensions, and the TOML/YAML file that overrides them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm.errors import InputError, first_line
from tweetlm.train import TrainConfig

if TYPE_CHECKING:
    import optuna

# Settings a space file may search or fix; the rest are the sweep's own (accounts, base model) or bookkeeping.
# (`max_minutes`, each training's time budget, is a setting like the others: fix it in a space file to
# compare recipes at equal wall time.)
NOT_SEARCHABLE = frozenset({"accounts", "base_model", "report_to", "keep_checkpoints"})

TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


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
        Dimension("epochs", 1, 4, integer=True),
        Dimension("scheduler", choices=("constant", "linear", "cosine")),
        Dimension("warmup", choices=(0.0, 0.1, 0.2)),
        Dimension("learning_rate", 1e-5, 2e-3, log=True),
        Dimension("batch_size", choices=(8, 16, 32)),
        Dimension("grad_accum", choices=(1, 4)),
        Dimension("early_stop_patience", choices=(1, 2, 4)),
        # Train everything, or freeze the embeddings and the lower blocks (limited to the model's depth).
        Dimension("freeze_layers", choices=(0, 8, 16, 24)),
    ]
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
            if name not in TRAIN_FIELDS or name in NOT_SEARCHABLE:
                allowed = ", ".join(sorted(set(TRAIN_FIELDS) - NOT_SEARCHABLE))
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

    def largest(self, name: str, base: TrainConfig) -> Any:
        """The largest value a trial can give setting `name`: its dimension's, else its fixed or base value."""
        value = next((d.largest for d in self.dimensions if d.name == name), dict(self.fixed).get(name))
        return value if value is not None else getattr(base, name)

    def max_epochs(self, base: TrainConfig) -> int:
        return max(1, math.ceil(self.largest("epochs", base)))

    def max_evaluations(self, base: TrainConfig) -> int:
        """The most evaluations a trial's training of one account reports to the pruner."""
        return self.max_epochs(base) * int(self.largest("evals_per_epoch", base))

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
        raise InputError(f"{path} is not valid {suffix[1:].upper()}: {first_line(exc)}") from exc
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
    if str(TRAIN_FIELDS[name].type).startswith("int") and not integer:
        raise InputError(f"{path}: {name}: takes whole numbers (low = {low}, high = {high})")
    return Dimension(name, low, high, log=log, integer=integer)
