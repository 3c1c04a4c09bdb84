"""Rank awareness under `torchrun` / `accelerate launch`: which process this is, a barrier, the main
process's value sent to every process, and a flag any process can raise for all. Without a launcher
(WORLD_SIZE unset) there is one process and each function here is a no-op."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from tweetlm.errors import TweetlmError

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init() -> None:
    """Join the launcher's process group (gloo on CPU, NCCL on GPUs) once; the Trainer reuses it."""
    if world_size() == 1 or _initialized():
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    if world_size() > 1 and _initialized():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (curating, dequantizing, ...); the others wait, then run it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def from_main(make: Callable[[], T]) -> T:
    """`make()` run by the main process; every process gets its value, or raises its TweetlmError."""
    if world_size() == 1:
        return make()
    import torch.distributed as dist

    box: list[Any] = [None]
    if is_main():
        try:
            box = [(make(), None)]
        except TweetlmError as exc:
            box = [(None, exc)]
    dist.broadcast_object_list(box, src=0)
    value, error = box[0]
    if error is not None:
        raise error
    return value  # type: ignore[no-any-return]


def any_rank(*flags: bool) -> list[bool]:
    """Each flag, true on every process when it is true on any (a step's stop and time-out decisions)."""
    return [bool(v) for v in max_over_ranks(*(float(f) for f in flags))]


def max_over_ranks(*values: float) -> list[float]:
    """Each value, the largest any process has (so every process takes the same decision)."""
    if world_size() == 1 or not _initialized():
        return list(values)
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [float(v) for v in tensor.tolist()]


def cpu_threads() -> int:
    """Under a launcher on CPU: this machine's cores shared among its processes (torchrun would give 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def quiet_other_ranks() -> None:
    """Only the main process prints: the others keep errors only."""
    if is_main():
        return
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def first_to_report(message: str) -> bool:
    """Whether this process should print `message`: once across processes for the same error (the
    launcher's store counts them), by the main process alone before the group exists."""
    if world_size() == 1:
        return True
    if not _initialized():
        return is_main()
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
        store.set_timeout(timedelta(seconds=5))
        key = "tweetlm-error-" + hashlib.sha256(message.encode()).hexdigest()[:16]
        return bool(store.add(key, 1) == 1)
    except Exception:  # the store went with a failed main process: say it rather than nothing
        return True
