"""One optimisation step, and the watch that stops a run whose loss is no longer finite.

The trainer, `run`'s time estimate and the per-model recipe tests all step through training_step, so what they
time and test is what trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def training_step(
    model: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    autocast=contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
    parts: int = 1,
    hardest: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, cross-entropy, backward and one optimizer step; returns (logits, loss) on the device.
    With fp16 autocast a `scaler` scales the loss so that small gradients do not underflow.

    parts > 1 (--accumulate) splits the batch into that many micro-batches in turn, each loss weighted by its
    share of the batch, so their gradients add up to the whole batch's; under DDP they are all-reduced once,
    after the last.

    hardest < 1 (--hardest-share) is airbench96_faster's data selection with the net as its own judge: a forward
    pass without gradients ranks the batch by loss, and the step trains on that share of it with the highest.
    The logits returned are that pass's, for the whole batch."""
    if hardest < 1:
        with torch.no_grad(), autocast():
            ranked = model(images)
            per_image = F.cross_entropy(ranked, labels, label_smoothing=label_smoothing, reduction="none")
        kept = min(len(labels), max(2, round(hardest * len(labels))))  # two at least: BatchNorm needs them
        keep = per_image.float().topk(kept).indices
        _, loss = training_step(model, optimizer, images[keep], labels[keep], label_smoothing, autocast, scaler, parts)
        return ranked, loss
    optimizer.zero_grad(set_to_none=True)
    chunks = list(zip(images.chunk(parts), labels.chunk(parts)))
    no_sync = getattr(model, "no_sync", None)
    logits, losses = [], []
    for i, (x, y) in enumerate(chunks):
        with no_sync() if no_sync is not None and i < len(chunks) - 1 else contextlib.nullcontext():
            with autocast():
                out = model(x)
                loss = F.cross_entropy(out, y, label_smoothing=label_smoothing) * (len(y) / len(labels))
            (scaler.scale(loss) if scaler is not None else loss).backward()
        logits.append(out)
        losses.append(loss)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if len(chunks) == 1:
        return logits[0], losses[0]
    return torch.cat([out.detach() for out in logits]), torch.stack([loss.detach() for loss in losses]).sum()


class DivergenceWatch:
    """Remembers, on the device, the first step whose loss is not finite: no host sync per step. The trainer
    reads it (due) every CHECK_EVERY steps and at each epoch's end, so a diverged run stops within that many
    steps, before anything is saved from the bad weights."""

    CHECK_EVERY = 10

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """step: the 0-based global step `loss` came from."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)

    @classmethod
    def due(cls, steps_done: int, epoch_end: bool) -> bool:
        return epoch_end or steps_done % cls.CHECK_EVERY == 0

    def check(self, model: torch.nn.Module, epoch_end: bool, last_step: int, world: int = 1) -> int | None:
        """The first step whose loss was not finite on any process, or None; at an epoch's end also any weight
        that is not (a last step's inf gradient leaves a finite loss but broken weights). Reads the device."""
        from kagglecifar.training.runtime import all_reduce

        first = int(self.first_bad_step.item())
        if first < 0 and epoch_end:
            finite = torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()
            first = -1 if bool(finite) else last_step
        flagged = int(all_reduce([first], world, op="max")[0])
        return flagged if flagged >= 0 else None


@dataclass
class Divergence:
    """Where a run's loss stopped being finite: `step` is the 0-based global step, `lr` the rate it ran at."""

    step: int
    steps_per_epoch: int
    lr: float

    def record(self) -> dict:
        """What result.json keeps."""
        return {
            "epoch": self.step // self.steps_per_epoch + 1,
            "step": self.step % self.steps_per_epoch + 1,
            "lr": self.lr,
        }

    def line(self, run_dir, good_epoch: int, peak_lr: float) -> str:
        """The one line a diverged run ends with: where, at which rate, what is kept, what to try."""
        kept = (
            f"{run_dir} keeps the checkpoints of epoch {good_epoch}, the last good one"
            if good_epoch
            else f"no checkpoint was written to {run_dir}"
        )
        where = self.record()
        return (
            f"training diverged: the loss stopped being finite at epoch {where['epoch']}, step {where['step']} of "
            f"{self.steps_per_epoch} (learning rate {self.lr:.4g}); {kept}; try a lower --lr, e.g. --lr "
            f"{peak_lr / 2:g} (half of {peak_lr:g})"
        )
