"""The RMSNorm and the SwiGLU MLP of Llama-family blocks (SmolLM2, Llama, Mistral, Qwen2/3) as autograd
functions that keep fewer activations for the backward pass, computing the same numbers.

Eager, a block's RMSNorm keeps its input upcast to fp32 and the normalised input in the model's dtype
(6 bytes an element in bf16); here it keeps its input as it came (2 bytes) and one fp32 scale per token,
and recomputes the rest in the backward pass. Eager, the MLP keeps
gate(x), up(x), silu(gate(x)) and their product (the down projection's input); here it keeps gate(x) and
up(x) and recomputes the other two. For SmolLM2-135M in bf16 a token keeps 44% less (725 -> 407 KiB over
its 30 blocks, the parameters not counted); 30 steps of milahu104 peaked at 3.44 GiB instead of 3.61, 3%
faster (docs/performance.md). Only modules whose forward is known to be the one written here are
replaced, and only in models computing in their own dtype (not under autocast, whose backward passes
would mix dtypes); `fused_blocks` puts the classes' own forwards back on leaving.

With `grads_in_place`, the weight gradients of the model's linear maps (and, through `add_weight_grad`,
of the chunked loss's output head) are added into `weight.grad` by the matmul that makes them, in a
tensor kept from one step to the next: autograd would allocate each afresh and then add it to the one
before (a micro-batch after the first), a pass over every gradient and, for the 1.7 MB ones of
SmolLM2's MLPs and its 56 MB head, fresh memory that the kernel pages in. One process only: the weights'
gradient hooks (DDP's all-reduce) do not run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

# transformers' classes whose forward is LlamaRMSNorm's / LlamaMLP's (checked in tests/test_fused.py).
RMS_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})
SILUS = frozenset({"SiLU", "SiLUActivation"})  # torch's, and transformers' ACT2FN["silu"]


class RMSNormFunction(torch.autograd.Function):
    """weight * (x / sqrt(mean(x^2) + eps)), computed in fp32 and cast back to x's dtype before the
    weight, as LlamaRMSNorm does; keeps x and the fp32 reciprocal root only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        upcast = x.to(torch.float32, copy=True)  # a copy in fp32 too: it is scaled in place
        scale = torch.rsqrt(upcast.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, scale)
        return weight * upcast.mul_(scale).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, scale = ctx.saved_tensors
        normed = x.to(torch.float32, copy=True).mul_(scale)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normed.to(x.dtype)).reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_normed = (grad * weight).float()
            # d(x * s)/dx with s = mean(x^2)^-1/2: s * (g - n * mean(g * n)), n the normalised x.
            mean = (grad_normed * normed).mean(-1, keepdim=True)
            grad_x = grad_normed.sub_(normed.mul_(mean)).mul_(scale).to(x.dtype)
        return grad_x, grad_weight, None


