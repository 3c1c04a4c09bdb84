"""Export and push on tiny trained runs: GGUF files read back by transformers (and llama.cpp where
llama-cpp-python is installed), clean HF folders, and uploads to a local Hub on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import add_account, sample_posts, tiny_config
from tests.hub_server import HubServer
from tweetlm.errors import InputError, ModelError

TWEETLM = str(Path(sys.executable).with_name("tweetlm"))
# How far the next-token distributions read back from the GGUF may be from the run's (mean KL, nats
# a token), and the share of positions whose most likely token must agree.
TOLERANCE = {"f16": (1e-4, 0.99), "bf16": (2e-3, 0.97), "q8_0": (1e-2, 0.95)}


def _train_tiny(base: Path, home: Path, out: Path) -> Path:
    from tweetlm.train import train

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWEETLM_HOME", str(home))
        add_account("obama", sample_posts(120))
        return train(tiny_config(base, max_steps=3), output=out).run_dir  # type: ignore[return-value]


@pytest.fixture(scope="module")
def llama_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llama_run")
    return _train_tiny(tiny_model, root / "home", root / "obama-llama")


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2 with GPT-2's context of 1024: transformers reads a GPT-2 GGUF's context length as `n_ctx`
    and leaves `n_positions` at 1024, so it cannot load one with another (llama.cpp can)."""
    from tests.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("gpt2_run")
    base = build_tiny_model(root / "base", sample_posts(400), family="gpt2", context=1024)
    return _train_tiny(base, root / "home", root / "obama-gpt2")


def _posts(run: Path, part: str = "validation") -> list[str]:
    return json.loads((run / "posts.json").read_text())[part]["obama"]


@pytest.mark.parametrize("gguf_type", ["f16", "bf16", "q8_0"])
def test_gguf_round_trips_through_transformers(llama_run: Path, tmp_path: Path, gguf_type: str) -> None:
    from tweetlm.export import compare_logits, export_gguf

    dest = export_gguf(llama_run, tmp_path / "gguf", gguf_type)
    assert sorted(p.name for p in dest.iterdir()) == ["Modelfile", "README.md", "model.gguf"]
    diff = compare_logits(llama_run, dest / "model.gguf", _posts(llama_run)[:6])
    max_kl, min_agree = TOLERANCE[gguf_type]
    assert diff["mean_kl"] < max_kl, diff
    assert diff["argmax_agreement"] >= min_agree, diff


