"""Experiment tracking, local first: trackio by default (kept under TWEETLM_HOME/trackio, no account, no
network), or any of wandb, mlflow, tensorboard through the Trainer's own `report_to`.

Besides what the Trainer logs (losses, learning rate, its arguments), `prediction_callback` logs the
tweetlm config, the curation report and the dataset hash, and at the end of each epoch (after its
evaluation) a table of sample predictions for fixed prompts, HuggingTweets' "Input / Prediction" table.
The same table goes to `samples.json` in the run folder, so nothing depends on the tracker.
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

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from tweetlm.dataset import Split
    from tweetlm.store import Dataset
    from tweetlm.train import TrainConfig

log = logging.getLogger("tweetlm")

TRACKERS = ("trackio", "wandb", "mlflow", "tensorboard")
_PACKAGES = {"trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow", "tensorboard": "tensorboard"}
_WANDB_LIKE = ("trackio", "wandb")  # trackers with wandb's API: config.update, log, Table
PROJECT = "tweetlm"
SAMPLES_FILE = "samples.json"
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
        raise InputError(f"--report-to {value!r}: use none, or one or more (comma-separated) of {', '.join(TRACKERS)}")
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
            raise InputError(f"--report-to {name}: {_PACKAGES[name]} is not installed: pip install {_PACKAGES[name]}")
    if "trackio" in names:
        use_trackio_dir()
    return {"report_to": names, "project": PROJECT}


def tracked_summary(config: TrainConfig, datasets: dict[str, Dataset], splits: dict[str, Split]) -> dict[str, Any]:
    """What trackers get as run config besides the Trainer's arguments."""
    from tweetlm.dataset import data_hash

    return {
        "tweetlm/config": config.to_dict(),
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

    from tweetlm.generate import cut

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    encoded = [[eos, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    width = max(map(len, encoded))
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(SAMPLE_SEED)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            top_p=0.95,
            top_k=0,
            temperature=1.0,
            max_new_tokens=SAMPLE_TOKENS,
            eos_token_id=eos,
            pad_token_id=pad,
            use_cache=True,
        )
    model.train(was_training)
    rows = []
    for prompt, row in zip(prompts, out[:, width:].tolist(), strict=True):
        tokens = row[: row.index(eos)] if eos in row else row
        text = (prompt + tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        rows.append({"input": prompt, "prediction": cut(text, 280)})
    return rows


def prediction_callback(
    config: TrainConfig, datasets: dict[str, Dataset], splits: dict[str, Split], folder: Path
) -> TrainerCallback:
    """A TrainerCallback: tweetlm's config to the trackers, then the prediction table after each epoch."""
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
                    "settings": {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": SAMPLE_TOKENS},
                    "evaluations": [],
                }

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # The Trainer's own tracker callbacks run first, so their runs are open by now.
            self.trackers = [importlib.import_module(n) for n in args.report_to if n in _WANDB_LIKE]
            if state.is_world_process_zero:
                for tracker in self.trackers:
                    tracker.config.update(summary)

        def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # Not for the base model before training (step 0): epochs only, as sampling costs seconds.
            if not state.is_world_process_zero or state.global_step == 0:
                return
            rows = sample_predictions(kw["model"], kw["processing_class"])
            epoch = round(state.epoch or 0.0, 2)
            self.samples["evaluations"].append({"step": state.global_step, "epoch": epoch, "rows": rows})
            tmp = samples_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.samples, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, samples_path)
            for tracker in self.trackers:
                table = tracker.Table(
                    columns=["Input", "Prediction (machine-generated)"],
                    data=[[r["input"], r["prediction"]] for r in rows],
                )
                tracker.log({"predictions": table, "train/global_step": state.global_step, "train/epoch": epoch})

    return Predictions()
