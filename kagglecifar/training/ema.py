"""Exponential moving average of a model's weights (what gets evaluated and saved when enabled)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema = decay * ema + (1 - decay) * weights after every step; buffers (BatchNorm counts) are copied.

    The decay ramps up as min(decay, (1 + step) / (10 + step)), so early averages are not dominated by
    the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        ema_state, model_state = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in ema_state.items() if v.dtype.is_floating_point]
        others = [k for k in ema_state if k not in floats]
        self._floats = ([ema_state[k] for k in floats], [model_state[k] for k in floats])
        self._others = ([ema_state[k] for k in others], [model_state[k] for k in others])

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(*self._floats, 1 - decay)
        for ema_tensor, model_tensor in zip(*self._others):
            ema_tensor.copy_(model_tensor)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
