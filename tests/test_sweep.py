"""Sweeps on the tiny model: real trials of a few steps, the default SQLite storage, the report's files."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import SPACE_TOML, add_account, sample_posts, two_accounts
from tweetlm.errors import InputError
from tweetlm.events import Event, TrainingAccount
from tweetlm.sweep import SearchSpace, SweepConfig, load_study, mask_url, param_importances, run_sweep
from tweetlm.train import TrainConfig, train_trial

optuna = pytest.importorskip("optuna")


def space_file(tmp_path: Path, text: str = SPACE_TOML, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sweep_config(tiny_model: Path, tmp_path: Path, **kw: object) -> SweepConfig:
    base = TrainConfig(
        accounts=("alice", "bob"),
        base_model=str(tiny_model),
        max_steps=2,
        max_length=64,
        precision="fp32",
        report_to="none",
    )
    values: dict[str, object] = {"base": base, "n_trials": 2, "space": SearchSpace.from_file(space_file(tmp_path))}
    values.update(kw)
    return SweepConfig(**values)  # type: ignore[arg-type]


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run the real entry point; returns the exit code and stdout and stderr with whitespace runs as one space."""
    from tweetlm.cli import main

    monkeypatch.setattr(sys, "argv", ["tweetlm", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), " ".join(err.split())  # rich wraps at 80 columns here


# ---- the search space ---------------------------------------------------------------------------


def test_default_space_is_huggingtweets_plus_layers_limited_to_the_model() -> None:
    space = SearchSpace().to_dict()["search"]
    assert space["epochs"] == {"low": 1, "high": 4, "log": False}
    assert space["scheduler"] == {"choices": ["constant", "linear", "cosine"]}
    assert space["warmup"] == {"choices": [0.0, 0.1, 0.2]}
    assert space["learning_rate"] == {"low": 1e-5, "high": 2e-3, "log": True}
    assert space["batch_size"] == {"choices": [8, 16, 32]}
    assert space["grad_accum"] == {"choices": [1, 4]}
    assert space["early_stop_patience"] == {"choices": [1, 2, 4]}
    assert space["freeze_layers"] == {"choices": [0, 8, 16, 24]}
    assert space["lora_rank"] == {"choices": [0, 8, 32]}
    assert space["lora_learning_rate"] == {"low": 1e-4, "high": 1e-2, "log": True}  # searched only with LoRA on
    assert SearchSpace().for_model(30).to_dict()["search"]["freeze_layers"] == {"choices": [0, 8, 16, 24]}
    assert SearchSpace().for_model(2).to_dict()["search"]["freeze_layers"] == {"choices": [0]}
    assert SearchSpace().max_epochs(TrainConfig(accounts=("a",))) == 4


def test_space_files_in_toml_and_yaml_override_key_by_key(tmp_path: Path) -> None:
    toml = SearchSpace.from_file(space_file(tmp_path, SPACE_TOML + "batch_size = 8\n"))
    yaml_text = (
        "epochs: 1\ngrad_accum: [1]\nwarmup: [0.0, 0.1]\nscheduler: [constant, cosine]\n"
        "learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}\nbatch_size: 8\n"
    )
    yaml = SearchSpace.from_file(space_file(tmp_path, yaml_text, "space.yaml"))
    assert toml == yaml
    search = toml.to_dict()["search"]
    assert search["learning_rate"] == {"low": 1e-4, "high": 3e-3, "log": True}
    assert search["freeze_layers"] == {"choices": [0, 8, 16, 24]}  # untouched: still the default
    assert "epochs" not in search and toml.to_dict()["fixed"] == {"batch_size": 8, "epochs": 1}
    assert toml.max_epochs(TrainConfig(accounts=("a",))) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer = ['adam']", "unknown setting 'optimizer'"),
        ("accounts = ['x']", "unknown setting 'accounts'"),
        ("scheduler = ['cosine', 'exotic']", "scheduler"),
        ("learning_rate = { low = 1e-3, high = 1e-5 }", "must be below high"),
        ("learning_rate = { low = 0.0, high = 1e-3, log = true }", "log-scaled range needs low > 0"),
        ("grad_accum = { low = 1.5, high = 4 }", "whole numbers"),
        ("epochs = { low = 1, high = 4, step = 2 }", "a range is"),
        ("warmup = []", "non-empty list"),
        ("epochs = [", "not valid TOML"),
    ],
)
def test_bad_space_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        SearchSpace.from_file(space_file(tmp_path, text))


