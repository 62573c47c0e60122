"""Optimizer and learning-rate schedule factories (the trainer assembles them)."""
from __future__ import annotations

import math

import torch

from kagglecifar.config import Recipe


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Parameter groups from the model when its family defines them (airbench), else nanoGPT's rule: decay
    matrices and kernels, not norms and biases. A group's "lr_scale" multiplies the scheduled rate."""
    if hasattr(model, "param_groups"):
        groups = model.param_groups(recipe.lr, recipe.weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then linear ("onecycle") or cosine decay to 0 at the last step; or airbench's triangle."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "triangle":
        return recipe.lr * triangle(step / total)
    warmup = min(round(recipe.warmup_epochs * steps_per_epoch), total - 1)
    if step < warmup:
        return recipe.lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr * (1 - progress)


def triangle(progress: float, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> float:
    """airbench94's factor at `progress` (step / total steps) in [0, 1]: linear from `start` up to 1 at
    `peak_at`, then linear down to `end`."""
    if progress < peak_at:
        return start + (1 - start) * progress / peak_at
    return 1 - (1 - end) * (progress - peak_at) / (1 - peak_at)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