def test_the_qk_permutation_is_what_readers_expect(
    llama_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check can fail: with attention made sharp (a random tiny model's is nearly uniform, so the
    order of q/k rows hardly shows), a GGUF written without llama.cpp's permutation reads back wrong."""
    from safetensors.torch import load_file, save_file

    from tweetlm import export

    run = shutil.copytree(llama_run, tmp_path / "sharp")
    weights = load_file(run / "model.safetensors")
    for name in weights:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            weights[name] = weights[name] * 30
    save_file(weights, run / "model.safetensors", metadata={"format": "pt"})
    texts = _posts(run)[:6]
    good = export.compare_logits(run, export.export_gguf(run, tmp_path / "good", "f16") / "model.gguf", texts)
    monkeypatch.setattr(export, "permute_qk", lambda w, n_head, n_head_kv=None: w)
    bad = export.compare_logits(run, export.export_gguf(run, tmp_path / "bad", "f16") / "model.gguf", texts)
    assert good["max_rel_std"] < 0.1, good  # sharper logits: f16's rounding shows more
    assert bad["max_rel_std"] > 1.0, bad


def test_gpt2_round_trips_too(gpt2_run: Path, tmp_path: Path) -> None:
    from tweetlm.export import compare_logits, export_gguf

    dest = export_gguf(gpt2_run, tmp_path / "gguf", "f16")
    diff = compare_logits(gpt2_run, dest / "model.gguf", _posts(gpt2_run)[:6])
    assert diff["mean_kl"] < TOLERANCE["f16"][0], diff


def test_gguf_carries_the_tokenizer_separator_and_template(llama_run: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from tweetlm.export import export_gguf

    dest = export_gguf(llama_run, tmp_path / "gguf", "q8_0")
    run_tok = AutoTokenizer.from_pretrained(llama_run)
    fields = GGUFReader(dest / "model.gguf").fields
    assert fields["tokenizer.ggml.eos_token_id"].contents() == run_tok.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "eos_token" in fields["tokenizer.chat_template"].contents()
    gguf_tok = AutoTokenizer.from_pretrained(dest, gguf_file="model.gguf")
    assert gguf_tok.eos_token == run_tok.eos_token
    for text in _posts(llama_run)[:20]:
        assert (
            gguf_tok(text, add_special_tokens=False)["input_ids"]
            == run_tok(text, add_special_tokens=False)["input_ids"]
        )
    rendered = gguf_tok.apply_chat_template([{"role": "user", "content": "I don't like"}], tokenize=False)
    assert rendered == f"{run_tok.eos_token}I don't like"
    modelfile = (dest / "Modelfile").read_text()
    assert "FROM ./model.gguf\n" in modelfile
    assert f'TEMPLATE """{run_tok.eos_token}{{{{ .Prompt }}}}"""' in modelfile
    assert f'PARAMETER stop "{run_tok.eos_token}"' in modelfile
    assert "PARAMETER top_p 0.95" in modelfile and "PARAMETER temperature 1" in modelfile
    card = (dest / "README.md").read_text()
    assert "`model.gguf`: for llama.cpp and Ollama (Q8_0)" in card
    assert "not included" in card


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (it builds llama.cpp from source: pip install 'tweetlm[llamacpp]')",
)
def test_llama_cpp_generates_from_the_gguf(llama_run: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from llama_cpp import Llama

    from tweetlm.dataset import encode_posts
    from tweetlm.export import export_gguf
    from tweetlm.models import load_model, load_tokenizer

    dest = export_gguf(llama_run, tmp_path / "gguf", "f16")
    llm = Llama(model_path=str(dest / "model.gguf"), n_ctx=256, logits_all=True, verbose=False)
    tokenizer = load_tokenizer(str(llama_run))
    model = load_model(str(llama_run)).eval()
    for ids in encode_posts(tokenizer, _posts(llama_run)[:4], 128):
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
        with torch.inference_mode():
            ours = model(torch.tensor([ids])).logits[0].numpy()
        assert np.abs(theirs - ours).max() < 0.01 * ours.std()
    text = _posts(llama_run)[0]
    assert (
        llm.tokenize(text.encode(), add_bos=False, special=False)
        == tokenizer(text, add_special_tokens=False)["input_ids"]
    )
    # EOS barred: the tiny model may sample it first (a completion of no tokens), which says nothing about the file
    barred = {tokenizer.eos_token_id: -1000.0}
    out = llm.create_completion(f"{tokenizer.eos_token}The", max_tokens=12, logit_bias=barred, seed=1)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 12


def test_an_unknown_architecture_names_the_supported_ones(llama_run: Path, tmp_path: Path) -> None:
    from tweetlm.export import export_gguf

    run = shutil.copytree(llama_run, tmp_path / "neox")
    config = json.loads((run / "config.json").read_text())
    config.update(model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"GPTNeoXForCausalLM.*LlamaForCausalLM \(llama\), GPT2LMHeadModel \(gpt2\)"):
        export_gguf(run, tmp_path / "out", "f16")
    assert not (tmp_path / "out").exists()


def test_hf_export_is_clean_and_half_the_size_in_bf16(llama_run: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    from tweetlm.export import export_hf

    (llama_run / "eval.json").write_text("{}")
    try:
        dest = export_hf(llama_run, tmp_path / "hf", dtype="bf16")
    finally:
        (llama_run / "eval.json").unlink()
    names = {p.name for p in dest.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md", "run.json"} <= names
    assert not names & {"posts.json", "eval.json", "samples.json", "checkpoints"}
    size = (dest / "model.safetensors").stat().st_size
    assert size < 0.6 * (llama_run / "model.safetensors").stat().st_size
    card = (dest / "README.md").read_text()
    assert "the weights in bf16" in card and "not included" in card
    run = json.loads((dest / "run.json").read_text())
    assert "examples" not in run["data"]["datasets"]["obama"]["report"]
    assert run["base_model"]["path"] == "" and not Path(run["base_model"]["name"]).is_absolute()
    out = pipeline("text-generation", model=str(dest))("<|endoftext|>The", max_new_tokens=5, do_sample=False)
    assert isinstance(out[0]["generated_text"], str)

    with_posts = export_hf(llama_run, tmp_path / "hf-posts", include_posts=True)
    assert (with_posts / "posts.json").read_text() == (llama_run / "posts.json").read_text()
    assert (
        "`posts.json`: the 119 curated posts it was trained and validated on" in (with_posts / "README.md").read_text()
    )


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TWEETLM, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=300)


def test_cli_export_bad_type_and_format_leave_nothing(llama_run: Path, tweetlm_home: Path) -> None:
    for args, message in (
        (["--type", "q4_k"], "--type 'q4_k': choose one of f16, bf16, q8_0"),
        (["--format", "onnx"], "--format 'onnx': choose gguf or hf"),
        (["--format", "hf", "--dtype", "int8"], "--dtype 'int8': choose one of bf16, fp16, fp32"),
    ):
        result = _cli("export", str(llama_run), *args)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tweetlm_home / "exports").exists()


def test_cli_export_gguf_verifies_with_transformers(llama_run: Path, tmp_path: Path) -> None:
    result = _cli("export", str(llama_run), "--type", "f16", "--verify", "-o", str(tmp_path / "g"))
    assert result.returncode == 0, result.stderr
    assert "transformers reads it back" in " ".join(result.stdout.split())
    assert (tmp_path / "g" / "model.gguf").is_file()


TOKEN = "hf_testtoken_0123456789abcdef"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[HubServer, dict[str, str]]]:
    with HubServer(TOKEN) as server:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_XET": "1",  # the local server speaks the LFS protocol
            "HF_HOME": str(tmp_path / "hf_home"),  # no login of this machine's user
        }
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        yield server, env


