#!/usr/bin/env python
"""Where a training step's time goes: the default recipe's Trainer steps START..STOP of an account, timed by
phase (forward and loss, backward, clipping, optimizer, the rest) with `time.perf_counter`, with the CPU
seconds and minor page faults a step and the process's peak resident memory (VmHWM, the whole run).

It runs `tweetlm.train.train` on an account already in TWEETLM_HOME's store (`tweetlm import`), with no time
budget, no early stopping and no tracker, for STOP + 1 steps; `--config` changes TrainConfig fields (JSON).

    python benchmarks/step_phases.py ACCOUNT [--start 3] [--stop 23] [--config '{"micro_batch_tokens": 768}']
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECONDS: collections.Counter[str] = collections.Counter()
TIMING = [False]


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not TIMING[0]:
            return function(*args, **kwargs)
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[name] += time.perf_counter() - start

    return wrapper


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("account")
    parser.add_argument("--start", type=int, default=3, help="the first timed step (after warm-up)")
    parser.add_argument("--stop", type=int, default=23, help="the step after the last timed one")
    parser.add_argument("--config", default="{}", help="TrainConfig fields, as JSON")
    args = parser.parse_args()
    if not 0 <= args.start < args.stop:
        parser.error("--start must be >= 0 and below --stop")

    import accelerate
    from transformers import TrainerCallback

    from tweetlm import trainer
    from tweetlm.errors import InputError
    from tweetlm.optim import MasterAdamW
    from tweetlm.train import TrainConfig, train

    trainer.TweetlmTrainer.compute_loss = timed("forward and loss", trainer.TweetlmTrainer.compute_loss)
    accelerate.Accelerator.backward = timed("backward", accelerate.Accelerator.backward)
    MasterAdamW.clip = timed("clipping", MasterAdamW.clip)
    MasterAdamW.step = timed("optimizer", MasterAdamW.step)

    class Window(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == args.start:
                TIMING[0] = True
                self.began, self.faults, self.times = time.perf_counter(), faults(), os.times()

        def on_step_end(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == args.stop and TIMING[0]:
                TIMING[0] = False
                steps, seconds, times = args.stop - args.start, time.perf_counter() - self.began, os.times()
                print(
                    f"steps {args.start}-{args.stop}: {seconds / steps:.3f} s a step, "
                    f"{(faults() - self.faults) / steps:.0f} page faults, "
                    f"user {(times.user - self.times.user) / steps:.2f} s, "
                    f"system {(times.system - self.times.system) / steps:.2f} s a step"
                )
                for name, value in SECONDS.items():
                    print(f"  {name}: {value / steps:.3f} s a step")
                print(f"  the rest: {(seconds - sum(SECONDS.values())) / steps:.3f} s a step")

    fields = {"max_steps": args.stop + 1, "max_minutes": 0, "early_stop": False, "report_to": "none"}
    try:
        config = TrainConfig(accounts=(args.account,), **fields | json.loads(args.config))
    except (ValueError, TypeError, InputError) as error:  # bad JSON (a ValueError), an unknown field, a bad value
        parser.error(f"--config: {error}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        train(config, output=Path(folder) / "run", callbacks=[Window()])
    # ru_maxrss: the process's peak resident set (VmHWM), in KiB on Linux
    print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
