"""Training under torchrun: 2 CPU processes (gloo) through the real `tweetlm` entry point, on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import add_account, sample_posts
from tweetlm.dataset import EpochBatches, collate, encode_posts
from tweetlm.runs import RunFolder

PROBE = Path(__file__).parent / "probe"
TORCHRUN = Path(sys.executable).with_name("torchrun")
TWEETLM = Path(sys.executable).with_name("tweetlm")


def torchrun(args: list[str], probe: Path, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROBE), "TWEETLM_PROBE_DIR": str(probe), "COLUMNS": "200"}
    probe.mkdir(exist_ok=True)
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), str(TWEETLM), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def train_args(tiny_model: Path, *extra: str) -> list[str]:
    return [
        "train", "obama", "--base-model", str(tiny_model), "--epochs", "2", "--lr", "3e-3", "--batch-size", "8",
        "--max-length", "64", "--precision", "fp32", "--report-to", "none", *extra,
    ]  # fmt: skip


def recorded(probe: Path, rank: int) -> list[dict[str, object]]:
    return [json.loads(line) for line in (probe / f"batches-{rank}.jsonl").read_text().splitlines()]


def test_shards_are_disjoint_and_cover_the_epoch() -> None:
    lengths = [(i * 7) % 50 + 3 for i in range(203)]
    whole = EpochBatches(lengths, [0] * 203, [203], batch_size=16, seed=1)
    for tokens in (0, 200):
        shards = [EpochBatches(lengths, [0] * 203, [203], 16, 1, batch_tokens=tokens, rank=r, world=2) for r in (0, 1)]
        orders = []
        for epoch in (0, 1):
            for s in shards:
                s.set_epoch(epoch)
            got = [list(s) for s in shards]
            assert len(got[0]) == len(got[1]) == len(shards[0])
            seen = [i for share in got for b in share for i in b]
            assert sorted(seen) == sorted(i for b in whole.batches(epoch) for i in b)  # the same draw, once each
            orders.append(got)
        assert orders[0] != orders[1]  # reshuffled every epoch


@pytest.mark.distributed
def test_two_processes_write_one_run_with_the_whole_validation_loss(tiny_model: Path, tmp_path: Path) -> None:
    add_account("obama", sample_posts(200))
    out = tmp_path / "run"
    done = torchrun([*train_args(tiny_model), "--output", str(out)], tmp_path / "probe")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("base model before training") == 1
    assert done.stdout.count("validation loss: base model") == 1 and done.stdout.count("run folder:") == 1
    runs = [p for p in out.parent.iterdir() if p.name != "probe"]
    assert runs == [out] and not list(out.parent.glob(".*"))

    info = RunFolder(out).read()
    assert info.world_size == 2 and info.effective_batch == 16
    shares = [recorded(tmp_path / "probe", r) for r in (0, 1)]
    for epoch in (0, 1):
        a, b = ([i for e in share if e["epoch"] == epoch for i in e["batch"]] for share in shares)  # type: ignore[union-attr]
        assert a and b and len(a) + len(b) == info.metrics.train_posts
        assert not set(a) & set(b)
    assert info.metrics.steps == len([e for e in shares[0]])

    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    assert pipeline("text-generation", model=str(out))("<|endoftext|>We", max_new_tokens=5)[0]["generated_text"]
    # One process, the same checkpoint, the Trainer's formula: the mean of the length-sorted batches' losses.
    import torch

    from tweetlm.trainer import EVAL_BATCH_POSTS as size

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    seqs = sorted(encode_posts(tokenizer, RunFolder(out).posts().validation["obama"], 64), key=len)
    with torch.no_grad():
        losses = [
            model(**collate([{"input_ids": s} for s in seqs[i : i + size]], tokenizer.pad_token_id)).loss.item()
            for i in range(0, len(seqs), size)
        ]
    assert info.metrics.eval_loss_after == pytest.approx(sum(losses) / len(losses), rel=1e-4)


@pytest.mark.distributed
def test_an_error_is_said_once_and_ends_every_process(tiny_model: Path, tmp_path: Path) -> None:
    add_account("obama", sample_posts(200))
    (tmp_path / "taken").mkdir()
    done = torchrun([*train_args(tiny_model), "--output", str(tmp_path / "taken")], tmp_path / "probe")
    assert done.returncode != 0
    assert done.stderr.count("already exists: choose another output folder") == 1


@pytest.mark.distributed
def test_ctrl_c_on_the_launcher_saves_one_checkpoint_and_resume_finishes(tiny_model: Path, tmp_path: Path) -> None:
    add_account("obama", sample_posts(200))
    probe = tmp_path / "probe"
    probe.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROBE), "TWEETLM_PROBE_DIR": str(probe), "COLUMNS": "200"}
    args = train_args(tiny_model, "--epochs", "3")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(TWEETLM), *args]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as launcher:
        deadline = time.monotonic() + 240
        while not ((probe / "batches-0.jsonl").is_file() and len(recorded(probe, 0)) >= 3):
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        launcher.send_signal(signal.SIGINT)
        stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert stderr.count("--resume") == 1, stderr[-3000:]
    partials = list((Path(os.environ["TWEETLM_HOME"]) / "runs").glob(".*.partial"))
    assert len(partials) == 1
    checkpoints = list((partials[0] / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "model.safetensors").is_file()
    step = int(checkpoints[0].name.split("-")[1])

    done = torchrun([*args, "--resume"], probe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1
    runs = RunFolder.all()
    assert len(runs) == 1 and not partials[0].exists()
    info = runs[0][1]
    assert info.world_size == 2 and info.metrics.steps > step
