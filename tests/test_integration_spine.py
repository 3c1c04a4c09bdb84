"""The spine on the real embedded SmolLM2-135M-Instruct, on ~100 real posts (marked: integration)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import add_account, sample_posts
from tweetlm.train import TrainConfig, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("smol_home")
    with pytest.MonkeyPatch.context() as env:  # module-scoped: the per-test TWEETLM_HOME is not set yet
        env.setenv("TWEETLM_HOME", str(home))
        add_account("obama", sample_posts(110))
        config = TrainConfig(accounts=("obama",), epochs=1, max_steps=6, batch_size=16, report_to="none")
        return train(config, output=home / "run").run_dir


def test_one_short_epoch_beats_the_base_model(smol_run: Path) -> None:
    from tweetlm.runs import RunFolder

    run = RunFolder(smol_run).read()
    assert run.metrics.eval_loss_after < run.metrics.eval_loss_before
    assert run.eos_token == "<|im_end|>"


def test_pipeline_loads_the_run_folder(smol_run: Path) -> None:
    from transformers import pipeline, set_seed

    set_seed(0)
    generator = pipeline("text-generation", model=str(smol_run))
    text = generator("<|im_end|>I don't like", max_new_tokens=20)[0]["generated_text"]
    assert text.startswith("<|im_end|>I don't like") and len(text) > len("<|im_end|>I don't like")


def test_cli_generate_returns_labelled_posts(smol_run: Path) -> None:
    env = {**os.environ, "TWEETLM_HOME": str(smol_run.parent)}
    out = subprocess.run(
        [sys.executable, "-m", "tweetlm", "generate", str(smol_run), "I don't like", "-n", "4", "--seed", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "machine-generated, not written by the person" in out.stdout
    lines = [line for line in out.stdout.splitlines() if "[generated]" in line]
    assert len(lines) == 4 and all("I don't like" in line for line in lines)
