"""The fast training options on the tiny model: token-budget batches, packing, bf16 weights with fp32
master weights, frozen embeddings and layers, LoRA. Each one trains for real and keeps the run folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm.dataset import EpochBatches, collate, encode_posts, pack
from tweetlm.errors import InputError
from tweetlm.events import Event, Started, Step
from tweetlm.models import bf16_supported
from tweetlm.runs import RUN_FILE, RunFolder
from tweetlm.train import TrainConfig, freeze_lower_layers, train, train_trial

needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="no bf16 support on this machine")


def test_token_batches_are_a_fixed_number_of_equal_token_counts() -> None:
    lengths = [5 + (i * 7) % 40 for i in range(300)]
    sampler = EpochBatches(lengths, [0] * 300, [300], batch_size=8, seed=1, batch_tokens=400)
    assert len(sampler) == math.ceil(sum(lengths) / 400)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert len(batches) == len(sampler)  # the Trainer plans every epoch with len()
        assert sorted(i for b in batches for i in b) == list(range(300))
        tokens = [sum(lengths[i] for i in b) for b in batches]
        assert max(tokens) - min(tokens) <= 2 * max(lengths)
        # grouped by length: a batch spans a few tokens, except where two sorted chunks meet
        spreads = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
        assert spreads[len(spreads) // 2] <= 4
    assert sampler.batches(0) != sampler.batches(1)


def test_token_batches_keep_their_count_when_accounts_are_upsampled() -> None:
    lengths = [10 + i % 30 for i in range(130)]
    sampler = EpochBatches(lengths, [0] * 100 + [1] * 30, [100, 70], batch_size=8, seed=0, batch_tokens=300)
    counts = {len(sampler.batches(epoch)) for epoch in range(5)}
    assert counts == {len(sampler)}
    drawn = [i for b in sampler.batches(2) for i in b]
    assert len(drawn) == 170 and sum(i >= 100 for i in drawn) == 70


def test_packing_keeps_attention_and_positions_within_each_post(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    seqs = [s[: 10 + 3 * i] for i, s in enumerate(encode_posts(tokenizer, sample_posts(12), 48))]
    packed = pack([{"input_ids": s} for s in seqs], tokenizer.eos_token_id, 64)
    assert packed["input_ids"].shape[1] <= 64 and packed["input_ids"].shape[0] < len(seqs)
    assert "attention_mask" not in packed
    targets = int((packed["labels"] != -100).sum())
    assert targets == sum(len(s) - 1 for s in seqs)  # every token but a post's first is a target

    padded = collate([{"input_ids": s} for s in seqs], tokenizer.eos_token_id)
    for attention in ("eager", "sdpa"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention).eval()
        with torch.no_grad():
            # use_cache=False, as in training: with a cache transformers does not look for packed rows
            row_logits = model(**packed, use_cache=False).logits
            alone = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        for index, seq in enumerate(seqs):
            row, start = _find(packed, seq)
            got = row_logits[row, start : start + len(seq)]
            assert torch.allclose(got, alone[index, : len(seq)], atol=1e-4), (attention, index)


def _find(packed: dict[str, object], seq: list[int]) -> tuple[int, int]:
    ids = packed["input_ids"].tolist()  # type: ignore[attr-defined]
    positions = packed["position_ids"].tolist()  # type: ignore[attr-defined]
    for r, row in enumerate(ids):
        for start in range(len(row) - len(seq) + 1):
            if positions[r][start] == 0 and row[start : start + len(seq)] == seq:
                return r, start
    raise AssertionError("post not found in the packed rows")


def test_master_adamw_keeps_updates_that_bf16_rounds_away() -> None:
    import torch

    from tweetlm.optim import MasterAdamW

    weight = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    naive = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    optimizer = MasterAdamW([weight], lr=1e-3, fused=True)
    plain = torch.optim.AdamW([naive], lr=1e-3)
    for _ in range(10):
        weight.grad = torch.ones_like(weight)
        naive.grad = torch.ones_like(naive)
        optimizer.step()
        plain.step()
    # Ten steps of ~1e-3 each: bf16 steps near 1.0 are 2**-8 apart, so each lone update rounds away...
    assert torch.all(naive == 1.0)
    # ...while the fp32 master accumulates them and the model sees the rounded sum.
    master = optimizer.pairs[0][1]
    assert master.dtype == torch.float32 and torch.allclose(master, torch.full_like(master, 0.99), atol=1e-4)
    assert torch.equal(weight.data, master.to(torch.bfloat16))

    resumed_weight = torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))
    resumed = MasterAdamW([resumed_weight], lr=1e-3, fused=True)
    resumed.load_state_dict(optimizer.state_dict())
    assert torch.equal(resumed.pairs[0][1], master) and torch.equal(resumed_weight.data, weight.data)


@needs_bf16
def test_bf16_run_resumes_from_its_master_weights_and_saves_in_bf16(tiny_model: Path) -> None:
    import os
    import signal

    from safetensors import safe_open

    from tweetlm.train import TrainingInterrupted

    add_account("obama", sample_posts(200))

    def press_ctrl_c(event: Event) -> None:
        if isinstance(event, Step) and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    config = tiny_config(tiny_model, precision="bf16", batch_tokens=1024)
    with pytest.raises(TrainingInterrupted):
        train(config, on_event=press_ctrl_c)
    events: list[Event] = []
    result = train(config, resume=True, on_event=events.append)  # loads the optimizer state, masters included
    assert next(e for e in events if isinstance(e, Started)).step == 4
    assert result.metrics.eval_loss_after < result.metrics.eval_loss_before - 0.3
    meta = RunFolder(result.run_dir).read()
    assert meta.precision == "bf16" and meta.config["batch_tokens"] == 1024
    with safe_open(str(result.run_dir / "model.safetensors"), "pt") as weights:
        # Trained in bf16, saved in bf16 (save_dtype="auto"; --save-dtype fp32 keeps fp32)
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}  # noqa: SIM118 (safe_open is not iterable)


def test_token_batches_and_packing_train(tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    events: list[Event] = []
    config = tiny_config(tiny_model, batch_tokens=1024, packing=True, epochs=1)
    metrics = train_trial(config, on_event=events.append)
    start = next(e for e in events if isinstance(e, Started))
    assert start.steps_per_epoch == math.ceil(start.tokens_per_epoch / 1024)  # type: ignore[operator]
    assert metrics.steps == start.steps_per_epoch
    assert metrics.eval_loss_after < metrics.eval_loss_before - 0.3


def test_frozen_layers_stop_the_backward_pass_but_train_a_tied_head(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 5, 9, 13, 0]])
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainable = freeze_lower_layers(model, 1)
    model(input_ids=ids, labels=ids).loss.backward()
    lower, upper = model.model.layers
    assert all(p.grad is None for p in lower.parameters())
    assert all(p.grad is not None for p in upper.parameters())
    assert model.get_input_embeddings().weight.grad is not None  # through the tied head only
    assert trainable == sum(p.numel() for p in upper.parameters()) + model.get_input_embeddings().weight.numel() + sum(
        p.numel() for p in model.model.norm.parameters()
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    freeze_lower_layers(model, 0, embeddings=True)
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.get_input_embeddings().weight.grad is None
    assert all(p.grad is not None for p in model.model.layers[0].parameters())


def test_lora_trains_adapters_and_saves_a_merged_plain_model(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    add_account("obama", sample_posts(200))
    config = tiny_config(tiny_model, lora_rank=4, lora_learning_rate=3e-2, freeze_layers=1, epochs=1)
    result = train(config)
    run = result.run_dir
    assert (run / RUN_FILE).is_file() and not (run / "adapter_config.json").exists()
    assert result.metrics.trainable_parameters < 5000  # adapters on the upper layer only
    assert result.metrics.eval_loss_after < result.metrics.eval_loss_before
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = AutoModelForCausalLM.from_pretrained(run)
    assert type(tuned) is type(base)
    same = {n for n, p in tuned.state_dict().items() if torch.equal(p, base.state_dict()[n])}
    assert "model.layers.1.self_attn.q_proj.weight" not in same  # the adapters were merged in
    assert "model.layers.0.self_attn.q_proj.weight" in same and "model.embed_tokens.weight" in same


def test_bad_speed_options_name_the_field() -> None:
    cases = {
        "lora_rank": {"lora_rank": -1},
        "batch_tokens": {"batch_tokens": 10},
        "attention": {"attention": "flash"},
        "threads": {"threads": -2},
        "precision": {"precision": "fp16"},
        "freeze_embeddings": {"lora_rank": 8, "freeze_embeddings": True},
        "evals_per_epoch": {"evals_per_epoch": 0},
        "early_stop_patience": {"early_stop_patience": 0},
    }
    for name, values in cases.items():
        with pytest.raises(InputError, match=name):
            TrainConfig(accounts=("a",), **values)  # type: ignore[arg-type]


# A value other than the default for every TrainConfig option, as given on the command line.
NOT_DEFAULTS: dict[str, tuple[list[str], object]] = {
    "base_model": (["--base-model", "gpt2"], "gpt2"),
    "epochs": (["--epochs", "2.5"], 2.5),
    "learning_rate": (["--lr", "0.001"], 0.001),
    "scheduler": (["--scheduler", "linear"], "linear"),
    "warmup": (["--warmup", "0.1"], 0.1),
    "grad_accum": (["--grad-accum", "2"], 2),
    "batch_size": (["-b", "8"], 8),
    "max_length": (["--max-length", "64"], 64),
    "weight_decay": (["--weight-decay", "0.01"], 0.01),
    "precision": (["--precision", "fp32"], "fp32"),
    "group_by_length": (["--no-group-by-length"], False),
    "freeze_layers": (["--freeze-layers", "1"], 1),
    "seed": (["--seed", "7"], 7),
    "max_steps": (["--max-steps", "5"], 5),
    "max_minutes": (["--max-minutes", "1.5"], 1.5),
    "report_to": (["--report-to", "none"], "none"),
    "keep_checkpoints": (["--keep-checkpoints"], True),
    "batch_tokens": (["--batch-tokens", "128"], 128),
    "packing": (["--packing"], True),
    "lora_rank": (["--lora-rank", "4"], 4),
    "lora_alpha": (["--lora-alpha", "16"], 16.0),
    "lora_learning_rate": (["--lora-lr", "0.002"], 0.002),
    "threads": (["--threads", "1"], 1),
    "compile": (["--compile"], True),
    "attention": (["--attention", "sdpa"], "sdpa"),
    "freeze_embeddings": (["--freeze-embeddings"], True),  # not with LoRA: its own run below
    "train_layers": (["--train-layers", "top:1"], "top:1"),  # not with --freeze-layers: its own run below
    "mix": (["--mix", "obama=1"], "obama=1"),
    "save_dtype": (["--save-dtype", "fp32"], "fp32"),
    "evals_per_epoch": (["--evals-per-epoch", "4"], 4),
    "early_stop": (["--no-early-stop"], False),
    "early_stop_patience": (["--patience", "3"], 3),
    "chunked_loss": (["--no-chunked-loss"], False),
    "fused_blocks": (["--no-fused-blocks"], False),
    "micro_batch_tokens": (["--micro-batch-tokens", "0"], 0),
}


def test_every_train_option_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import tweetlm.train
    from tweetlm.cli import app
    from tweetlm.options import defaults

    assert set(NOT_DEFAULTS) == set(defaults(TrainConfig))  # a new option is checked here too
    seen: list[TrainConfig] = []

    def record(config: TrainConfig, **kw: object) -> None:
        seen.append(config)
        raise SystemExit(0)  # the config is what this test is about, not a training

    monkeypatch.setattr(tweetlm.train, "train", record)
    alone = ({"freeze_embeddings"}, {"train_layers"})
    for names in (set(NOT_DEFAULTS) - set().union(*alone), *alone):
        args = [arg for name in sorted(names) for arg in NOT_DEFAULTS[name][0]]
        result = CliRunner().invoke(app, ["train", "obama", *args])
        assert result.exit_code == 0, result.output
        config = seen[-1]
        for name in names:
            assert getattr(config, name) == NOT_DEFAULTS[name][1] != defaults(TrainConfig)[name], name
        assert config.accounts == ("obama",)


def test_fast_top_p_keeps_exactly_what_transformers_keeps() -> None:
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    from tweetlm.generate import TopP

    torch.manual_seed(0)
    for scale in (0.3, 1.0, 4.0, 12.0):
        scores = torch.randn(6, 5000) * scale
        scores[2] = torch.randn(5000) * 0.01  # nearly flat: the top 256 hold too little mass, the sort is used
        expected = TopPLogitsWarper(0.95)(None, scores.clone())
        got = TopP(0.95)(torch.zeros((6, 1), dtype=torch.long), scores.clone())
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), scale
        assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(got)])


def test_stopping_past_max_chars_changes_no_post(tiny_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tweetlm.generate import PastMaxChars, TopP
    from tweetlm.sampling import cut

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.tensor([[tokenizer.eos_token_id]] * 6)
    settings = {"do_sample": True, "max_new_tokens": 40, "pad_token_id": 0, "eos_token_id": tokenizer.eos_token_id}

    def texts(out: torch.Tensor) -> list[str]:
        return [cut(" ".join(t.split()), 30) for t in tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)]

    for seed in range(2):
        torch.manual_seed(seed)
        plain = model.generate(input_ids=ids, top_p=0.95, top_k=0, **settings)
        torch.manual_seed(seed)
        stop = PastMaxChars(tokenizer, 1, lambda t: " ".join(t.split()), 30)
        fast = model.generate(
            input_ids=ids, top_p=1.0, top_k=0, logits_processor=[TopP(0.95)], stopping_criteria=[stop], **settings
        )
        assert texts(fast) == texts(plain)
        assert fast.shape[1] < plain.shape[1]  # the tiny model rambles: stopping at 30 characters saves steps


def test_master_adamw_in_chunks_matches_one_adamw_step_over_every_parameter() -> None:
    import torch

    from tweetlm.optim import MasterAdamW

    torch.manual_seed(0)
    shapes = [(40, 8), (8,), (100,), (8, 8)]
    low = [torch.nn.Parameter(torch.randn(s).to(torch.bfloat16)) for s in shapes[:3]]
    full = torch.nn.Parameter(torch.randn(shapes[3]))  # an fp32 parameter takes part once per step
    reference = [torch.nn.Parameter(p.detach().float()) for p in low] + [torch.nn.Parameter(full.detach().clone())]
    chunked = MasterAdamW([*low, full], lr=1e-2, weight_decay=0.1, chunk_elements=120)
    plain = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.1)
    # The first parameter alone, then the next two together: their fp32 gradients share one buffer.
    assert [len(chunk) for chunk in chunked.chunks] == [1, 2]
    for step in range(5):
        grads = [torch.randn(s) for s in shapes]
        grads[1] = None if step == 2 else grads[1]  # a parameter without gradient is skipped, as in AdamW
        for param, ref, grad in zip([*low, full], reference, grads, strict=True):
            param.grad = None if grad is None else grad.to(param.dtype)
            ref.grad = None if grad is None else grad.to(param.dtype).float()
        chunked.step()
        plain.step()
        assert full.grad is not None  # the caller's gradients are left as they were
    masters = [m for _, m in chunked.pairs] + [full]
    for master, ref in zip(masters, reference, strict=True):
        assert torch.allclose(master, ref, atol=1e-6)
    assert all(m.grad is None for _, m in chunked.pairs)  # no fp32 gradient outlives the step


def test_master_adamw_clips_inside_its_update_as_clip_grad_norm_does() -> None:
    import torch

    from tweetlm.optim import MasterAdamW

    torch.manual_seed(0)
    shapes = [(40, 8), (100,), (8, 8)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = MasterAdamW(params, lr=1e-2, weight_decay=0.1, fused=True)
    plain = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.1, fused=True)
    for step, max_norm in enumerate([0.5, 100.0, 0.05, 1.0]):  # clipped, not clipped, clipped, ...
        grads = [torch.randn(s) * (step + 1) for s in shapes]
        for param, ref, grad in zip(params, reference, grads, strict=True):
            param.grad, ref.grad = grad.clone(), grad.clone()
        norm = ours.clip(max_norm)
        assert norm.item() == pytest.approx(torch.nn.utils.clip_grad_norm_(reference, max_norm).item(), rel=1e-6)
        assert (ours.grad_scale is not None) == (norm.item() > max_norm)
        ours.step()
        plain.step()
        assert ours.grad_scale is None  # for one step only
        for param, ref in zip(params, reference, strict=True):
            assert torch.allclose(param, ref, atol=1e-6)


def test_recipe_sets_its_settings_unless_the_command_line_says_otherwise(tiny_model: Path) -> None:
    import json

    from typer.testing import CliRunner

    from tests.conftest import add_account, sample_posts
    from tweetlm.cli import app
    from tweetlm.train import RECIPES, TrainConfig

    add_account("obama", sample_posts(60))
    common = ["train", "obama", "-m", str(tiny_model), "--precision", "fp32", "--report-to", "none", "--max-steps", "1"]
    configs = []
    runs = ((["--recipe", "huggingtweets"], "a"), (["--recipe", "huggingtweets", "--epochs", "3"], "b"), ([], "c"))
    for extra, name in runs:
        out = tiny_model.parent / f"recipe-{name}"
        result = CliRunner().invoke(app, [*common, *extra, "--output", str(out)])
        assert result.exit_code == 0, result.output
        configs.append(json.loads((out / RUN_FILE).read_text())["config"])
    huggingtweets = RECIPES["huggingtweets"]
    assert {k: configs[0][k] for k in huggingtweets} == huggingtweets
    assert {k: configs[1][k] for k in huggingtweets} == huggingtweets | {"epochs": 3}
    default = TrainConfig(accounts=("obama",))
    assert {k: configs[2][k] for k in huggingtweets} == {k: getattr(default, k) for k in huggingtweets}
    assert configs[2]["max_minutes"] and not configs[0]["max_minutes"]  # the default has a time budget

    from tests.conftest import tweetlm

    failed = tweetlm("train", "obama", "--recipe", "gpu")  # the real entry point: a one-line error, exit 1
    assert failed.returncode == 1
    assert failed.stderr.strip() == "error: unknown recipe 'gpu': choose one of tweetlm, huggingtweets"


SHAPES_PROBE = """
import sys, torch
from tweetlm.train import bound_kernel_caches
if sys.argv[1] == "bounded":
    bound_kernel_caches()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