def test_a_space_file_must_be_toml_or_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="TOML"):
        SearchSpace.from_file(space_file(tmp_path, "{}", "space.json"))
    with pytest.raises(InputError, match="cannot read"):
        SearchSpace.from_file(tmp_path / "missing.toml")


# ---- sweeps -------------------------------------------------------------------------------------


def test_sweep_report_and_params_from_on_the_default_sqlite_storage(
    tiny_model: Path,
    tmp_path: Path,
    tweetlm_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two_accounts()
    space = space_file(tmp_path, SPACE_TOML + "batch_size = [16]\n")  # 4 steps an epoch: one evaluation in 2
    common = ["--base-model", str(tiny_model), "--max-steps", "2", "--max-length", "64", "--precision", "fp32"]
    code, out, err = cli(capsys, monkeypatch, "sweep", "alice", "bob", "--trials", "2", "--space", str(space), *common)
    assert code == 0, err
    assert "study sweep-alice+bob in sqlite:///" in out and "0 of 2 trials taken" in out
    assert out.count("COMPLETE") == 2 and "next: tweetlm sweep-report sweep-alice+bob" in out

    assert (tweetlm_home / "sweeps.sqlite3").is_file()
    study = load_study("sweep-alice+bob")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    for t in trials:
        losses = t.user_attrs["losses"]
        assert set(losses) == {"alice", "bob"}
        assert ("lora_learning_rate" in t.params) == (t.params["lora_rank"] > 0)
        assert t.value == pytest.approx(statistics.fmean(losses.values()) + statistics.pstdev(losses.values()))
        assert t.user_attrs["mean_loss"] == pytest.approx(statistics.fmean(losses.values()))
        # One report per evaluation and account (2 steps: one evaluation): step = account index * max
        # evaluations (1 epoch, 2 evaluations an epoch) + evaluation.
        assert sorted(t.intermediate_values) == [0, 2]
        assert t.intermediate_values[2] == pytest.approx(t.value)
    assert study.user_attrs["accounts"] == ["alice", "bob"] and study.user_attrs["space"]["fixed"] == {"epochs": 1}
    runs = tweetlm_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # trials write no model folders

    # The study already has its 2 trials: a second worker with the same command runs none.
    code, out, _ = cli(capsys, monkeypatch, "sweep", "alice", "bob", "--trials", "2", "--space", str(space), *common)
    assert code == 0 and "2 of 2 trials taken" in out and "; 0 run by this worker" in out

    report_dir = tmp_path / "report"
    code, out, err = cli(capsys, monkeypatch, "sweep-report", "sweep-alice+bob", "-o", str(report_dir))
    assert code == 0, err
    assert "best trial" in out and "random forest" in out and "fANOVA" in out and "learning_rate" in out
    from PIL import Image

    for name in ("parallel_coordinate", "importance"):
        with Image.open(report_dir / f"{name}.png") as image:
            image.verify()
            assert image.size[0] > 500
        html = (report_dir / f"{name}.html").read_text()
        assert 'src="plotly.min.js"' in html
    assert (report_dir / "plotly.min.js").stat().st_size > 1_000_000  # the plots open offline
    with (report_dir / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 2 and {"loss_alice", "learning_rate"} <= set(rows[0])
    assert not list(report_dir.glob(".*"))  # no temp files left

    best = min(trials, key=lambda t: t.value)
    code, out, err = cli(
        capsys, monkeypatch, "train", "alice", "--params-from", "sweep-alice+bob", "--lr", "0.002",
        "--report-to", "none", "--base-model", str(tiny_model), "--max-steps", "1", "--max-length", "64",
        "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    assert f"settings from study sweep-alice+bob (trial {best.number}" in out
    assert "kept from the command line: learning_rate" in out
    run_json = next((tweetlm_home / "runs").glob("*/run.json"))
    config = json.loads(run_json.read_text())["config"]
    assert config["learning_rate"] == 0.002  # given on the command line: wins over the study
    assert (config["scheduler"], config["warmup"], config["epochs"]) == (
        best.params["scheduler"],
        best.params["warmup"],
        1,
    )


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(tiny_model: Path, tmp_path: Path) -> None:
    two_accounts()
    # The tiny model has 2 layers: freezing 5 fails (as out-of-memory or a NaN loss would), freezing 0 works.
    space = SearchSpace.from_file(space_file(tmp_path, SPACE_TOML + "freeze_layers = [0, 5]\n"))
    config = sweep_config(tiny_model, tmp_path, space=space, study="failing")
    claim = threading.Event()
    claim.set()  # creates the study without running a trial
    run_sweep(config, stop=claim)
    study = load_study("failing")
    study.enqueue_trial({"freeze_layers": 5})
    study.enqueue_trial({"freeze_layers": 0})
    result = run_sweep(config)
    assert result.stopped is None and result.states == {"FAIL": 1, "COMPLETE": 1}
    failed, complete = study.get_trials()
    assert failed.state.name == "FAIL" and "the model has only 2 layers" in failed.user_attrs["fail_reason"]
    assert complete.state.name == "COMPLETE" and result.best is not None and result.best["number"] == 1


def test_a_nan_objective_fails_its_trial_with_the_reason_and_the_sweep_goes_on(
    tiny_model: Path, tmp_path: Path
) -> None:
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    two_accounts()
    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_model, broken)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.get_output_embeddings().weight[0, 0] = float("nan")  # every logit of the vocabulary's first row
    model.save_pretrained(broken)
    config = sweep_config(tiny_model, tmp_path, study="nan")
    config = dataclasses.replace(config, base=dataclasses.replace(config.base, base_model=str(broken)))
    result = run_sweep(config)
    assert result.stopped is None and result.states == {"FAIL": 2} and result.best is None
    for trial in load_study("nan").get_trials():
        assert trial.user_attrs["fail_reason"].startswith("alice: validation loss is NaN: lower learning_rate")


def test_a_stopped_trial_is_requeued_and_the_next_run_retries_it(tiny_model: Path, tmp_path: Path) -> None:
    two_accounts()
    stop = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, TrainingAccount):
            stop.set()  # like Ctrl-C, or the --max-minutes deadline, in the middle of a trial

    config = sweep_config(tiny_model, tmp_path, n_trials=1)
    first = run_sweep(config, on_event=on_event, stop=stop)
    assert first.stopped == "interrupted" and first.states == {"FAIL": 1, "WAITING": 1}
    second = run_sweep(config)
    assert second.stopped is None and second.states == {"FAIL": 1, "COMPLETE": 1}
    stopped, retry = load_study(config.name).get_trials()
    assert stopped.user_attrs["interrupted"] and retry.system_attrs["failed_trial"] == stopped.number
    assert retry.params == stopped.params and second.ran == [retry.number]


def test_keep_models_keeps_one_run_folder_per_trial_and_account(
    tiny_model: Path, tmp_path: Path, tweetlm_home: Path
) -> None:
    add_account("alice", sample_posts(60))
    config = sweep_config(tiny_model, tmp_path, n_trials=1, keep_models=True, study="kept")
    result = run_sweep(dataclasses.replace(config, base=dataclasses.replace(config.base, accounts=("alice",))))
    assert result.states == {"COMPLETE": 1}
    run = tweetlm_home / "sweeps" / "kept" / "trial-0000-alice"
    assert load_study("kept").trials[0].user_attrs["run_dir_alice"] == str(run)
    assert (run / "run.json").is_file() and (run / "model.safetensors").is_file()


def test_max_minutes_bounds_the_whole_sweep(tiny_model: Path, tmp_path: Path) -> None:
    two_accounts()
    result = run_sweep(sweep_config(tiny_model, tmp_path, n_trials=50, max_minutes=0.001))
    assert result.stopped == "deadline"
    assert "RUNNING" not in result.states and sum(result.states.values()) < 50


def test_pruning_callback_reports_the_running_objective_per_evaluation_and_stops_training(tiny_model: Path) -> None:
    from tweetlm.sweep import pruning_callback

    add_account("alice", sample_posts(60))
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes at the first report
    trial = study.ask()
    callback = pruning_callback(trial, step0=8, max_evaluations=8, done=[4.0])
    config = TrainConfig(
        accounts=("alice",), base_model=str(tiny_model), epochs=3, max_length=64, precision="fp32", report_to="none"
    )
    metrics = train_trial(config, callbacks=[callback])
    assert callback.pruned
    first = metrics.evaluations(trained_only=True)[0]
    assert metrics.epochs_completed == first["epoch"] < 1  # stopped at the first evaluation, within epoch 1
    assert metrics.stopping is not None and metrics.stopping.reason == "callback"
    frozen = study.trials[0]
    assert list(frozen.intermediate_values) == [8]  # account 1 of a 4-epoch space (2 evaluations an epoch)
    assert frozen.intermediate_values[8] == pytest.approx(
        statistics.fmean([4.0, first["eval_loss"]]) + statistics.pstdev([4.0, first["eval_loss"]])
    )
    assert SearchSpace().max_evaluations(config) == 8


# ---- bad input ----------------------------------------------------------------------------------


def test_a_study_with_a_different_search_space_or_accounts_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    two_accounts()
    claim = threading.Event()
    claim.set()
    run_sweep(sweep_config(tiny_model, tmp_path, study="s"), stop=claim)
    other = SearchSpace.from_file(space_file(tmp_path, SPACE_TOML.replace("3e-3", "1e-2")))
    with pytest.raises(InputError, match=r"'s' .* different search space \(search: learning_rate: .*--space"):
        run_sweep(sweep_config(tiny_model, tmp_path, study="s", space=other), stop=claim)
    config = sweep_config(tiny_model, tmp_path, study="s")
    config = dataclasses.replace(config, base=dataclasses.replace(config.base, accounts=("alice",)))
    with pytest.raises(InputError, match="different accounts"):
        run_sweep(config, stop=claim)


def test_accounts_without_curated_data_are_refused_before_any_trial(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime, timezone

    from tweetlm.records import Post
    from tweetlm.store import Store

    add_account("alice", sample_posts(60))
    with Store() as store, store.transaction():
        store.add_posts(
            Post(
                platform="x",
                account="bob",
                post_id=str(i),
                text=t,
                created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
            )
            for i, t in enumerate(sample_posts(60))
        )
    code, _, err = cli(capsys, monkeypatch, "sweep", "alice", "bob", "--base-model", str(tiny_model))
    assert code == 1 and "bob has no curated dataset: run `tweetlm curate bob` first" in err
    code, _, err = cli(capsys, monkeypatch, "sweep", "alice", "carol", "--base-model", str(tiny_model))
    assert code == 1 and "no posts for account 'carol'" in err
    add_account("dave", [f"post number {i} from a small account" for i in range(10)])
    code, _, err = cli(capsys, monkeypatch, "sweep", "dave", "--base-model", str(tiny_model))
    assert code == 1 and "dave: only 10 curated posts" in err


def test_unreachable_or_wrong_database_urls_say_which_without_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_account("alice", sample_posts(60))
    # Port 1 on the loopback: nothing listens, the connection is refused at once.
    url = "postgresql://me:hunter2@127.0.0.1:1/sweepdb"
    code, _, err = cli(capsys, monkeypatch, "sweep-report", "x", "--storage", url)
    assert code == 1 and "cannot open the sweep database postgresql://me:***@127.0.0.1:1/sweepdb" in err
    assert "host 127.0.0.1:1, database sweepdb" in err and "refused" in err and "hunter2" not in err
    monkeypatch.setenv("TWEETLM_SWEEP_STORAGE", "nosuchdb://me:hunter2@host/db")
    code, _, err = cli(capsys, monkeypatch, "sweep-report", "x")
    assert code == 1 and "no database driver" in err and "hunter2" not in err
    assert mask_url("postgresql://me:hunter2@db.example:5432/s") == "postgresql://me:***@db.example:5432/s"


def test_report_and_params_from_of_a_missing_study(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli(capsys, monkeypatch, "sweep-report", "nope")
    assert code == 1 and "no sweep study 'nope'" in err and "there are no studies there yet" in err
    code, _, err = cli(capsys, monkeypatch, "train", "alice", "--params-from", "nope", "--report-to", "none")
    assert code == 1 and "no sweep study 'nope'" in err


# ---- importance ---------------------------------------------------------------------------------


def test_importance_puts_the_only_parameter_that_matters_first() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: (
            (t.suggest_float("lr", 1e-6, 1e-2, log=True) - 1e-4) ** 2 * 1e8
            + 0 * t.suggest_int("epochs", 1, 10)
            + 0 * len(t.suggest_categorical("scheduler", ["constant", "linear", "cosine"]))
        ),
        n_trials=40,
    )
    importance = param_importances(study)
    assert next(iter(importance)) == "lr"
    assert next(iter(param_importances(study, ["scheduler", "epochs", "lr"]))) == "lr"  # any order of names
    assert max(importance, key=lambda p: importance[p]["fANOVA"]) == "lr"
    assert importance["lr"]["random forest"] > 0.8


def test_a_report_on_trials_that_all_scored_the_same_says_so_and_still_plots(
    tweetlm_home: Path, tmp_path: Path
) -> None:
    from tweetlm.sweep import default_storage, open_storage, sweep_report

    study = optuna.create_study(study_name="flat", storage=open_storage(default_storage()))
    study.optimize(lambda t: 5.99 + 0 * t.suggest_float("learning_rate", 1e-4, 3e-3, log=True), n_trials=3)
    report = sweep_report("flat", output=tmp_path)
    assert report.importance == {} and report.note is not None
    assert "all 3 finished trials scored the same (5.9900)" in report.note
    assert sorted(f.name for f in report.files) == ["parallel_coordinate.html", "parallel_coordinate.png", "trials.csv"]


def test_the_cli_loads_no_sweep_machinery_until_a_sweep_command_runs() -> None:
    import subprocess

    code = "import sys, tweetlm.cli; print(sorted({'optuna', 'sklearn', 'matplotlib', 'plotly'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_importance_plot_has_one_title(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    from tweetlm.sweep.report import _write_plots

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-3, log=True) + t.suggest_int("epochs", 1, 4), n_trials=8)
    titles: list[list[str]] = []
    close = plt.close

    def record(figure: plt.Figure) -> None:
        titles.append([ax.get_title(a) for ax in figure.axes for a in ("left", "center", "right") if ax.get_title(a)])
        close(figure)

    monkeypatch.setattr(plt, "close", record)
    _write_plots(study, tmp_path, ["lr", "epochs"])
    assert titles[-1] == ["Hyperparameter importance (random forest: mean decrease in impurity)"]  # not optuna's too
