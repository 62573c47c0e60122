"""Muon for convolution filters: SGD momentum whose update is orthogonalised by a Newton-Schulz iteration.

torch.optim.Muon (torch 2.9+) takes 2-D parameters only; airbench94_muon applies Muon to 4-D conv filters
viewed as (out, in * kh * kw) matrices, after normalising each filter bank to norm sqrt(out), with
Nesterov momentum 0.6 and lr 0.24 (its other parameters - BatchNorm shifts, whitening bias, head - stay on
Nesterov SGD). This optimizer does both, so the trainer keeps one optimizer, one schedule and one state:
a group with "orthogonalize": True gets Muon's update, any other group plain Nesterov SGD with weight decay.

    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    muon = Muon([{"params": filters}, {"params": others, "orthogonalize": False, "momentum": 0.85}], lr=0.24)
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic iteration with a steep slope at zero (Keller Jordan)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (singular values land in about [0.5, 1.5]), for a 2-D g."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)  # bf16 matmuls are fast on GPUs, not on most CPUs
    x = x / (x.norm() + eps)
    transpose = x.shape[0] > x.shape[1]
    if transpose:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if transpose else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr: float = 0.24,
        momentum: float = 0.6,
        nesterov: bool = True,
        ns_steps: int = 3,
        normalize_weights: bool = True,
        orthogonalize: bool = True,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(f"Muon: need lr >= 0 and momentum in [0, 1), got {lr}, {momentum}")
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                nesterov=nesterov,
                ns_steps=ns_steps,
                normalize_weights=normalize_weights,
                orthogonalize=orthogonalize,
                weight_decay=weight_decay,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                grad = p.grad
                if group["weight_decay"] and not group["orthogonalize"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                buf = state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                g = grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                if not group["orthogonalize"]:  # torch.optim.SGD's step (dampening 0)
                    p.add_(g, alpha=-group["lr"])
                    continue
                if group["normalize_weights"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                update = orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
                p.add_(update, alpha=-group["lr"])
        return loss
