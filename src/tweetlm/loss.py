"""The causal-LM loss from the final hidden states and the output head, a chunk of tokens at a time: the
[tokens x vocabulary] logits (49,152 columns for SmolLM2) never exist whole in fp32.

The plain loss (`model(..., labels=...)`) holds the batch's logits in the model's dtype, their fp32 copy,
the log-softmax (kept for the backward pass) and, in the backward pass, the fp32 gradient and its cast:
at its peak 10 bytes per token and vocabulary entry, 0.36 GB for 16 posts of 47 tokens, 1 GB for 16 of
128. Here each chunk's logits are computed, upcast to fp32 and turned into their gradient at once, by the
same ops as the plain loss; only that gradient, in the head's dtype (2 bytes an entry in bf16), is kept
for all the rows, and the gradients of the hidden states and of the head are each one matmul over it, as
the plain loss's backward pass computes them. Only tokens that have a target are computed (no padding, no
last token of a post). The two losses agree to rounding, in fp32 and bf16.

The chunk's logits and the logits' gradient are written in place into buffers kept between calls
(`Buffers`; 88 MB for SmolLM2 with 256-token micro-batches): allocated afresh, these and the chunks'
temporaries were over half of a training step's page faults, which cost 0.9 s a GB on the 2-core VM we
measure on (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100  # the label of a token that is no target (padding), as transformers uses it
# Rows of logits at a time. With glibc's default rule, buffers under 32 MB stayed in a fragmenting heap and
# 128 rows cost 120 MB more than 384 (benchmarks/loss_chunks.py); with the 1 MB mmap threshold training sets
# (trainer.training_heap) 128 rows lowered a 30-step run's peak RSS from 3.75 to 3.55 GB at the same speed
# (docs/performance.md). The kept buffers of 128 rows take 63 MB for SmolLM2 (logits in bf16 and fp32, the log-softmax).
CHUNK_TOKENS = 128


class Buffers(threading.local):
    """The loss's work buffers, one set per thread, kept from call to call while their shape, dtype and
    device stay the same. `release()` frees them (the Trainer does after training)."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.fills = 0  # `get` calls: a kept view is valid while this stays the same

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A buffer of `shape`: the first rows of the kept one when that has as many or more."""
        self.fills += 1
        kept = self.tensors.get(name)
        if (
            kept is None
            or kept.shape[1:] != shape[1:]
            or len(kept) < shape[0]
            or kept.dtype != dtype
            or kept.device != device
        ):
            self.tensors.pop(name, None)  # the old one goes before the new one exists
            kept = self.tensors[name] = torch.empty(shape, dtype=dtype, device=device)
        return kept[: shape[0]]

    def release(self) -> None:
        self.tensors.clear()


BUFFERS = Buffers()


def causal_lm_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    labels: torch.Tensor,
    num_items: torch.Tensor | int | None = None,
    chunk: int = CHUNK_TOKENS,
    add_weight_grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The mean cross-entropy of predicting `labels[:, t + 1]` from `hidden[:, t]` through `head`, as
    transformers' causal-LM loss computes it: summed over the targets (labels other than -100) and divided
    by `num_items` (the Trainer's count over a gradient-accumulated batch) or by the number of targets.
    With `add_weight_grad` (`fused.add_weight_grad`), the backward pass hands it the head's weight and the two
    factors of its gradient, to add in place, instead of returning that gradient to autograd."""
    targets = F.pad(labels[..., 1:], (0, 1), value=IGNORE).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    count = targets.ne(IGNORE).sum() if num_items is None else num_items
    scale = 1.0 / torch.as_tensor(count, dtype=torch.float32, device=flat.device)
    if not torch.is_grad_enabled() or not (flat.requires_grad or head.weight.requires_grad):
        total = scale.new_zeros(())
        for logits, t in _chunks(flat, head.weight, head.bias, targets, target_rows(targets), chunk):
            total += _log_softmax_nll(logits, t)[0]
        return total * scale
    loss: torch.Tensor = _ChunkedCrossEntropy.apply(
        flat, head.weight, head.bias, targets, scale, chunk, add_weight_grad
    )
    return loss


