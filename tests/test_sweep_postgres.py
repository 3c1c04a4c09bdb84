"""Distributed sweeps for real: a throwaway PostgreSQL server, two worker processes running the CLI, one killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SPACE_TOML, two_accounts
from tests.pg import INSTALL_HINT, PostgresServer, find_bin_dir
from tweetlm.errors import InputError
from tweetlm.sweep import SearchSpace, load_study
from tweetlm.sweep.space import CONDITIONS, Dimension

pytestmark = pytest.mark.postgres
optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if find_bin_dir() is None:
        pytest.skip(f"PostgreSQL binaries not found under /usr/lib/postgresql/*/bin ({INSTALL_HINT})")
    with PostgresServer() as server:
        yield server


def test_wrong_database_password_or_name_says_which_without_the_password(postgres: PostgresServer) -> None:
    from tweetlm.sweep import open_storage

    wrong_password = postgres.url.replace(postgres.password, "not-the-password")
    with pytest.raises(InputError) as info:
        open_storage(wrong_password)
    message = str(info.value)
    assert f"host 127.0.0.1:{postgres.port}, database sweeps" in message
    assert "password authentication failed" in message and "not-the-password" not in message
    with pytest.raises(InputError, match='database "nosuch" does not exist') as info:
        open_storage(postgres.url.rsplit("/", 1)[0] + "/nosuch")
    assert postgres.password not in str(info.value)


def _study_once_created(url: str) -> optuna.Study | None:
    from tweetlm.errors import NoDataError

    try:
        return load_study("pg", url)
    except NoDataError:  # the workers have not created it yet
        time.sleep(0.2)
        return None


def _drew_all(params: dict[str, object], dimensions: tuple[Dimension, ...]) -> bool:
    """Every dimension a trial draws, given its draws so far (LoRA's learning rate only with a LoRA rank)."""
    return all(d.name in params for d in dimensions if d.name not in CONDITIONS or params.get(CONDITIONS[d.name]))


def test_two_workers_share_a_study_and_a_killed_workers_trial_is_retried(
    postgres: PostgresServer, tiny_model: Path, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    two_accounts()
    space = tmp_path / "space.toml"
    space.write_text(SPACE_TOML)
    n_trials = 4
    command = [
        sys.executable, "-m", "tweetlm", "sweep", "alice", "bob", "--trials", str(n_trials), "--study", "pg",
        "--space", str(space), "--base-model", str(tiny_model), "--max-length", "64",
        "--precision", "fp32", "--pruner", "none", "--heartbeat", "2",
    ]  # fmt: skip
    # --max-steps is a speed cap, not part of the study: worker a's trials run long enough to be caught
    # training (with 2 steps both workers could finish every trial between two polls), worker b's are short.
    max_steps = {"a": "100000", "b": "2"}
    env = {**os.environ, "TWEETLM_SWEEP_STORAGE": postgres.url}  # the password stays out of the process list
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("a", "b")}
    workers = {
        name: subprocess.Popen(
            [*command, "--max-steps", max_steps[name]], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        for name, log in logs.items()
    }
    try:
        # Kill worker a with SIGKILL (no cleanup, no goodbye) while one of its trials is running.
        victim = f":{workers['a'].pid}"
        dimensions = SearchSpace.from_file(space).dimensions
        deadline = time.monotonic() + 300
        study = None
        killed_number = None
        while killed_number is None:
            assert time.monotonic() < deadline, "worker a never ran a trial"
            assert workers["a"].poll() is None, (tmp_path / "a.log").read_text()
            if study is None:
                study = _study_once_created(postgres.url)
                continue
            running = [  # a trial of worker a that has drawn all its parameters, so it is training
                t
                for t in study.get_trials(deepcopy=False)
                if t.state == TrialState.RUNNING
                and t.user_attrs.get("worker", "").endswith(victim)
                and _drew_all(t.params, dimensions)
            ]
            if running:
                workers["a"].send_signal(signal.SIGKILL)
                killed_number = running[0].number
            time.sleep(0.05)
        workers["a"].wait(timeout=30)
        assert workers["b"].wait(timeout=400) == 0, (tmp_path / "b.log").read_text()
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in logs.values():
            log.close()

    trials = load_study("pg", postgres.url).get_trials()
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params and retries[0].user_attrs["worker"].endswith(f":{workers['b'].pid}")
    # Exactly the trials asked for finished (the killed one lives on in its retry), across both workers.
    finished = [t for t in trials if t.number != killed_number]
    assert len(finished) == n_trials and all(t.state == TrialState.COMPLETE for t in finished)
    log_b = " ".join((tmp_path / "b.log").read_text().split())
    assert f"retry of trial {killed_number}" in log_b and postgres.password not in log_b
