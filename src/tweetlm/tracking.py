"""Experiment tracking, local first: trackio by default (kept under TWEETLM_HOME/trackio, no account, no
network), or any of wandb, mlflow, tensorboard through the Trainer's own `report_to`.

Besides what the Trainer logs (losses, learning rate, its arguments), `prediction_callback` logs the
tweetlm config, the curation report and the dataset hash, and after each evaluation of a trained model
(`evals_per_epoch` an epoch) a table of sample predictions for fixed prompts, HuggingTweets' "Input /
Prediction" table. The same table goes to `samples.json` in the run folder, so nothing depends on the tracker.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tweetlm import paths
from tweetlm.errors import InputError
from tweetlm.runs import SAMPLES_FILE
from tweetlm.sampling import MAX_CHARS, TEMPERATURE, TOP_P, cut, prompt_ids, sample_continuations

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from tweetlm.dataset import Split
    from tweetlm.store import Dataset

log = logging.getLogger("tweetlm")

TRACKERS = ("trackio", "wandb", "mlflow", "tensorboard")
_PACKAGES = {"trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}
_WANDB_LIKE = ("trackio", "wandb")  # trackers with wandb's API: config.update, log, Table
PROJECT = "tweetlm"
PROMPTS = ("", "I think", "Today", "My dream is")
SAMPLE_SEED = 0
SAMPLE_TOKENS = 40


def parse_report_to(value: str) -> list[str]:
    """`none`, or a comma-separated list of trackers; raises InputError on anything else."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or not names:
        raise InputError(f"report_to={value!r}: use none, or one or more (comma-separated) of {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def trackio_dir() -> Path:
    """Where trackio keeps its SQLite projects: TRACKIO_DIR if the user set it, else TWEETLM_HOME/trackio."""
    return Path(os.environ.get("TRACKIO_DIR") or paths.home() / "trackio")


def use_trackio_dir() -> Path:
    """Point trackio at `trackio_dir()`. trackio reads TRACKIO_DIR once, when it is first imported."""
    folder = trackio_dir()
    os.environ["TRACKIO_DIR"] = str(folder)
    return folder


def tracker_args(report_to: str) -> dict[str, Any]:
    """TrainingArguments for tracking: `report_to` (checked to be installed) and the trackio project."""
    names = parse_report_to(report_to)
    for name in list(names):
        if importlib.util.find_spec(_PACKAGES[name]) is not None:
            continue
        if name == "trackio":  # the default: a core install without the eval extra trains untracked
            log.warning("trackio is not installed, so this run is not tracked: pip install 'tweetlm[eval]'")
            names.remove(name)
        else:
            raise InputError(f"report_to={name}: {_PACKAGES[name]} is not installed: pip install {_PACKAGES[name]}")
    if "trackio" in names:
        use_trackio_dir()
    return {"report_to": names, "project": PROJECT}


def tracked_summary(config: dict[str, Any], datasets: dict[str, Dataset], splits: dict[str, Split]) -> dict[str, Any]:
    """What trackers get as run config besides the Trainer's arguments (`config`: the TrainConfig's dict)."""
    from tweetlm.dataset import data_hash

    return {
        "tweetlm/config": config,
        "tweetlm/data_hash": data_hash(splits),
        "tweetlm/curation": {
            account: {
                "dataset_hash": ds.hash,
                "downloaded": ds.report.get("downloaded"),
                "dropped": ds.report.get("dropped"),
                "kept": ds.report.get("kept"),
                "train_posts": len(splits[account].train),
                "validation_posts": len(splits[account].validation),
            }
            for account, ds in datasets.items()
        },
    }


def sample_predictions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: tuple[str, ...] = PROMPTS
) -> list[dict[str, str]]:
    """One post per prompt, sampled in one left-padded batch with a fixed seed, without disturbing the
    caller's random state (training goes on exactly as without the table)."""
    import torch

    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SAMPLE_SEED)
        rows = [prompt_ids(tokenizer, p) for p in prompts]
        texts = sample_continuations(model, tokenizer, rows, SAMPLE_TOKENS)
    model.train(was_training)
    return [
        {"input": prompt, "prediction": cut((prompt + text).strip(), MAX_CHARS)}
        for prompt, text in zip(prompts, texts, strict=True)
    ]


def prediction_callback(
    config: dict[str, Any], datasets: dict[str, Dataset], splits: dict[str, Split], folder: Path
) -> TrainerCallback:
    """A TrainerCallback: tweetlm's config (the TrainConfig's dict) to the trackers, then the prediction
    table after each evaluation."""
    from transformers import TrainerCallback

    from tweetlm.card import SHORT_LABEL

    summary = tracked_summary(config, datasets, splits)
    samples_path = folder / SAMPLES_FILE

    class Predictions(TrainerCallback):
        def __init__(self) -> None:
            self.trackers: list[Any] = []
            if samples_path.is_file():  # a resumed run keeps the tables of its first part
                self.samples = json.loads(samples_path.read_text(encoding="utf-8"))
            else:
                self.samples = {
                    "label": SHORT_LABEL,
                    "prompts": list(PROMPTS),
                    "seed": SAMPLE_SEED,
                    "settings": {"temperature": TEMPERATURE, "top_p": TOP_P, "max_new_tokens": SAMPLE_TOKENS},
                    "evaluations": [],
                }

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # The Trainer's own tracker callbacks run first, so their runs are open by now.
            self.trackers = [importlib.import_module(n) for n in args.report_to if n in _WANDB_LIKE]
            if state.is_world_process_zero:
                for tracker in self.trackers:
                    tracker.config.update(summary)

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # Not for the base model before training (step 0): trained models only, as sampling costs seconds.
            if not state.is_world_process_zero or state.global_step == 0:
                return
            rows = sample_predictions(kw["model"], kw["processing_class"])
            epoch = round(state.epoch or 0.0, 2)
            self.samples["evaluations"].append({"step": state.global_step, "epoch": epoch, "rows": rows})
            paths.write_json(samples_path, self.samples)
            for tracker in self.trackers:
                table = tracker.Table(
                    columns=["Input", "Prediction (machine-generated)"],
                    data=[[r["input"], r["prediction"]] for r in rows],
                )
                tracker.log({"predictions": table, "train/global_step": state.global_step, "train/epoch": epoch})

    return Predictions()
