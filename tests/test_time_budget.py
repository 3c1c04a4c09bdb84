"""The time budget: the learning-rate schedule follows the larger of the step share and the time share,
so a run the budget cuts short still warms up and decays to zero; a resumed run keeps its share."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.runs import RunFolder
from tweetlm.train import train
from tweetlm.trainer import Control, Pace


@pytest.mark.parametrize("shape", ["constant", "linear", "cosine"])
def test_pace_follows_whichever_share_is_further_along(shape: str) -> None:
    pace = Pace(shape, warmup=0.1, planned_steps=100)
    assert pace.factor(0) == 0.0 and pace.factor(5) == pytest.approx(0.5) and pace.factor(10) == pytest.approx(1.0)
    by_steps = [pace.factor(step) for step in range(10, 101)]
    assert all(a >= b - 1e-12 for a, b in zip(by_steps, by_steps[1:], strict=False))  # never rises after warmup
    end = {"constant": 1.0, "linear": 0.0, "cosine": 0.0}[shape]
    assert pace.factor(100) == pytest.approx(end, abs=1e-12)
    pace.time_progress = 0.55  # the budget is further along than step 20 of 100: the rate follows it
    middle = {"constant": 1.0, "linear": 0.5, "cosine": 0.5}[shape]
    assert pace.factor(20) == pytest.approx(middle) and pace.progress(20) == 0.55
    assert pace.progress(80) == 0.8  # ... until the steps are further along
    pace.time_progress = 1.7
    assert pace.progress(0) == 1.0


def test_the_time_share_leaves_room_for_the_final_evaluation_and_saving() -> None:
    control = Control(lambda e: None, threading.Event(), data=None, pace=Pace("cosine", 0.0), deadline=100.0)  # type: ignore[arg-type]
    control.t0, control.eval_seconds = 0.0, 15.0
    end = 100.0 - 15.0 - Control.SAVE_SECONDS  # (the reserve of a budget under 150 s is 10% of it)
    assert control.time_share(end / 2) == pytest.approx(0.5) and control.time_share(end) == pytest.approx(1.0)
    control.progress0 = 0.6  # resumed after 60% of the budget's training time: the rest fits the new budget
    assert control.time_share(end / 2) == pytest.approx(0.8)
    control.eval_seconds = 200.0  # no time left at all: training ends after its first step
    assert control.time_share(1.0) == 1.0
    assert Control(lambda e: None, threading.Event(), None, Pace("cosine", 0.0)).time_share(1e9) == 0.0  # type: ignore[arg-type]


def test_no_evaluation_within_the_epoch_just_before_the_budget_ends() -> None:
    class Data:
        steps_per_epoch, tokens_per_epoch = 100, 1000

    class Args:
        save_strategy = "epoch"

    def evaluates(seconds_left: float | None) -> bool:
        """Whether half an epoch's 50 steps, 1 s each, end in an evaluation `seconds_left` before the deadline."""
        now = time.monotonic()
        deadline = None if seconds_left is None else now + seconds_left
        control = Control(lambda e: None, threading.Event(), Data(), Pace("cosine", 0.0), deadline, evals_per_epoch=2)  # type: ignore[arg-type]
        control.t0, control.eval_seconds, control.save_seconds = now - 50.0, 20.0, 15.0
        flags = TrainerControl()
        control.on_step_end(Args(), TrainerState(global_step=50, max_steps=400), flags)
        return flags.should_evaluate and flags.should_save and not flags.should_training_stop

    # An interval of 50 s. Training ends 20 + 15 s before the deadline; an evaluation now leaves
    # seconds_left - 35 - 20 s of training after it, which must be a quarter of an interval (12.5 s).
    assert evaluates(1000.0) and evaluates(75.0) and evaluates(None)
    assert not evaluates(60.0) and not evaluates(40.0)


def test_a_resumed_run_restores_its_time_share_from_the_checkpoint() -> None:
    saved = Control(lambda e: None, threading.Event(), None, Pace("cosine", 0.0), deadline=1.0)  # type: ignore[arg-type]
    saved.pace.time_progress = 0.42
    state = TrainerState(stateful_callbacks=[saved])  # what a checkpoint's trainer_state.json holds
    resumed = Control(lambda e: None, threading.Event(), None, Pace("cosine", 0.0), deadline=1.0)  # type: ignore[arg-type]

    class Data:
        steps_per_epoch, tokens_per_epoch = 4, 100

    resumed.data = Data()  # type: ignore[assignment]

    class Args:
        eval_on_start = False

    resumed.on_train_begin(Args(), state, None)
    assert resumed.pace.time_progress == 0.42 and resumed.progress0 == 0.42


def test_a_run_cut_short_by_its_budget_still_decays_its_learning_rate(tiny_model: Path) -> None:
    add_account("obama", sample_posts(300))
    # Far more epochs than fit in 30 seconds (an AMX machine stepped through 58 of the tiny model's): the
    # budget, not the steps, ends the schedule.
    config = tiny_config(tiny_model, epochs=5000, scheduler="linear", max_minutes=0.5, early_stop=False)
    result = train(config)
    info = RunFolder(result.run_dir).read()
    stopping = info.metrics.stopping
    assert stopping is not None and stopping.reason == "time_limit"
    assert "reached its time budget (0.5 min, the learning-rate schedule fitted to it)" in stopping.message
    rates = [h["learning_rate"] for h in info.metrics.history if "learning_rate" in h]
    planned = config.epochs * info.metrics.steps / info.metrics.epochs_completed
    assert len(rates) >= 3 and info.metrics.steps < planned / 10
    # By steps alone the rate would still be above 90% of its peak; by the budget it has come down (the
    # rate is logged every few steps, so the last logged one may be from before the final stretch).
    assert rates[-1] < 0.6 * config.learning_rate and 1 - info.metrics.steps / planned > 0.9
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False)) and not any(map(math.isnan, rates))


PROBE = """
import ctypes
import resource

from tweetlm.trainer import resident_bytes, training_heap

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
BLOCK = 512 << 10  # under the 1 MB threshold: a micro-batch's activation, from the heap


def step(blocks):
    \"\"\"Page faults of a step whose transients are `blocks` heap blocks, touched, then freed.\"\"\"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pointers = [libc.malloc(BLOCK) for _ in range(blocks)]
    for pointer in pointers:
        ctypes.memset(pointer, 1, BLOCK)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    for pointer in reversed(pointers):
        libc.free(pointer)
    return faults


with training_heap() as heap:
    heap.pool = 64 << 20
    heap.after_step()  # the first step's end: a trim, which measures where the resident memory stands
    first = step(32)  # 16 MB of transients, paged in
    heap.after_step()  # 16 MB above it: kept
    again = step(32)  # served from the kept pages
    kept = heap.trims
    step(256)  # 128 MB: over the pool
    heap.after_step()  # given back
    print(first, again, kept, heap.trims, (resident_bytes() - heap.steady) >> 20)
"""


def test_training_keeps_the_heaps_free_pages_up_to_a_pool() -> None:
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    # In a fresh process (a busy one has free heap space of its own): the pages a step freed serve the
    # next step without faults, until the heap holds more than the pool above the last trim.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, again, kept, trims, above = (int(x) for x in done.stdout.split())
    assert first > 0 and again <= first / 10, (first, again)
    assert (kept, trims, above) == (1, 2, 0)
