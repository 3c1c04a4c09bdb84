"""The chunked causal-LM loss equals the plain one (`model(..., labels=...)`): loss and gradients, in fp32
and bf16, on Llama (tied head) and GPT-2, padded and packed batches, with LoRA; and a run trains the same
with and without it."""

from __future__ import annotations

import resource
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import add_account, sample_posts, tiny_config
from tweetlm import trainer
from tweetlm.dataset import collate, encode_posts, pack
from tweetlm.loss import BUFFERS, RowsEmbedding, causal_lm_loss
from tweetlm.models import load_model, load_tokenizer
from tweetlm.runs import RunFolder
from tweetlm.train import prepare_model, train
from tweetlm.trainer import direct_model, hidden_state_loss, split_rows, training_heap


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (|a| when b is zero: a LoRA A matrix's gradient while B is still zero)."""
    diff = (a.float() - b.float()).norm()
    return float(diff / b.float().norm() if b.any() else diff)


def batch(folder: Path, packed: bool) -> dict[str, torch.Tensor]:
    """40 posts, padded (attention mask) or packed into rows of 64 tokens (position ids)."""
    seqs = encode_posts(load_tokenizer(str(folder)), sample_posts(40), 64)
    items = [{"input_ids": s} for s in seqs]
    return pack(items, 0, 64) if packed else collate(items, 0)


def losses_and_grads(model: Any, inputs: dict[str, torch.Tensor], chunked: bool) -> list[torch.Tensor]:
    """The loss, then the gradient of every trainable parameter."""
    model.zero_grad()
    loss = hidden_state_loss(direct_model(model, model), inputs, chunk=32) if chunked else model(**inputs).loss
    loss.backward()
    return [loss.detach(), *(p.grad.clone() for p in model.parameters() if p.requires_grad)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("family", "packed", "lora"), [("llama", False, 0), ("llama", True, 4), ("gpt2", False, 0)])
def test_chunked_loss_and_gradients_equal_the_plain_loss(
    tiny_model: Path, tiny_gpt2: Path, family: str, packed: bool, lora: int, dtype: torch.dtype
) -> None:
    folder = tiny_model if family == "llama" else tiny_gpt2
    torch.manual_seed(0)
    model = prepare_model(load_model(str(folder), dtype=dtype), tiny_config(folder, lora_rank=lora)).eval()
    inputs = batch(folder, packed)
    assert (inputs["labels"] != -100).sum() > 5 * 32  # several chunks of 32 tokens
    plain, chunked = losses_and_grads(model, inputs, False), losses_and_grads(model, inputs, True)
    assert len(plain) > 2 and [g.dtype for g in chunked] == [g.dtype for g in plain]
    if not lora:  # the head (tied to the embeddings) trains first, then the lowest block's weights
        assert plain[1].shape[0] == model.config.vocab_size
    for ours, theirs in zip(chunked, plain, strict=True):  # the loss, the head, each block, ...
        assert relative(ours, theirs) < 1e-3


def test_without_grad_the_chunked_loss_is_the_evaluation_loss(tiny_model: Path) -> None:
    model = load_model(str(tiny_model)).eval()
    inputs = batch(tiny_model, packed=False)
    with torch.no_grad():
        plain = model(**inputs).loss
        chunked = hidden_state_loss(direct_model(model, model), inputs, num_items=7, chunk=32)
    assert relative(chunked * 7 / (inputs["labels"][:, 1:] != -100).sum(), plain) < 1e-5


def test_the_loss_writes_into_kept_buffers_instead_of_new_memory() -> None:
    """Every call used to allocate its chunks' logits and the head's fp32 gradient afresh: with glibc giving
    blocks of 1 MB and more their own maps (as in training), that was 32,500 page faults a call here."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 16384, bias=False).to(torch.bfloat16)  # a chunk's fp32 logits: 8 MB
    hidden = torch.randn(2, 200, 64, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 16384, (2, 200))

    def grads(rows: int) -> list[torch.Tensor]:
        head.zero_grad(set_to_none=True)
        hidden.grad = None
        causal_lm_loss(hidden[:, :rows], head, labels[:, :rows]).backward()
        return [hidden.grad.clone(), head.weight.grad.clone()]

    with training_heap():
        grads(200)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        reused = grads(200), grads(30)  # all chunks; one chunk of fewer rows than the buffer holds
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        assert set(BUFFERS.tensors) == {"logits", "low", "logp", "grad_logits"}
    assert not BUFFERS.tensors  # released after training
    assert faults < 2 * 2000  # the bf16 gradients handed back (0.5k pages a call) and small tensors
    whole = grads(200)  # with new buffers
    BUFFERS.release()
    fresh = whole, grads(30)  # with buffers of 30 rows: nothing left over from the longer call
    for ours, theirs in zip(reused, fresh, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_compiled_or_distributed_model_is_called_whole() -> None:
    model = torch.nn.Linear(2, 2)
    assert direct_model(model, torch.nn.Linear(2, 2)) is None  # what unwrapping a DDP or compiled model gives
    assert direct_model(model, model) is None  # no causal LM (no output head)


def test_a_run_trains_the_same_with_and_without_the_chunked_loss(tiny_model: Path) -> None:
    add_account("obama", sample_posts(200))
    runs = [train(tiny_config(tiny_model, max_steps=3, chunked_loss=on)).metrics for on in (True, False)]
    first, second = ([h["eval_loss"] for h in m.evaluations()] for m in runs)
    assert first == pytest.approx(second, rel=1e-4) and len(first) == 2


def test_split_rows_bounds_the_padded_tokens_of_each_part() -> None:
    batch = {"input_ids": torch.zeros(5, 40, dtype=torch.long), "labels": torch.zeros(5, 40), "scale": torch.ones(1)}
    parts = split_rows(batch, 100)  # at most 2 rows of 40 tokens a part
    assert [p["input_ids"].shape[0] for p in parts] == [2, 2, 1]
    assert [p["input_ids"].shape[0] for p in split_rows({"input_ids": torch.zeros(16, 24)}, 256)] == [8, 8]
    assert all(p["scale"] is batch["scale"] for p in parts)  # not a row per input row: shared
    assert torch.equal(torch.cat([p["labels"] for p in parts]), batch["labels"])
    assert split_rows(batch, 200) == [batch] and split_rows(batch, 0) == [batch]
    assert [p["input_ids"].shape[0] for p in split_rows(batch, 10)] == [1] * 5  # a row wider than the bound


@pytest.mark.parametrize("chunked", [True, False])
def test_micro_batches_train_the_same_steps_as_whole_batches(
    tiny_model: Path, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_account("obama", sample_posts(200))
    split = trainer.split_rows
    sizes: list[int] = []
    monkeypatch.setattr(
        trainer, "split_rows", lambda inputs, tokens: sizes.append(len(parts := split(inputs, tokens))) or parts
    )
    runs = [
        train(tiny_config(tiny_model, max_steps=3, chunked_loss=chunked, micro_batch_tokens=tokens)).metrics
        for tokens in (0, 64)  # 64 tokens: batches of 16 posts go in parts of a few rows
    ]
    whole, parts = ([h["eval_loss"] for h in m.evaluations()] for m in runs)
    assert parts == pytest.approx(whole, rel=1e-4) and len(whole) == 2 and whole[0] != whole[1]
    assert sizes[:3] == [1, 1, 1] and all(n > 1 for n in sizes[3:]) and len(sizes) == 6  # really split


def test_without_a_micro_batch_size_a_cpu_run_splits_at_512_tokens_and_records_it(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_account("obama", sample_posts(60))
    split = trainer.split_rows
    used: list[int] = []
    monkeypatch.setattr(trainer, "split_rows", lambda inputs, bound: used.append(bound) or split(inputs, bound))
    config = tiny_config(tiny_model, max_steps=2)
    assert config.micro_batch_tokens is None
    result = train(config)
    assert used and set(used) == {512}
    assert RunFolder(result.run_dir).read().config["micro_batch_tokens"] == 512


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_tied_embedding_sends_its_rows_and_the_weight_gets_the_same_dense_gradient(
    tiny_model: Path, tiny_gpt2: Path, dtype: torch.dtype
) -> None:
    from tweetlm.train import sparse_tied_embedding

    inputs = batch(tiny_model, packed=False)
    exact = losses_and_grads(load_model(str(tiny_model), dtype=torch.float32).eval(), inputs, chunked=True)
    model = load_model(str(tiny_model), dtype=dtype).eval()
    dense = losses_and_grads(model, inputs, chunked=True)
    assert sparse_tied_embedding(model) and isinstance(model.get_input_embeddings(), RowsEmbedding)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        rows = losses_and_grads(model, inputs, chunked=True)
    assert not [w for w in said if "parse" in str(w.message)]  # nothing printed to a user's terminal
    assert model.get_input_embeddings().weight.grad.layout == torch.strided  # what AdamW and clipping take
    for ours, theirs, truth in zip(rows, dense, exact, strict=True):
        if dtype == torch.float32:
            assert relative(ours, theirs) < 1e-6
        else:  # each row summed in fp32 and rounded once: no further from the fp32 gradient than dense
            assert relative(ours, truth) <= 1.05 * relative(theirs, truth) + 1e-6
    untied = load_model(str(tiny_model), dtype=dtype)
    untied.get_output_embeddings().weight = torch.nn.Parameter(untied.get_input_embeddings().weight.clone())
    frozen = load_model(str(tiny_gpt2), dtype=dtype).requires_grad_(False)
    assert not sparse_tied_embedding(untied) and not sparse_tied_embedding(frozen)