def _chunks(
    flat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    rows: torch.Tensor,
    chunk: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(fp32 logits, targets) of each chunk of `rows` (those that have a target), in order. The logits are a
    view of a kept buffer, valid until the next chunk."""
    size = (min(chunk, len(rows)), weight.shape[0])
    logits = BUFFERS.get("logits", size, torch.float32, weight.device)
    upcast = weight.dtype != torch.float32
    low = BUFFERS.get("low", size, weight.dtype, weight.device) if upcast else logits
    for start in range(0, len(rows), chunk):
        picked = rows[start : start + chunk]
        states = flat.index_select(0, picked)
        fp32 = logits[: len(picked)]
        out = low[: len(picked)] if upcast else fp32
        if bias is None:
            torch.mm(states, weight.T, out=out)
        else:
            torch.addmm(bias, states, weight.T, out=out)
        if upcast:
            fp32.copy_(out)
        yield fp32, targets.index_select(0, picked)


def target_rows(targets: torch.Tensor) -> torch.Tensor:
    """The positions of the tokens that have a target: no padding, no last token of a post."""
    return targets.ne(IGNORE).nonzero().squeeze(1)


def _log_softmax_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy of the fp32 `logits` rows, and their log-softmax (in a kept buffer)."""
    logp = BUFFERS.get("logp", tuple(logits.shape), torch.float32, logits.device)
    torch.ops.aten._log_softmax.out(logits, 1, False, out=logp)
    return F.nll_loss(logp, targets, reduction="sum"), logp


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Loss and gradients in one pass over the chunks; the backward pass only scales the gradients."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        flat: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        scale: torch.Tensor,
        chunk: int,
        add_weight_grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None,
    ) -> torch.Tensor:
        wants_h, wants_w, wants_b = ctx.needs_input_grad[:3]
        rows = target_rows(targets)
        # d loss / d logits of every target row, in the head's dtype, as the plain loss's backward rounds it
        grad_logits = BUFFERS.get("grad_logits", (len(rows), weight.shape[0]), weight.dtype, weight.device)
        total = scale.new_zeros(())
        start = 0
        for logits, t in _chunks(flat, weight, bias, targets, rows, chunk):
            summed, logp = _log_softmax_nll(logits, t)
            total += summed
            # by the plain loss's backward ops, in place: NLL's (-scale at each target), then log-softmax's;
            # the same numbers to the bit
            grad_nll = logits.zero_().scatter_(1, t[:, None], (-scale).expand(len(t), 1))
            grad = torch.ops.aten._log_softmax_backward_data.out(grad_nll, logp, 1, torch.float32, out=logp)
            grad_logits[start : start + len(t)].copy_(grad)
            start += len(t)
        # Each gradient is one matmul over all the rows, in the head's dtype, as the plain loss's backward
        # pass computes it: per chunk, the head's would read and write a [vocab x hidden] fp32 sum each time.
        grad_h = grad_w = grad_b = None
        if wants_h:
            grad_h = torch.zeros_like(flat).index_copy_(0, rows, grad_logits @ weight)
        ctx.head = None
        if wants_w and add_weight_grad is not None:  # made in the backward pass, into the weight's .grad
            ctx.head = weight, grad_logits, flat.index_select(0, rows), add_weight_grad, BUFFERS.fills
        elif wants_w:
            grad_w = grad_logits.T @ flat.index_select(0, rows)
        if wants_b:
            grad_b = grad_logits.sum(0, dtype=torch.float32)
        ctx.grads = grad_h, grad_w, grad_b
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.grads
        head, ctx.grads, ctx.head = ctx.head, None, None  # freed with the graph's first (only) backward pass
        unscaled = bool(grad_out == 1)  # the loss itself is differentiated
        if head is not None:
            weight, grad_logits, states, add_weight_grad, filled = head
            if filled != BUFFERS.fills:
                raise RuntimeError("the chunked loss was computed again before this one's backward pass")
            if unscaled:
                add_weight_grad(weight, grad_logits.T, states)
            else:
                grad_w = grad_logits.T @ states
        if not unscaled:
            grad_h = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
            grad_w = None if grad_w is None else (grad_w.float() * grad_out).to(grad_w.dtype)
            grad_b = None if grad_b is None else grad_b * grad_out
        grad_b = None if grad_b is None else grad_b.to(ctx.weight_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None


class RowsEmbedding(torch.nn.Embedding):
    """An embedding whose gradient goes back as the rows of the batch's tokens (a sparse tensor), each
    row's sum taken in fp32 and rounded once, as the dense backward pass rounds it. For an embedding tied to
    the output head: autograd adds the rows to the head's dense gradient, instead of adding a dense
    [vocabulary x hidden] matrix of mostly zeros (two passes over 56 MB for SmolLM2 per backward pass)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _RowGradients.apply(input, self.weight, self.padding_idx)
        return out


class _RowGradients(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        ids, grad = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if ctx.padding_idx is not None:  # that row gets no gradient, as in nn.Embedding
            keep = ids != ctx.padding_idx
            ids, grad = ids[keep], grad[keep]
        rows, inverse = ids.unique(return_inverse=True)
        summed = grad.new_zeros((len(rows), grad.shape[1]), dtype=torch.float32).index_add_(0, inverse, grad.float())
        values = summed.to(grad.dtype)
        # rows are unique and in range by construction: no invariant check (and no warning about skipping it)
        sparse = torch.sparse_coo_tensor(rows[None], values, ctx.shape, is_coalesced=True, check_invariants=False)
        return None, sparse, None