w = torch.randn(1536, 576).bfloat16()
w @ w.T
start = rss()
for m in range(16, 257):  # the ever-changing token counts of a run's (micro-)batches
    x, g = torch.randn(m, 576).bfloat16(), torch.randn(m, 1536).bfloat16()
    (x @ w.T) @ w  # an MLP's forward
    g.T @ x  # a weight's gradient
print(rss() - start)
"""


@pytest.mark.skipif(not bf16_supported(), reason="bf16 matmuls need AVX512-BF16 or AMX")
def test_training_bounds_the_kernel_caches_that_grow_with_every_new_batch_shape() -> None:
    import os
    import subprocess
    import sys

    from tweetlm.train import KERNEL_CACHES

    # without the settings that an earlier training in this process left in its environment
    env = {name: value for name, value in os.environ.items() if name not in KERNEL_CACHES}

    def growth(mode: str) -> int:
        command = [sys.executable, "-c", SHAPES_PROBE, mode]
        return int(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout.split()[-1])

    unbounded, bounded = growth("default"), growth("bounded")
    if unbounded < 100 << 20:
        pytest.skip(f"this CPU's matmul kernels keep little per shape ({unbounded >> 20} MB for 241 shapes)")
    assert bounded < 0.7 * unbounded, (bounded >> 20, unbounded >> 20)  # 271 against 610 MB on an AMX Xeon
