"""bf16 training with fp32 master weights: the model computes in bf16 (no per-op casts, half the memory
traffic of fp32), while AdamW updates fp32 copies of the weights with fp32 moments, so small updates are
not rounded away. Imported only when training (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class MasterAdamW(torch.optim.AdamW):
    """AdamW whose parameter groups hold fp32 masters of the model's low-precision parameters.

    `step()` copies the model's gradients into the masters' fp32 gradient buffers, updates the masters
    and copies them back into the model. fp32 parameters are updated in place, as plain AdamW would.
    The masters travel in `state_dict()`, so a resumed run continues from the exact weights.
    """

    def __init__(self, params: Iterable[Any], **kwargs: Any) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.buffers: list[torch.Tensor] = []  # the masters' fp32 gradients, allocated once
        master_groups = []
        for group in groups:
            masters = []
            for param in group["params"]:
                if param.dtype == torch.float32:
                    masters.append(param)
                    continue
                master = param.detach().float()
                self.pairs.append((param, master))
                self.buffers.append(torch.zeros_like(master))
                masters.append(master)
            master_groups.append({**group, "params": masters})
        super().__init__(master_groups, **kwargs)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        for (param, master), buffer in zip(self.pairs, self.buffers, strict=True):
            if param.grad is None:
                master.grad = None  # AdamW skips it, as it would skip the model's parameter
            else:
                master.grad = buffer.copy_(param.grad)
        loss = super().step(closure)
        for param, master in self.pairs:
            if master.grad is not None:
                param.copy_(master)
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
