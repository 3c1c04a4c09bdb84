"""The fused RMSNorm and SwiGLU MLP compute what the eager modules compute: outputs and every gradient, in
fp32 (to rounding) and bf16 (to bf16's rounding), on Llama-family models only, keeping fewer activations;
and a run trains the same with and without them."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import add_account, sample_posts, tiny_config
from tests.test_loss import batch, relative
from tweetlm import fused
from tweetlm.fused import MLPS, RMS_NORMS, fused_blocks
from tweetlm.models import load_model
from tweetlm.train import prepare_model, train
from tweetlm.trainer import direct_model, hidden_state_loss, split_rows


def loss_and_grads(model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return [loss.detach(), *(p.grad.clone() for p in model.parameters() if p.requires_grad)]


@pytest.mark.parametrize(("dtype", "bound"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("lora", [0, 4])
def test_fused_blocks_give_the_eager_loss_and_gradients(
    tiny_model: Path, dtype: torch.dtype, bound: float, lora: int
) -> None:
    torch.manual_seed(0)
    model = prepare_model(load_model(str(tiny_model), dtype=dtype), tiny_config(tiny_model, lora_rank=lora)).eval()
    inputs = batch(tiny_model, packed=False)
    eager = loss_and_grads(model, inputs)
    with fused_blocks(model) as count:
        ours = loss_and_grads(model, inputs)
    blocks = model.config.num_hidden_layers
    # two norms a block and the final one; an MLP a block, but not where LoRA adapts its down projection
    assert count == 2 * blocks + 1 + (0 if lora else blocks)
    assert len(ours) > 10
    for a, b in zip(ours, eager, strict=True):
        assert relative(a, b) < bound
    assert not fused._FUSED  # the classes' own forwards are back
    assert loss_and_grads(model, inputs)[0] == eager[0]


def test_the_fused_functions_keep_fewer_activations_than_the_eager_modules(tiny_model: Path) -> None:
    model = load_model(str(tiny_model), dtype=torch.bfloat16).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inputs = batch(tiny_model, packed=False)

    def kept_bytes() -> int:
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**inputs)
        return sum(saved.values())

    eager = kept_bytes()
    with fused_blocks(model):
        ours = kept_bytes()
    assert ours < 0.8 * eager


def test_frozen_weights_get_no_gradient_and_the_inputs_still_do() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8)  # frozen
    x = torch.randn(3, 5, 8, requires_grad=True)
    out = fused.RMSNormFunction.apply(x, weight, 1e-6)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    reference = weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # LlamaRMSNorm in fp32
    assert relative(out, reference) < 1e-6
    assert relative(grad, torch.autograd.grad(reference.square().sum(), x)[0]) < 1e-5
    gate = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 5, 16, dtype=torch.float64)  # frozen
    down = torch.randn(8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, d: fused.SwiGLUDownFunction.apply(g, up, d, False), (gate, down))
    assert torch.autograd.gradcheck(
        lambda u: fused.SwiGLUDownFunction.apply(gate.detach(), u, down.detach(), False), (up.requires_grad_(),)
    )


def micro_batch_grads(model: Any, parts: list[dict[str, torch.Tensor]], items: int) -> list[torch.Tensor]:
    """One step's gradients, as the Trainer makes them: a backward pass per part, the parts' losses over the
    whole batch's targets."""
    model.zero_grad()
    for part in parts:
        hidden_state_loss(direct_model(model, model), part, items, chunk=32).backward()
    return [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(
    ("dtype", "bound", "lora"), [(torch.float32, 1e-5, 0), (torch.bfloat16, 1e-2, 0), (torch.float32, 1e-5, 4)]
)
def test_gradients_added_in_place_are_autograds_over_micro_batches(
    tiny_model: Path, dtype: torch.dtype, bound: float, lora: int
) -> None:
    torch.manual_seed(0)
    model = prepare_model(load_model(str(tiny_model), dtype=dtype), tiny_config(tiny_model, lora_rank=lora))
    model.train()
    if not lora:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied: both add to it
    inputs = batch(tiny_model, packed=False)
    parts = split_rows(inputs, inputs["input_ids"].numel() // 3)
    items = int((inputs["labels"][:, 1:] != -100).sum())
    assert len(parts) > 2
    with fused_blocks(model):
        eager = [g.clone() for g in micro_batch_grads(model, parts, items)]
    with fused_blocks(model, grads_in_place=True):
        linear_calls = []
        forward = fused.LinearFunction.forward
        counted = staticmethod(lambda *a: linear_calls.append(1) or forward(*a))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fused.LinearFunction, "forward", counted)
            first = micro_batch_grads(model, parts, items)
        kept = [g.data_ptr() for g in first if g.dim() == 2]  # the matrices' (the norms' go through autograd)
        first = [g.clone() for g in first]
        again = micro_batch_grads(model, parts, items)  # after zero_grad: the kept tensors, overwritten
        assert [g.data_ptr() for g in again if g.dim() == 2] == kept
    # 4 attention maps and gate and up projections a block (the down projection is the MLP's function's);
    # with LoRA, each of the 7 maps' frozen base and its adapter's two
    per_block = 7 * 3 if lora else 6
    assert len(linear_calls) == len(parts) * per_block * model.config.num_hidden_layers
    assert len(eager) == len(first) > 10
    for ours, theirs, second in zip(first, eager, again, strict=True):
        assert relative(ours, theirs) < bound
        assert torch.equal(second, ours)
    assert not fused.GRADS.weights and not fused.GRADS.kept  # nothing of the model's is held after the block


def test_gradients_are_not_added_in_place_without_grad_mode_or_outside_the_block(tiny_model: Path) -> None:
    model = prepare_model(load_model(str(tiny_model)), tiny_config(tiny_model))
    head = model.get_output_embeddings().weight
    with fused_blocks(model, grads_in_place=True):
        assert fused.add_weight_grad(head) == fused.GRADS.add
        with torch.no_grad():
            assert fused.add_weight_grad(head) is None
    assert fused.add_weight_grad(head) is None


def test_only_the_modules_whose_forward_is_llamas_are_fused(tiny_gpt2: Path) -> None:
    import importlib

    llama = importlib.import_module("transformers.models.llama.modeling_llama")
    for family, names in (("RMSNorm", RMS_NORMS), ("MLP", MLPS)):
        reference = inspect.getsource(getattr(llama, f"Llama{family}").forward)
        for name in names:
            prefix = name.removesuffix(family)
            module = importlib.import_module(f"transformers.models.{prefix.lower()}.modeling_{prefix.lower()}")
            assert inspect.getsource(getattr(module, name).forward) == reference, name
    model = load_model(str(tiny_gpt2))
    with fused_blocks(model) as count:
        assert count == 0
    with fused_blocks(load_model(str(tiny_gpt2)), enabled=False) as count:
        assert count == 0


def test_a_run_trains_the_same_with_and_without_fused_blocks(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also after the model went from evaluation back to training, when transformers puts the modules' own
    forwards back (hub kernels): the fused norms run in every training step."""
    add_account("obama", sample_posts(200))
    calls: list[int] = []
    backward = fused.RMSNormFunction.backward
    monkeypatch.setattr(fused.RMSNormFunction, "backward", staticmethod(lambda *a: calls.append(1) or backward(*a)))
    runs = [
        train(tiny_config(tiny_model, max_steps=3, fused_blocks=on, micro_batch_tokens=0)).metrics
        for on in (True, False)
    ]
    first, second = ([h["eval_loss"] for h in m.evaluations()] for m in runs)
    assert first == pytest.approx(second, rel=1e-4) and len(first) == 2 and first[0] != first[1]
    assert len(calls) == 3 * 5  # 3 steps of a model of 2 blocks: 5 norms


def test_an_autocast_run_is_the_same_with_and_without_fused_blocks(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under autocast (`--precision amp`, in training and in evaluation) the linear maps compute in bf16, and
    every fused forward and the gradients in place give way to the modules' own."""
    add_account("obama", sample_posts(200))
    calls: list[str] = []
    for function in (fused.RMSNormFunction, fused.SwiGLUDownFunction, fused.LinearFunction):
        forward = function.forward
        monkeypatch.setattr(
            function, "forward", staticmethod(lambda *a, f=forward, n=function.__name__: calls.append(n) or f(*a))
        )
    add = fused.GRADS.add
    monkeypatch.setattr(fused.GRADS, "add", lambda *a: calls.append("add") or add(*a))
    dtypes: set[torch.dtype] = set()

    def linear_output(module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear):
            dtypes.add(output.dtype)

    with torch.nn.modules.module.register_module_forward_hook(linear_output):
        runs = [
            train(tiny_config(tiny_model, max_steps=2, precision="amp", fused_blocks=on)).metrics
            for on in (True, False)
        ]
    assert calls == [] and dtypes == {torch.bfloat16}
    first, second = ([h["eval_loss"] for h in m.evaluations()] for m in runs)
    assert first == pytest.approx(second, rel=1e-6) and len(first) == 2
    train(tiny_config(tiny_model, max_steps=1, precision="fp32", fused_blocks=True))
    assert {"RMSNormFunction", "SwiGLUDownFunction", "add"} <= set(calls)  # counted where they do run
