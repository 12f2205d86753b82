"""An exponential moving average of a model's weights and buffers (`ema: {decay, every}`).

The first update copies the model; each later one sets `ema = decay * ema + (1 - decay) * w`
for every parameter and buffer (BN running statistics included; the integer batch counter as
torch's own EMA rounds it). The same as `torch.optim.swa_utils.AveragedModel` with
`get_ema_multi_avg_fn(decay)` and `use_buffers=True` updated on the same steps (tested), kept as
plain tensors so that it goes into the checkpoint and resumes bit-exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The average of `model`'s state, updated every `every` optimizer steps."""

    def __init__(self, decay: float, every: int = 1) -> None:
        self.decay, self.every = decay, every
        self.state: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in `model`'s current weights when optimizer step `step` is an update step."""
        if step % self.every:
            return
        current = model.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
            return
        device = next(iter(current.values())).device
        if next(iter(self.state.values())).device != device:  # restored from a checkpoint
            self.state = {k: v.to(device) for k, v in self.state.items()}
        floats = [k for k, v in self.state.items() if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([self.state[k] for k in floats],
                                 [current[k].detach() for k in floats], 1 - self.decay)
        for key, value in self.state.items():
            if not value.is_floating_point():
                value.copy_(value * self.decay + current[key] * (1 - self.decay))

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged state (a copy on the CPU), to load into a model of the same shape."""
        if self.state is None:
            raise RuntimeError("the weight average has had no update yet")
        return {k: v.detach().cpu().clone() for k, v in self.state.items()}

    def checkpoint(self) -> dict[str, Any]:
        return {"state": self.state}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved is not None:
            self.state = saved["state"]
