"""One training step's forward and backward passes, split into micro-batches when the batch does not fit
(--accumulate N): the gradients add up to the whole batch's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F


def forward_backward(
    step_model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    parts: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, mean loss) of the batch, its gradients accumulated into .grad: `parts` micro-batches in turn,
    each loss weighted by its share of the batch. Under DDP the gradients are all-reduced once, after the last."""
    chunks = list(zip(x.chunk(parts), y.chunk(parts)))
    no_sync = getattr(step_model, "no_sync", None)
    logits, losses = [], []
    for i, (x_part, y_part) in enumerate(chunks):
        with no_sync() if no_sync is not None and i < len(chunks) - 1 else contextlib.nullcontext():
            with autocast():
                out = step_model(x_part)
                loss = F.cross_entropy(out, y_part, label_smoothing=label_smoothing) * (len(y_part) / len(y))
            loss.backward()
        logits.append(out.detach())
        losses.append(loss.detach())
    return torch.cat(logits), torch.stack(losses).sum()