def test_push_uploads_the_clean_folder_and_never_the_posts(llama_run: Path, hub: tuple[HubServer, dict]) -> None:
    server, env = hub
    result = _cli("push", str(llama_run), "--repo", "alice/obama-tweetlm", "--private", "--gguf", env=env)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    repo = server.state.repos["alice/obama-tweetlm"]
    assert repo["private"] is True
    files = repo["files"]
    assert {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.gguf",
        "Modelfile",
    } <= set(files)
    assert "posts.json" not in files
    assert files["model.safetensors"] == (llama_run / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert 'pipeline("text-generation", model="alice/obama-tweetlm")' in card
    assert "not included" in card
    posts = _posts(llama_run, "train")
    assert not any(p.encode() in files["run.json"] for p in posts)
    assert all(
        auth == f"Bearer {TOKEN}" for method, path, auth in server.state.requests if path.startswith("/api/repos")
    )

    again = _cli("push", str(llama_run), "--repo", "alice/obama-tweetlm", "--include-posts", env=env)
    assert again.returncode == 0, again.stderr
    assert files["posts.json"] == (llama_run / "posts.json").read_bytes()
    assert "`posts.json`: the 119 curated posts" in files["README.md"].decode()


def test_push_without_a_token_or_with_a_bad_repo_fails_in_one_line(
    llama_run: Path, hub: tuple[HubServer, dict]
) -> None:
    server, env = hub
    no_token = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    result = _cli("push", str(llama_run), "--repo", "alice/x", env=no_token)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: push needs a Hugging Face token: set HF_TOKEN, or log in once with `hf auth login`"
    ]
    for bad in ("obama", "a/b/c", "alice/-x", "alice/a--b", "/x"):
        result = _cli("push", str(llama_run), "--repo", bad, env=env)
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: --repo '{bad}': give USER/NAME")
    wrong = _cli("push", str(llama_run), "--repo", "alice/x", env={**env, "HF_TOKEN": "hf_wrong"})
    assert wrong.returncode == 1
    assert "error: the upload to alice/x failed" in wrong.stderr and "hf_wrong" not in wrong.stderr
    assert server.state.repos == {}


def test_repo_names() -> None:
    from tweetlm.hub import check_repo

    assert check_repo("alice/obama.v2_x-1") == "alice/obama.v2_x-1"
    with pytest.raises(InputError):
        check_repo("alice/")


@pytest.mark.integration
def test_embedded_model_gguf_round_trip(tmp_path: Path, tweetlm_home: Path) -> None:
    """The real SmolLM2-135M after one training step: q8_0 and f16 read back by transformers."""
    from tests.conftest import add_account
    from tweetlm.export import compare_logits, export_gguf
    from tweetlm.train import TrainConfig, train

    add_account("obama", sample_posts(80))
    # The step the tolerances were measured on (docs/export.md): HuggingTweets' rate, no time budget.
    config = TrainConfig(accounts=("obama",), max_steps=1, report_to="none", batch_size=8, learning_rate=1.372e-4)
    run = train(dataclasses.replace(config, max_minutes=None)).run_dir
    assert run is not None
    texts = _posts(run)[:4]
    for gguf_type in ("f16", "q8_0"):
        dest = export_gguf(run, tmp_path / gguf_type, gguf_type)
        diff = compare_logits(run, dest / "model.gguf", texts)
        max_kl, min_agree = TOLERANCE[gguf_type]
        assert diff["mean_kl"] < max_kl, (gguf_type, diff)
        assert diff["argmax_agreement"] >= min_agree, (gguf_type, diff)


@pytest.mark.parametrize(("save_dtype", "expected"), [("auto", "bf16"), ("fp32", "fp32")])
def test_a_bf16_run_saves_in_bf16_unless_asked(tiny_model: Path, save_dtype: str, expected: str) -> None:
    from tweetlm.card import safetensors_dtype
    from tweetlm.models import bf16_supported
    from tweetlm.train import train

    if not bf16_supported():
        pytest.skip("this machine has no bf16 support")
    add_account("obama", sample_posts(60))
    run = train(tiny_config(tiny_model, max_steps=1, precision="bf16", save_dtype=save_dtype)).run_dir
    assert safetensors_dtype(run / "model.safetensors") == expected
    assert f"the weights in {expected}," in (run / "README.md").read_text()
