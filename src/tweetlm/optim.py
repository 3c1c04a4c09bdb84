"""bf16 training with fp32 master weights: the model computes in bf16 (no per-op casts, half the memory
traffic of fp32), while AdamW updates fp32 copies of the weights with fp32 moments, so small updates are
not rounded away. Imported only when training (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

# fp32 gradients of at most this many elements (or of the largest parameter) exist at once during a step.
CHUNK_ELEMENTS = 1 << 24


class MasterAdamW(torch.optim.AdamW):
    """AdamW whose parameter groups hold fp32 masters of the model's low-precision parameters.

    `step()` updates the masters a chunk of parameters at a time: it copies the chunk's gradients into
    fp32, updates those masters and copies them back into the model, so fp32 gradients of one chunk
    (64 MB) exist instead of the whole model's (540 MB for SmolLM2-135M). The chunk's fp32 gradients are
    views of one buffer that lives as long as the optimizer: memory allocated afresh for each step is
    paged in by the kernel again (74k page faults and 0.2 s of system time a step for SmolLM2-135M, with
    glibc serving large blocks from their own maps, `trainer.training_heap`). fp32 parameters are
    updated in place, once per step, as plain AdamW would. The masters travel in `state_dict()`, so a
    resumed run continues from the exact weights.
    """

    def __init__(self, params: Iterable[Any], chunk_elements: int = CHUNK_ELEMENTS, **kwargs: Any) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.plain: list[torch.nn.Parameter] = []  # fp32 parameters, their own masters
        master_groups = []
        for group in groups:
            masters = []
            for param in group["params"]:
                if param.dtype == torch.float32:
                    self.plain.append(param)
                    masters.append(param)
                    continue
                master = param.detach().float()
                self.pairs.append((param, master))
                masters.append(master)
            master_groups.append({**group, "params": masters})
        super().__init__(master_groups, **kwargs)
        self.chunks: list[list[tuple[torch.nn.Parameter, torch.Tensor]]] = [[]]
        size = 0
        for pair in self.pairs:
            if self.chunks[-1] and size + pair[1].numel() > chunk_elements:
                self.chunks.append([])
                size = 0
            self.chunks[-1].append(pair)
            size += pair[1].numel()
        largest = max((sum(master.numel() for _, master in chunk) for chunk in self.chunks), default=0)
        # The fp32 gradients of the chunk in hand, on each device that holds masters.
        self.buffers = {m.device: torch.empty(largest, dtype=torch.float32, device=m.device) for _, m in self.pairs}
        self.grad_scale: torch.Tensor | None = None  # `clip()`'s factor for the next step, as AdamW reads it

    @torch.no_grad()
    def clip(self, max_norm: float) -> torch.Tensor:
        """Gradient clipping as `torch.nn.utils.clip_grad_norm_` does it (the 2-norm of the gradients' norms;
        the gradients times max_norm / (norm + 1e-6) where that is below 1), except that the fused AdamW
        kernel of the next `step()` applies the factor, as its `grad_scale`, instead of a pass over every
        gradient (which `clip_grad_norm_` makes even when the factor is 1: 6% of a SmolLM2 step under the
        profiler on 2 cores, about 2% of the wall time measured). Returns the norm before clipping."""
        self.grad_scale = None
        grads = [p.grad for p in [*(param for param, _ in self.pairs), *self.plain] if p.grad is not None]
        if not grads:
            return torch.zeros(())
        device = grads[0].device
        # Each gradient's norm in its own dtype, as clip_grad_norm_ takes them (with dtype=float32 the CPU
        # kernel copies every bf16 gradient into fp32 first: 0.25 s a step for SmolLM2 on 2 cores); their
        # 2-norm in fp32.
        norms = torch._foreach_norm(grads)
        total = torch.linalg.vector_norm(torch.stack([norm.to(device, torch.float32) for norm in norms]))
        factor = max_norm / (total.item() + 1e-6)
        if factor < 1:
            if self.defaults.get("fused"):
                self.grad_scale = torch.tensor(1 / factor, dtype=torch.float32, device=device)  # it divides
            else:
                torch._foreach_mul_(grads, factor)
        return total

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # AdamW updates every parameter that has a gradient: the fp32 ones take part in the first call only.
        plain_grads = [p.grad for p in self.plain]
        for chunk_index, chunk in enumerate(self.chunks):
            for param, grad in zip(self.plain, plain_grads, strict=True):
                param.grad = grad if chunk_index == 0 else None
            offsets = dict.fromkeys(self.buffers, 0)
            for param, master in chunk:
                if param.grad is None:
                    master.grad = None
                    continue
                start, offsets[master.device] = offsets[master.device], offsets[master.device] + master.numel()
                master.grad = self.buffers[master.device][start : offsets[master.device]].view_as(master)
                master.grad.copy_(param.grad)
            super().step()
            for param, master in chunk:
                if master.grad is not None:
                    param.copy_(master)
                    master.grad = None
        for param, grad in zip(self.plain, plain_grads, strict=True):
            param.grad = grad
        self.grad_scale = None  # `clip()`'s factor was for this step only
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["masters"] = [master for _, master in self.pairs]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        masters = state.pop("masters", None)
        super().load_state_dict(state)
        if masters is None:
            return
        if len(masters) != len(self.pairs):
            raise ValueError(f"the checkpoint has {len(masters)} master weights, the model {len(self.pairs)}")
        with torch.no_grad():
            for (param, master), saved in zip(self.pairs, masters, strict=True):
                master.copy_(saved)
                param.copy_(saved)
