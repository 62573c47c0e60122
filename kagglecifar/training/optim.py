"""Optimizer and learning-rate schedule factories (the trainer assembles them)."""

from __future__ import annotations

import math

import torch

from kagglecifar.config import Recipe
from kagglecifar.training.muon import Muon

MUON_MOMENTUM = 0.6  # airbench94_muon's, for the filters; the SGD groups keep --momentum


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """Parameter groups from the model when its family defines them (airbench), else nanoGPT's rule: decay
    matrices and kernels, not norms and biases. A group's "lr_scale" multiplies the scheduled rate."""
    family_groups = getattr(model, "param_groups", None)
    if family_groups is not None:
        groups = family_groups(recipe.lr, recipe.weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": recipe.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "muon":
        return Muon(muon_groups(groups, recipe), lr=recipe.lr, momentum=recipe.momentum)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=True)


def muon_groups(groups: list[dict], recipe: Recipe) -> list[dict]:
    """The conv filters (4-D) of every group move to one Muon group at recipe.muon_lr, scheduled like the
    rest (its lr_scale is muon_lr / lr) and without weight decay (Muon keeps each filter bank's norm
    fixed); the other parameters stay in their groups on Nesterov SGD."""
    filters = [p for g in groups for p in g["params"] if p.ndim == 4]
    rest = [{**g, "params": [p for p in g["params"] if p.ndim != 4], "orthogonalize": False} for g in groups]
    scale = recipe.muon_lr / recipe.lr
    muon = {
        "name": "filters",
        "params": filters,
        "lr": recipe.muon_lr,
        "lr_scale": scale,
        "momentum": MUON_MOMENTUM,
        "weight_decay": 0.0,
        "orthogonalize": True,
    }
    return [g for g in rest if g["params"]] + ([muon] if filters else [])


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


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, frozen: set[str] | frozenset = frozenset()) -> None:
    """Each group's rate: lr times its lr_scale, 0 for the groups named in `frozen` (they stop moving without
    a change of requires_grad, which would recompile a compiled model and rebuild DDP's reducer)."""
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if group.get("name") in frozen else lr * group.get("lr_scale", 1.0)
