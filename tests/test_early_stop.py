"""Early stopping: evaluations every half epoch, a stop once the validation loss stops improving, the best
evaluation kept, and why training ended in run.json, the card and one line of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.dataset import Split
from tweetlm.events import EarlyStopOff, Evaluated, Event, Started, Step, Stopped
from tweetlm.runs import RUN_FILE, RunFolder
from tweetlm.train import MIN_VALIDATION_TO_STOP, train
from tweetlm.trainer import evals_since_best


def overfitting(texts: list[str]) -> dict[str, Split]:
    """One post 64 times to train on, 40 others to validate: at a high rate the model learns that post by
    heart and the validation loss rises from the first evaluation on."""
    return {"obama": Split([texts[0]] * 64, texts[100:140])}


def test_a_rising_validation_loss_stops_the_run_early_and_keeps_the_best(tiny_model: Path) -> None:
    texts = sample_posts(200)
    add_account("obama", texts)
    events: list[Event] = []
    config = tiny_config(tiny_model, learning_rate=0.03, scheduler="constant", epochs=4, keep_checkpoints=True)
    result = train(config, on_event=events.append, splits=overfitting(texts))
    evals = [e for e in events if isinstance(e, Evaluated)]
    assert [e.epoch * 2 for e in evals] == list(range(len(evals)))  # 4 steps an epoch: one evaluation every 2
    trained = evals[1:]
    best = min(trained, key=lambda e: e.eval_loss)
    assert trained.index(best) == len(trained) - 3  # two evaluations after the best, none better: stopped
    stopping = RunFolder(result.run_dir).read().metrics.stopping
    assert stopping is not None
    assert (stopping.reason, stopping.step, stopping.epoch) == ("early_stop", trained[-1].step, trained[-1].epoch)
    assert (stopping.best_step, stopping.best_epoch, stopping.best_loss) == (best.step, best.epoch, best.eval_loss)
    assert stopping.step < 16 and result.metrics.steps == stopping.step
    assert stopping.message == (
        f"stopped early at epoch {trained[-1].epoch:g} (step {stopping.step}): validation loss did not improve for "
        f"2 evaluations after its best, {best.eval_loss:.3f} at epoch {best.epoch:g}"
    )
    assert result.metrics.eval_loss_after == best.eval_loss
    assert [e.stopping for e in events if isinstance(e, Stopped)] == [stopping]
    assert f"Training {stopping.message}" in (result.run_dir / "README.md").read_text()
    assert json.loads((result.run_dir / RUN_FILE).read_text())["metrics"]["stopping"]["reason"] == "early_stop"
    # Kept: the best checkpoint, which is the run's model, and the latest (what --resume would continue).
    checkpoints = result.run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        f"checkpoint-{s}" for s in (best.step, stopping.step)
    )
    kept, saved = (
        load_file(folder / "model.safetensors") for folder in (checkpoints / f"checkpoint-{best.step}", result.run_dir)
    )
    assert all(torch.equal(kept[name], saved[name]) for name in kept)
    # Checkpoints taken at evaluations hold the model, not the optimizer state (written only to resume).
    assert not list(checkpoints.glob("*/optimizer.pt")) and list(checkpoints.glob("*/trainer_state.json"))


def test_a_resumed_run_counts_the_evaluations_before_its_interruption(tiny_model: Path) -> None:
    import threading

    import pytest

    from tweetlm.train import TrainingInterrupted

    texts = sample_posts(200)
    add_account("obama", texts)
    config = tiny_config(tiny_model, learning_rate=0.03, scheduler="constant", epochs=4)
    stop = threading.Event()

    def stop_at_step_3(event: Event) -> None:
        if isinstance(event, Step) and event.step == 3:
            stop.set()  # stops after step 4, the end of epoch 1: evaluated at epochs 0.5 and 1 so far

    with pytest.raises(TrainingInterrupted):
        train(config, on_event=stop_at_step_3, stop=stop, splits=overfitting(texts))
    events: list[Event] = []
    result = train(config, resume=True, on_event=events.append, splits=overfitting(texts))
    assert next(e for e in events if isinstance(e, Started)).step == 4
    trained = result.metrics.evaluations(trained_only=True)
    assert [h["step"] for h in trained][:2] == [2, 4]  # the evaluations before the interruption, in the log
    losses = [h["eval_loss"] for h in trained]
    assert losses.index(min(losses)) == len(losses) - 3  # two evaluations after the best, counted across
    stopping = result.metrics.stopping
    assert stopping is not None and stopping.reason == "early_stop" and stopping.step == trained[-1]["step"]


def test_no_early_stop_runs_the_full_schedule(tiny_model: Path) -> None:
    texts = sample_posts(200)
    add_account("obama", texts)
    config = tiny_config(tiny_model, learning_rate=0.03, scheduler="constant", epochs=4, early_stop=False)
    result = train(config, splits=overfitting(texts))
    stopping = result.metrics.stopping
    evals = result.metrics.evaluations(trained_only=True)
    assert stopping is not None and result.metrics.steps == 16 and len(evals) == 8
    assert (stopping.reason, stopping.patience) == ("schedule", None)
    assert stopping.best_loss == result.metrics.eval_loss_after == min(h["eval_loss"] for h in evals)
    assert stopping.message.startswith("ran the full schedule (4 epochs, 16 steps); best validation loss ")
    assert stopping.message.endswith("; early stopping off (--no-early-stop)")


def test_too_few_validation_posts_say_so_and_train_the_fixed_schedule(tiny_model: Path) -> None:
    from typer.testing import CliRunner

    from tweetlm.cli import app

    add_account("small", sample_posts(45))  # 15 held out for validation: too few to judge
    out = tiny_model.parent / "small-run"
    args = ["train", "small", "-m", str(tiny_model), "--precision", "fp32", "--report-to", "none", "--epochs", "2"]
    result = CliRunner().invoke(app, [*args, "--max-length", "64", "--output", str(out)])
    assert result.exit_code == 0, result.output
    stopping = RunFolder(out).read().metrics.stopping
    assert stopping is not None and stopping.reason == "schedule" and stopping.patience is None
    posts = RunFolder(out).read().metrics.validation_posts
    assert posts < MIN_VALIDATION_TO_STOP
    why = f"off: {posts} validation posts are too few to judge an improvement (it needs {MIN_VALIDATION_TO_STOP})"
    assert stopping.early_stop_off == why
    assert f"note: early stopping {why}: training the fixed schedule" in " ".join(result.output.split())
    assert "ran the full schedule (2 epochs, " in result.output  # the line on why training ended

    events: list[Event] = []
    again = train(tiny_config(tiny_model, accounts=("small",), max_steps=1), on_event=events.append)
    assert [type(e) for e in events if isinstance(e, EarlyStopOff | Stopped)] == [EarlyStopOff, Stopped]
    assert again.metrics.stopping is not None and again.metrics.stopping.reason == "max_steps"
    assert again.metrics.stopping.message.startswith("stopped at max_steps=1, epoch ")


def test_evaluations_since_the_best() -> None:
    assert evals_since_best([]) == 0
    assert evals_since_best([3.0, 2.0, 2.5, 2.0]) == 2  # an equal loss is no improvement
    assert evals_since_best([3.0, float("nan"), float("nan")]) == 2  # nor is NaN
    assert evals_since_best([3.0, 2.0, 1.0]) == 0
