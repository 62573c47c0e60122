"""airbench's Lookahead: a slow copy of the weights that the fast ones are pulled back to every few steps.

    lookahead = Lookahead(model)                 # after the model is built (and whitened)
    ... optimizer.step(); step += 1
    lookahead.step(step, total_steps)            # every `every` steps: slow += (1 - decay)(fast - slow); fast = slow
    ... after the last step: lookahead.finish()  # the model ends on the slow weights

decay = 0.95^5 * (step / total)^3: no averaging early, strong averaging near the end, like an EMA whose
horizon grows as the learning rate falls, at a fifth of an EMA's cost. Every floating-point entry of the
state dict takes part, BatchNorm running statistics included. state_dict() goes into last.pt to resume.
"""

from __future__ import annotations

import torch
from torch import nn


def lookahead_decay(step: int, total: int, base: float = 0.95**5) -> float:
    return base * (step / max(1, total)) ** 3


class Lookahead:
    def __init__(self, model: nn.Module, every: int = 5):
        self.model, self.every = model, every
        state = model.state_dict()  # tensors that share the model's storage
        self.slow = {k: v.detach().clone() for k, v in state.items() if v.dtype.is_floating_point}
        self._fast = [state[k] for k in self.slow]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """Two multi-tensor kernels per dtype and device (torch._foreach_*), not two per tensor."""
        slow = list(self.slow.values())
        torch._foreach_lerp_(slow, self._fast, 1 - decay)
        torch._foreach_copy_(self._fast, slow)

    def step(self, step: int, total: int) -> None:
        """Call after each optimizer step with the number of steps done so far."""
        if step % self.every == 0:
            self.update(lookahead_decay(step, total))

    def finish(self) -> None:
        self.update(1.0)

    def state_dict(self) -> dict:
        return {"every": self.every, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.every = state["every"]
        for key, value in state["slow"].items():
            self.slow[key].copy_(value)
