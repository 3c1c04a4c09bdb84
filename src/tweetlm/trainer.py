"""The HF Trainer as tweetlm drives it: a Trainer whose data loaders are tweetlm's (length-grouped,
balanced batches; packed or padded rows), and the callback that reports progress and stops a run on
Ctrl-C or at its time limit. Imported only when training (it imports torch and transformers).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from tweetlm.dataset import EpochBatches, PostDataset, collate, pack
from tweetlm.events import Evaluated, EventHandler, Logged, Started, Step


@dataclass
class TrainData:
    """The encoded posts of a run: what the Trainer's loaders serve, and what the run records of them."""

    train_set: PostDataset
    val_set: PostDataset
    sampler: EpochBatches
    mix: dict[str, Any]
    pad_id: int
    batch_size: int
    packing_length: int | None  # rows of this many tokens when packing, else None (padded rows)
    steps_per_epoch: int
    tokens_per_epoch: int

    def collate_train(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        if self.packing_length:
            return pack(batch, self.pad_id, self.packing_length)
        return collate(batch, self.pad_id)

    def collate_eval(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id)


class TweetlmTrainer(Trainer):
    """The Trainer with tweetlm's batches: training batches from `EpochBatches`, validation batches of
    posts sorted by length (less padding, the same loss)."""

    def __init__(self, *args: Any, data: TrainData, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data = data

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        loader = torch.utils.data.DataLoader(
            self.data.train_set, batch_sampler=self.data.sampler, collate_fn=self.data.collate_train
        )
        return self.accelerator.prepare(loader)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        val_set, size = self.data.val_set, self.data.batch_size
        order = sorted(range(len(val_set)), key=lambda i: len(val_set.sequences[i]))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        loader = torch.utils.data.DataLoader(val_set, batch_sampler=batches, collate_fn=self.data.collate_eval)
        return self.accelerator.prepare(loader)


class Control(TrainerCallback):  # type: ignore[misc]
    """Progress events (start, step, eval, log), the time limit and the stop flag (Ctrl-C, a cancel button).

    Setting `stop` makes the Trainer end the epoch early, which evaluates and saves a checkpoint."""

    def __init__(
        self,
        emit: EventHandler,
        stop: threading.Event,
        data: TrainData,
        max_minutes: float | None,
    ) -> None:
        self.emit = emit
        self.stop = stop
        self.data = data
        self.max_minutes = max_minutes
        self.t0 = time.monotonic()
        self.step0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step0 = state.global_step
        self.t0 = time.monotonic()  # a resume's checkpoint loading is no part of the pace
        self.emit(Started(state.max_steps, state.global_step, self.data.steps_per_epoch, self.data.tokens_per_epoch))

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        elapsed = time.monotonic() - self.t0
        done = state.global_step - self.step0
        left = (state.max_steps - state.global_step) * elapsed / max(done, 1)
        timed_out = self.max_minutes is not None and elapsed > self.max_minutes * 60
        if timed_out or self.stop.is_set():
            control.should_training_stop = True
        tokens = self.data.tokens_per_epoch * done / self.data.steps_per_epoch
        self.emit(
            Step(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch,
                elapsed=elapsed,
                eta=left,
                tokens_per_s=tokens / max(elapsed, 1e-9),
                loss=next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
            )
        )

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kw: Any) -> None:
        loss = metrics["eval_loss"]
        self.emit(Evaluated(state.global_step, state.epoch or 0.0, loss, math.exp(min(loss, 50))))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float], **kw: Any) -> None:
        if "loss" in logs:
            self.emit(Logged(state.global_step, logs["loss"], dict(logs)))
