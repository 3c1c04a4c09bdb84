"""A trial's objective: one model per account, scored by HuggingTweets' mean + 1 std of their best
validation losses, reported after each evaluation to the pruner."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import TrainingError, one_line
from tweetlm.events import EventHandler, TrainingAccount, TrialEnded, TrialStarted
from tweetlm.store import Store
from tweetlm.sweep.report import trial_row
from tweetlm.sweep.space import CONDITIONS, SearchSpace
from tweetlm.sweep.storage import BudgetLock, requeue, safe_name
from tweetlm.train import TrainConfig, TrainingInterrupted, train, train_trial

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tweetlm.sweep import SweepConfig

OBJECTIVE = "mean + 1 std of the per-account best validation losses"


class Interrupted(Exception):
    """A trial stopped by the deadline or Ctrl-C: recorded FAILED, then re-queued."""


class TrialRunner:
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
        self.max_evaluations = space.max_evaluations(base)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.lock: BudgetLock | None = None
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
            self.emit(TrialStarted(trial.number, params))
            losses: dict[str, float] = {}
            for index, account in enumerate(self.base.accounts):
                if self.stop.is_set():
                    raise Interrupted("stopped before it finished")
                self.emit(TrainingAccount(trial.number, account, index, len(self.base.accounts)))
                losses[account] = self._train_one(trial, index, account, params, losses)
        except TrainingInterrupted as exc:
            trial.set_user_attr("interrupted", "stopped before it finished")
            raise Interrupted("stopped before it finished") from exc
        except Interrupted:
            trial.set_user_attr("interrupted", "stopped before it finished")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "Ctrl-C")
            raise
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", one_line(exc, 500))
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
        pruning = pruning_callback(trial, index * self.max_evaluations, self.max_evaluations, list(done.values()))
        try:
            if self.config.keep_models:
                folder = f"trial-{trial.number:04d}-{account}"
                output = paths.home() / "sweeps" / safe_name(trial.study.study_name) / folder
                output.parent.mkdir(parents=True, exist_ok=True)
                result = train(config, store=self.store, output=output, callbacks=[pruning], stop=self.stop)
                trial.set_user_attr(f"run_dir_{account}", str(result.run_dir))
                metrics = result.metrics
            else:
                metrics = train_trial(config, store=self.store, callbacks=[pruning], stop=self.stop)
        except TrainingInterrupted:
            raise
        except TrainingError as exc:  # a NaN loss, out of memory: the trial fails, naming the account
            raise TrainingError(f"{account}: {exc}") from exc
        if pruning.pruned:  # type: ignore[attr-defined]
            raise optuna.TrialPruned(f"pruned while training {account}")
        trained = [h["eval_loss"] for h in metrics.evaluations(trained_only=True)]
        # (A NaN final evaluation has already failed the training, in `train.measure`, with the reason.)
        return float(min((loss for loss in trained if not math.isnan(loss)), default=metrics.eval_loss_after))

    def finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs:
            requeue(study, trial)
        self.emit(TrialEnded(trial_row(trial)))

    def requeue_interrupted(self, study: optuna.Study) -> None:
        """After Ctrl-C outside the Trainer (Optuna marked the trial FAILED and re-raised)."""
        from optuna.trial import TrialState

        if self.current is None:
            return
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == self.current)
        if trial.state == TrialState.FAIL:
            requeue(study, trial)
            self.emit(TrialEnded(trial_row(trial)))


def pruning_callback(trial: optuna.Trial, step0: int, max_evaluations: int, done: list[float]) -> Any:
    """Reports the running objective after each evaluation (step = account index * max evaluations +
    evaluation, counted from 0; `evals_per_epoch` of them an epoch) and stops the training when the pruner
    says so."""
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
            if math.isnan(loss):  # no score for the pruner: the trial fails at the end, saying why
                return
            self.best = min(self.best, loss)
            losses = [*done, self.best]
            trial.report(
                statistics.fmean(losses) + statistics.pstdev(losses), step0 + min(self.evals, max_evaluations - 1)
            )
            self.evals += 1
            if trial.should_prune():
                self.pruned = True
                control.should_training_stop = True

    return Pruning()
