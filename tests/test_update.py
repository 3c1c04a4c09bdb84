"""`tweetlm update` on a tiny model: a CSV that grows between runs is re-imported, the latest run is
continued on the new posts and kept only if it predicts them better; cron-friendly exits."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import sample_posts
from tweetlm.errors import NoDataError

TWEETLM = str(Path(sys.executable).with_name("tweetlm"))
POSTS = sample_posts(400)


def write_csv(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "created_at", "text"])
        for i, text in enumerate(texts):
            writer.writerow([str(1000 + i), f"2020-01-{1 + i % 28:02d}T12:00:00Z", text])
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TWEETLM, *args], capture_output=True, text=True, env=dict(os.environ), timeout=600)


def train_parent(tiny_model: Path, csv_path: Path) -> Path:
    from tweetlm.train import TrainConfig, train

    assert cli("import", str(csv_path), "--account", "obama").returncode == 0
    config = TrainConfig(
        accounts=("obama",),
        base_model=str(tiny_model),
        epochs=1,
        learning_rate=3e-3,
        max_length=64,
        precision="fp32",
        report_to="none",
        max_steps=2,
    )
    run = train(config).run_dir
    assert run is not None
    return run


def test_update_without_a_run_says_train_it_first(tmp_path: Path, tweetlm_home: Path) -> None:
    assert cli("import", str(write_csv(tmp_path / "p.csv", POSTS[:60])), "--account", "obama").returncode == 0
    before = (tweetlm_home / "tweetlm.sqlite").read_bytes()
    result = cli("update", "obama")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: obama has no finished run to update: train it first (tweetlm train obama)"
    ]
    assert (tweetlm_home / "tweetlm.sqlite").read_bytes() == before
    assert not any((tweetlm_home / "runs").glob("*/run.json"))


def test_update_continues_the_latest_run_then_finds_nothing_new(tiny_model: Path, tmp_path: Path) -> None:
    from tweetlm.runs import RunFolder

    def latest_run(account: str) -> Path:
        return RunFolder.latest(account).path

    csv_path = write_csv(tmp_path / "obama.csv", POSTS[:120])
    parent = train_parent(tiny_model, csv_path)
    write_csv(csv_path, POSTS[:200])  # 80 more posts arrive in the same file

    first = cli("update", "obama", "--epochs", "2")
    assert first.returncode == 0, first.stderr
    out = " ".join(first.stdout.split())
    assert "imported obama.csv: 80 new of 200" in out
    run = latest_run("obama")
    if "new run" in out:  # kept: the new posts' loss went down
        assert run != parent
        meta = RunFolder(run).read()
        assert meta.parent == parent.name and meta.chain == [parent.name]
        assert meta.update is not None and meta.update["kept"] is True
        assert meta.update["held_out_loss_after"] < meta.update["held_out_loss_before"]
        assert meta.base_model == RunFolder(parent).read().base_model
        assert meta.config["base_model"] == str(parent)
        posts = json.loads((run / "posts.json").read_text())
        seen = posts["train"]["obama"] + posts["validation"]["obama"]
        assert len(seen) == len(set(seen)) and len(seen) > 100
    else:
        assert "kept " + parent.name in out
        assert run == parent
    assert not any(p.name.startswith(".") and p.is_dir() and any(p.iterdir()) for p in run.parent.iterdir())

    second = cli("update", "obama")
    assert second.returncode == 0, second.stderr
    assert "nothing new" in second.stdout
    assert latest_run("obama") == run


def test_a_worse_update_is_not_kept_and_not_retried(tiny_model: Path, tmp_path: Path) -> None:
    from tweetlm.runs import RunFolder
    from tweetlm.update import UpdateConfig, update

    csv_path = write_csv(tmp_path / "obama.csv", POSTS[:120])
    parent = train_parent(tiny_model, csv_path)
    write_csv(csv_path, POSTS[:160])
    # A learning rate so small that no weight moves: the new posts' loss does not go down.
    result = update(UpdateConfig("obama", learning_rate=1e-12, epochs=1))
    assert result.status == "rejected", result
    assert result.loss_after is not None and result.loss_before is not None
    assert result.loss_after >= result.loss_before
    assert RunFolder.latest("obama").path == parent
    assert json.loads((parent / "updates.json").read_text())[0]["kept"] is False
    again = update(UpdateConfig("obama", learning_rate=1e-12, epochs=1))
    assert again.status == "nothing new" and "not kept" in again.message


def test_too_few_new_posts_wait(tiny_model: Path, tmp_path: Path) -> None:
    from tweetlm.update import UpdateConfig, update

    csv_path = write_csv(tmp_path / "obama.csv", POSTS[:120])
    train_parent(tiny_model, csv_path)
    write_csv(csv_path, POSTS[:124])
    result = update(UpdateConfig("obama", min_new=10))
    assert result.status == "waiting" and result.new_posts == 4
    assert "waiting for 10" in result.message


def test_plan_splits_replays_older_posts_and_holds_out_new_ones() -> None:
    from tweetlm.runs import RunPosts
    from tweetlm.update import plan_splits

    parent = RunPosts({"a": [f"old {i}" for i in range(50)]}, {"a": ["old val"]})
    new = {"a": [f"new {i}" for i in range(20)]}
    splits, held = plan_splits(parent, new, replay=1.5, seed=1)
    assert len(held["a"]) == 2 and all(t.startswith("new") for t in held["a"])
    train = splits["a"].train
    assert sum(t.startswith("new") for t in train) == 18 and sum(t.startswith("old") for t in train) == 27
    assert splits["a"].validation == [*held["a"], "old val"]
    assert not set(held["a"]) & set(train)


def test_library_error_type() -> None:
    from tweetlm.update import UpdateConfig, update

    with pytest.raises(NoDataError, match="train it first"):
        update(UpdateConfig("nobody"))
