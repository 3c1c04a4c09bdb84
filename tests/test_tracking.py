"""Tracking: trackio by default, in TWEETLM_HOME, read back through trackio's own API; the per-evaluation
"Input / Prediction" table in the run folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, add_account, sample_posts, tiny_config
from tweetlm.errors import InputError
from tweetlm.runs import RUN_FILE, RunFolder
from tweetlm.tracking import PROMPTS, SAMPLES_FILE, parse_report_to, tracker_args
from tweetlm.train import TrainConfig, train

READ_BACK = """
import json, sys
import trackio
from trackio.sqlite_storage import SQLiteStorage

runs = SQLiteStorage.get_runs("tweetlm")
logs = SQLiteStorage.get_logs("tweetlm", runs[-1])
config = trackio.Api().runs("tweetlm")[-1].config
tracked = {"dir": str(trackio.utils.TRACKIO_DIR), "runs": runs, "logs": logs, "config": config}
json.dump(tracked, sys.stdout, default=str)
"""


def test_report_to_is_none_or_known_trackers() -> None:
    assert parse_report_to("none") == []
    assert parse_report_to("trackio, wandb,trackio") == ["trackio", "wandb"]
    with pytest.raises(InputError, match="report_to='comet'"):
        parse_report_to("comet")
    with pytest.raises(InputError, match="report_to"):
        TrainConfig(accounts=("a",), report_to="none,trackio")
    assert TrainConfig(accounts=("a",)).report_to == "trackio"  # tracked unless told otherwise


def test_a_missing_tracker_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "trackio", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with caplog.at_level(logging.WARNING, logger="tweetlm"):
        assert tracker_args("trackio")["report_to"] == []  # the default: train untracked, and say so
    assert "pip install 'tweetlm[eval]'" in caplog.text
    with pytest.raises(InputError, match="pip install mlflow"):
        tracker_args("mlflow")


def test_a_tracked_tiny_training_run_can_be_read_back_from_trackio(tiny_model: Path, tweetlm_home: Path) -> None:
    """`tweetlm train` in a fresh process (trackio reads its folder once per process), then trackio's API."""
    add_account("obama", sample_posts(120))
    env = {k: v for k, v in os.environ.items() if k != "TRACKIO_DIR"}
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "tweetlm"), "train", "obama", "--base-model", str(tiny_model), "--max-steps", "4"]
    command += ["--lr", "3e-3", "--max-length", "64", "--precision", "fp32"]
    trained = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    run_dir = next((tweetlm_home / "runs").iterdir())
    run = RunFolder(run_dir).read()
    assert run.config["report_to"] == "trackio"

    env["TRACKIO_DIR"] = str(tweetlm_home / "trackio")
    read = subprocess.run(
        [sys.executable, "-c", READ_BACK], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert read.returncode == 0, read.stderr
    tracked = json.loads(read.stdout)
    assert Path(tracked["dir"]) == tweetlm_home / "trackio" and (tweetlm_home / "trackio" / "tweetlm.db").is_file()
    assert tracked["runs"] == [run_dir.name]

    logs = tracked["logs"]
    eval_losses = [entry["eval/loss"] for entry in logs if "eval/loss" in entry]
    history = [h["eval_loss"] for h in run.metrics.history if "eval_loss" in h]
    assert eval_losses == pytest.approx(history)  # the same curve as run.json
    assert any("train/loss" in entry and "train/learning_rate" in entry for entry in logs)
    tables = [entry["predictions"] for entry in logs if "predictions" in entry]
    assert len(tables) == len(history) - 1  # after each epoch's evaluation (not the base model's)
    assert [row["Input"] for row in tables[-1]["_value"]] == list(PROMPTS)

    config = tracked["config"]
    assert config["tweetlm/data_hash"] == run.data["hash"]
    assert config["tweetlm/config"]["max_steps"] == 4
    assert config["tweetlm/curation"]["obama"]["kept"] == run.data["datasets"]["obama"]["report"]["kept"]
    assert "hub_token" not in config or config["hub_token"] in (None, "<HUB_TOKEN>")

    # The dashboard (`tweetlm dashboard`, trackio's own server) lists the run.
    assert _dashboard_runs(env) == [run_dir.name]


def _dashboard_runs(env: dict[str, str]) -> list[str]:
    import socket
    import time

    import httpx

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "tweetlm"), "dashboard", "--no-open", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/api/get_runs_for_project", json={"project": "tweetlm"}, timeout=5
                )
                return [run["name"] for run in answer.json()["data"]]
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_prediction_table_is_saved_in_the_run_folder(tiny_model: Path) -> None:
    add_account("obama", sample_posts(120))
    result = train(tiny_config(tiny_model, epochs=2, report_to="none"))
    samples = json.loads((result.run_dir / SAMPLES_FILE).read_text())
    assert samples["label"] == "machine-generated, not written by the person"
    assert [e["step"] for e in samples["evaluations"]] == [
        h["step"] for h in RunFolder(result.run_dir).read().metrics.history if "eval_loss" in h and h["step"]
    ]
    assert [e["epoch"] for e in samples["evaluations"]] == [0.5, 1.0, 1.5, 2.0]  # an evaluation every half epoch
    for evaluation in samples["evaluations"]:
        assert [r["input"] for r in evaluation["rows"]] == list(PROMPTS)
        assert all(r["prediction"].startswith(r["input"]) and len(r["prediction"]) <= 280 for r in evaluation["rows"])
    assert (result.run_dir / RUN_FILE).is_file() and not list(result.run_dir.glob("*.tmp"))


def test_dashboard_without_tracked_runs_says_what_to_do() -> None:
    from typer.testing import CliRunner

    from tweetlm.cli import app

    out = CliRunner().invoke(app, ["dashboard", "--no-open"])
    assert out.exit_code != 0 and "no tracked runs" in str(out.exception)
