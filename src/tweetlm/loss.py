"""The causal-LM loss from the final hidden states and the output head, a chunk of tokens at a time: the
[tokens x vocabulary] logits (49,152 columns for SmolLM2) and their gradient never exist whole.

The plain loss (`model(..., labels=...)`) holds the batch's logits in the model's dtype, their fp32 copy,
the log-softmax (kept for the backward pass) and, in the backward pass, the fp32 gradient and its cast:
at its peak 10 bytes per token and vocabulary entry, 0.36 GB for 16 posts of 47 tokens, 1 GB for 16 of
128. Here each chunk's logits are computed, upcast to fp32 for the log-softmax, and turned into their
gradient at once, by the same ops as the plain loss; the gradients of the hidden states and of the head
are accumulated (the head's in fp32, 113 MB for SmolLM2) and handed back in the backward pass. Only
tokens that have a target are computed (no padding, no last token of a post). The two losses agree to
rounding, in fp32 and bf16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100  # the label of a token that is no target (padding), as transformers uses it
# Rows of logits at a time. With glibc's default rule, buffers under 32 MB stayed in a fragmenting heap and
# 128 rows cost 120 MB more than 384 (benchmarks/loss_chunks.py); with the 1 MB mmap threshold training sets
# (trainer.training_heap) every chunk buffer is returned once freed, and 128 rows (25 MB fp32 logits)
# lowered a 30-step run's peak RSS from 3.75 to 3.55 GB at the same speed (docs/performance.md).
CHUNK_TOKENS = 128


def causal_lm_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    labels: torch.Tensor,
    num_items: torch.Tensor | int | None = None,
    chunk: int = CHUNK_TOKENS,
) -> torch.Tensor:
    """The mean cross-entropy of predicting `labels[:, t + 1]` from `hidden[:, t]` through `head`, as
    transformers' causal-LM loss computes it: summed over the targets (labels other than -100) and divided
    by `num_items` (the Trainer's count over a gradient-accumulated batch) or by the number of targets."""
    targets = F.pad(labels[..., 1:], (0, 1), value=IGNORE).reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    count = targets.ne(IGNORE).sum() if num_items is None else num_items
    scale = 1.0 / torch.as_tensor(count, dtype=torch.float32, device=flat.device)
    if not torch.is_grad_enabled() or not (flat.requires_grad or head.weight.requires_grad):
        total = scale.new_zeros(())
        for _, _, logits, t in _chunks(flat, head.weight, head.bias, targets, chunk):
            total += F.cross_entropy(logits, t, reduction="sum")
        return total * scale
    loss: torch.Tensor = _ChunkedCrossEntropy.apply(flat, head.weight, head.bias, targets, scale, chunk)
    return loss


def _chunks(
    flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(row indices, hidden rows, fp32 logits, targets) of each chunk of the rows that have a target."""
    rows = targets.ne(IGNORE).nonzero().squeeze(1)
    for start in range(0, len(rows), chunk):
        picked = rows[start : start + chunk]
        states = flat.index_select(0, picked)
        yield picked, states, F.linear(states, weight, bias).float(), targets.index_select(0, picked)


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
    ) -> torch.Tensor:
        wants_h, wants_w, wants_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(flat) if wants_h else None
        grad_w_t = weight.new_zeros(weight.shape[::-1], dtype=torch.float32) if wants_w else None  # [hidden, vocab]
        grad_b = weight.new_zeros(weight.shape[0], dtype=torch.float32) if wants_b else None
        total = scale.new_zeros(())
        for picked, states, logits, t in _chunks(flat, weight, bias, targets, chunk):
            # d loss / d logits by the ops the plain loss runs (log-softmax, NLL, their backward passes) on
            # the chunk, in fp32: the same numbers, then rounded to the head's dtype as it rounds them.
            with torch.enable_grad():
                logits.requires_grad_(True)
                summed = F.cross_entropy(logits, t, reduction="sum")
            (grad,) = torch.autograd.grad(summed, logits, grad_outputs=scale)
            del logits
            total += summed.detach()
            low = grad.to(weight.dtype)
            if grad_h is not None:
                grad_h.index_copy_(0, picked, low @ weight)
            if grad_w_t is not None:
                rounded = grad if low is grad else grad.copy_(low)
                grad_w_t.addmm_(states.T.float(), rounded)  # [hidden, tokens] @ [tokens, vocab]
            if grad_b is not None:
                grad_b += low.sum(0, dtype=torch.float32)
        ctx.grads = grad_h, grad_w_t, grad_b
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_h, grad_w_t, grad_b = ctx.grads
        ctx.grads = None  # freed with the graph's first (only) backward pass
        if not bool(grad_out == 1):  # the loss itself is differentiated: nothing to scale
            grad_h = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
            grad_w_t = None if grad_w_t is None else grad_w_t * grad_out
            grad_b = None if grad_b is None else grad_b * grad_out
        dtype = ctx.weight_dtype
        grad_w = None if grad_w_t is None else grad_w_t.T.to(dtype, memory_format=torch.contiguous_format)
        return grad_h, grad_w, None if grad_b is None else grad_b.to(dtype), None, None, None