class WeightGrads:
    """The weights whose gradients are added in place (`add_weight_grad`), and the tensor each had last."""

    def __init__(self) -> None:
        # by identity: a tensor's == compares its elements
        self.weights: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> True
        self.kept: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> its last gradient tensor

    def add(self, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        """weight.grad += a @ b, in one matmul that sums in its own precision and rounds once. A weight whose
        gradient was set to None (the Trainer's `zero_grad` after a step) gets the tensor it had before,
        overwritten: whoever keeps a gradient past the next backward pass must copy it."""
        grad = weight.grad
        if grad is not None:
            grad.addmm_(a, b)
            return
        kept = self.kept.get(weight)
        weight.grad = torch.mm(a, b) if kept is None else torch.mm(a, b, out=kept)
        self.kept[weight] = weight.grad


GRADS = WeightGrads()


def add_weight_grad(weight: torch.Tensor) -> Any:
    """`GRADS.add` where `weight`'s gradient is added in place now (under `fused_blocks(grads_in_place=True)`,
    with grad mode on, not under autocast), else None: the caller then returns the gradient to autograd."""
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(weight.device.type) or weight not in GRADS.weights:
        return None
    return GRADS.add


class LinearFunction(torch.autograd.Function):
    """F.linear whose weight gradient goes into `weight.grad` in place (`WeightGrads.add`), the rest as
    autograd's linear computes it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            GRADS.add(weight, rows.t(), x.reshape(-1, x.shape[-1]))
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        return grad_x, None, rows.sum(0) if ctx.needs_input_grad[2] else None


class SwiGLUDownFunction(torch.autograd.Function):
    """down(silu(gate) * up) for a down projection without bias; keeps gate and up only. With `in_place`,
    the down projection's gradient goes into its `.grad` (`WeightGrads.add`)."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, in_place: bool) -> torch.Tensor:
        ctx.save_for_backward(gate, up, down)
        ctx.in_place = in_place
        return F.linear(F.silu(gate).mul_(up), down)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gate, up, down = ctx.saved_tensors
        sigmoid = torch.sigmoid(gate)
        silu = gate * sigmoid
        grad_down = None
        if ctx.needs_input_grad[2]:
            hidden = silu * up
            rows, hidden_rows = grad.reshape(-1, grad.shape[-1]).t(), hidden.reshape(-1, hidden.shape[-1])
            if ctx.in_place:
                GRADS.add(down, rows, hidden_rows)
            else:
                grad_down = rows @ hidden_rows
            del hidden, hidden_rows
        grad_hidden = grad @ down
        grad_up = grad_hidden * silu if ctx.needs_input_grad[1] else None
        del silu
        grad_gate = None
        if ctx.needs_input_grad[0]:
            # d silu(g)/dg = sigmoid(g) * (1 + g * (1 - sigmoid(g)))
            slope = sigmoid.mul_(gate * (1 - sigmoid) + 1)
            grad_gate = grad_hidden.mul_(up).mul_(slope)
        return grad_gate, grad_up, grad_down, None


def _fused_norm(module: Any) -> bool:
    return isinstance(getattr(module, "variance_epsilon", None), float)


def _fused_mlp(module: Any) -> bool:
    down = getattr(module, "down_proj", None)
    return (
        type(getattr(module, "act_fn", None)).__name__ in SILUS
        and type(down) is torch.nn.Linear  # not a LoRA layer, whose adapter this would skip
        and down.bias is None
    )


def _autocast(x: torch.Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


def _rms_norm_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    if _autocast(hidden_states) or not _fused_norm(self):
        return _original(self)(self, hidden_states)  # type: ignore[no-any-return]
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)  # type: ignore[no-any-return]


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _autocast(x) or not _fused_mlp(self):
        return _original(self)(self, x)  # type: ignore[no-any-return]
    down = self.down_proj.weight
    in_place = add_weight_grad(down) is not None
    return SwiGLUDownFunction.apply(self.gate_proj(x), self.up_proj(x), down, in_place)  # type: ignore[no-any-return]


def _linear_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if add_weight_grad(self.weight) is None:
        return _original(self)(self, x)  # type: ignore[no-any-return]
    return LinearFunction.apply(x, self.weight, self.bias)  # type: ignore[no-any-return]


_ORIGINALS: dict[type, Any] = {}  # the classes' own forwards (kept: a call may be under way as they go back)
_FUSED: set[type] = set()  # the classes whose forward is a fused one now
_LOCK = threading.Lock()
_USERS = [0]  # fused_blocks blocks open (runs in threads of one process)


def _original(module: Any) -> Any:
    return next(_ORIGINALS[cls] for cls in type(module).__mro__ if cls in _ORIGINALS)


def _fused_forward(module: torch.nn.Module, grads_in_place: bool) -> Any:
    """The fused forward for `module`'s class, or None where it has none; `module` runs it where it can."""
    name = type(module).__name__
    if name in RMS_NORMS:
        return _rms_norm_forward
    if name in MLPS:
        return _mlp_forward
    if grads_in_place and type(module) is torch.nn.Linear:
        return _linear_forward
    return None


@contextlib.contextmanager
def fused_blocks(model: torch.nn.Module, enabled: bool = True, grads_in_place: bool = False) -> Iterator[int]:
    """Within the block, `model`'s Llama-family RMSNorms and MLPs run fused; yields how many modules.
    With `grads_in_place` (one process; not under autocast), the weight gradients of its linear maps and
    MLPs, and of an output head whose loss asks `add_weight_grad`, are added into `.grad` in place.

    The forward is replaced on the class, not the module: transformers puts a module's own forward back
    whenever the model changes between training and evaluation (hub kernels' `kernelize`), which would drop
    one set on the module. The fused forwards compute what the classes' own compute, so other models of
    those classes in the process (a generation beside a run) are served the same; under autocast, and for
    modules the fused code does not cover (a LoRA-adapted down projection), they call the class's own."""
    classes = {}
    count = 0
    weights = []
    if enabled:
        for module in model.modules():
            forward = _fused_forward(module, grads_in_place)
            if forward is _linear_forward:
                weights.append(module.weight)
            elif forward is not None:
                count += _fused_norm(module) if forward is _rms_norm_forward else _fused_mlp(module)
            if forward is not None:
                classes[type(module)] = forward
        if grads_in_place:
            head = getattr(model, "get_output_embeddings", lambda: None)()
            weights += [head.weight] if isinstance(head, torch.nn.Linear) else []
    with _LOCK:
        for weight in weights:
            GRADS.weights[weight] = True
        _USERS[0] += 1
        for cls, forward in classes.items():
            if cls not in _FUSED:
                _ORIGINALS[cls] = cls.forward
                cls.forward = forward
                _FUSED.add(cls)
    try:
        yield count
    finally:
        with _LOCK:
            for weight in weights:
                GRADS.weights.pop(weight, None)
                GRADS.kept.pop(weight, None)
            _USERS[0] -= 1
            if not _USERS[0]:
                for cls in _FUSED:
                    cls.forward = _ORIGINALS[cls]
                _FUSED.clear()
