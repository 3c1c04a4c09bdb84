"""What a study found: the best trial, parameter importance, trials.csv and plots; and the best
settings for `train --params-from`."""

from __future__ import annotations

import csv
import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import NoDataError
from tweetlm.sweep.space import NOT_SEARCHABLE, TRAIN_FIELDS
from tweetlm.sweep.storage import load_study, safe_name

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


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


def count_states(trials: list[FrozenTrial]) -> dict[str, int]:
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return states


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
    settings = {k: v for k, v in base.items() if k in TRAIN_FIELDS and k not in skip}
    settings.update({k: v for k, v in best.params.items() if k in TRAIN_FIELDS})
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
    out = output or paths.home() / "sweeps" / safe_name(name)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_csv(trials, out / "trials.csv", study.user_attrs.get("accounts", []))]
    states = count_states(trials)
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

    return paths.atomic_write(path, write)


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
        if title:  # in place of optuna's own, which it puts on the left
            axes.set_title("", loc="left")
            axes.set_title(title)
        figure = axes.figure
        figure.set_size_inches(11, 6)
        figure.tight_layout()
        png = functools.partial(figure.savefig, format="png", dpi=110)
        files.append(paths.atomic_write(out / f"{stem}.png", png))
        plt.close(figure)
        fig = plotly_plot(study, params=params, **kwargs)
        if title:
            fig.update_layout(title=title)
        html = functools.partial(_write_html, fig)
        files.append(paths.atomic_write(out / f"{stem}.html", html))
    return files


def _write_html(fig: Any, path: Path) -> None:
    fig.write_html(str(path), include_plotlyjs="directory")  # plotly.min.js beside it: opens offline
