"""The web app's training queue: one worker thread trains one job at a time, the others wait.

Pages never own a job: they poll `TrainingQueue.jobs()`, so a reloaded page (or a second browser)
sees the same queue. `cancel` sets the running job's stop event, which `train` honours after the
current step (it saves a checkpoint, then raises TrainingInterrupted: the job ends "cancelled").
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from tweetlm.errors import TweetlmError, one_line
from tweetlm.events import Curated, Evaluated, Event, Loading, Logged, Started, Step
from tweetlm.runs import Metrics
from tweetlm.train import TrainConfig, TrainingInterrupted, train

log = logging.getLogger("tweetlm")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass
class Job:
    """One training job and what its events said so far."""

    id: int
    config: TrainConfig
    submitted: float = field(default_factory=time.time)
    state: str = QUEUED
    phase: str = "waiting for its turn"
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    eta: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    message: str = ""
    run_name: str | None = None
    metrics: Metrics | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def accounts(self) -> str:
        return ", ".join(f"@{a}" for a in self.config.accounts)

    def elapsed(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or now or time.time()) - self.started


class TrainingQueue:
    """Jobs in submission order; a daemon worker thread runs them one after the other."""

    def __init__(self, keep: int = 20) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: list[Job] = []
        self._waiting: deque[Job] = deque()
        self._keep = keep  # finished jobs remembered for the page
        self._next_id = 1
        self._closed = False
        self._worker: threading.Thread | None = None

    def submit(self, config: TrainConfig) -> Job:
        with self._lock:
            if self._closed:
                raise TweetlmError("the server is shutting down: no new training jobs")
            job = Job(self._next_id, config)
            self._next_id += 1
            self._jobs.append(job)
            self._waiting.append(job)
            self._forget_old()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="tweetlm-training", daemon=True)
                self._worker.start()
            self._wake.notify()
            return _copy(job)

    def cancel_running(self) -> Job | None:
        """Ask the running job to stop after its current step; returns it (None if none runs)."""
        with self._lock:
            job = next((j for j in self._jobs if j.state == RUNNING), None)
            if job is None:
                return None
            job.stop.set()
            job.phase = "stopping after this step (saving a checkpoint)"
            return _copy(job)

    def cancel_waiting(self) -> int:
        """Drop every job that has not started; returns how many."""
        with self._lock:
            dropped = len(self._waiting)
            for job in self._waiting:
                job.state, job.phase, job.finished = CANCELLED, "cancelled before it started", time.time()
            self._waiting.clear()
            return dropped

    def jobs(self) -> list[Job]:
        """Copies of every remembered job, oldest first."""
        with self._lock:
            return [_copy(j) for j in self._jobs]

    def shutdown(self, timeout: float) -> bool:
        """Stop taking jobs, cancel the waiting ones, stop the running one; True if it ended in time."""
        with self._lock:
            self._closed = True
            for job in self._jobs:
                job.stop.set()
            self._wake.notify_all()
            worker = self._worker
        self.cancel_waiting()
        if worker is None:
            return True
        worker.join(timeout)
        return not worker.is_alive()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs if j.state in FINISHED]
        for job in finished[: max(0, len(finished) - self._keep)]:
            self._jobs.remove(job)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                job.state, job.phase, job.started = RUNNING, "starting", time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        try:
            result = train(job.config, on_event=lambda event: self._on_event(job, event), stop=job.stop)
        except TrainingInterrupted:
            names = " ".join(job.config.accounts)
            message = (
                f"cancelled at step {job.step}; its checkpoint is kept: `tweetlm train {names} --resume` continues it"
            )
            self._finish(job, CANCELLED, message, "cancelled")
        except TweetlmError as exc:
            self._finish(job, FAILED, str(exc), "failed")
        except Exception as exc:  # a bug or a library failure: the page says so and the server keeps going
            log.exception("training job %d failed", job.id)
            self._finish(job, FAILED, f"unexpected error: {one_line(exc)}", "failed")
        else:
            with self._lock:
                job.run_name = result.run_dir.name
                job.metrics = result.metrics
            self._finish(job, DONE, "", "finished")

    def _finish(self, job: Job, state: str, message: str, phase: str) -> None:
        with self._lock:
            job.state, job.message, job.phase, job.finished = state, message, phase, time.time()
            job.eta = None

    def _on_event(self, job: Job, event: Event) -> None:
        phase: str | None = None
        with self._lock:
            match event:
                case Curated():
                    phase = f"curated @{event.account} with the default rules"
                case Loading():
                    phase = f"loading {event.base_model} ({event.precision})"
                case Started():
                    job.total_steps, job.step = event.total_steps, event.step
                    phase = "measuring the base model's validation loss"
                case Step():
                    job.step, job.total_steps = event.step, event.total_steps
                    job.loss, job.eta = event.loss, event.eta
                    done = job.total_steps is not None and job.step >= job.total_steps
                    phase = "evaluating and saving the model" if done else "training"
                case Logged():
                    job.losses.append((int(event.step), float(event.loss)))
                case Evaluated():
                    job.evals.append((int(event.step), float(event.eval_loss)))
            if phase is not None and not job.stop.is_set():  # a stopping job keeps saying so
                job.phase = phase


def _copy(job: Job) -> Job:
    return dataclasses.replace(job, losses=list(job.losses), evals=list(job.evals))
