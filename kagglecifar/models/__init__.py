"""Model registry: one small file per family, each registering its constructors by name.

    create_model("resnet18", num_classes=10, width=0.25)   -> nn.Module taking float NCHW in [0, 1]

Every model normalises its input itself (first layer), so training and prediction only ever
hand it images scaled to [0, 1].
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from kagglecifar.errors import KaggleCifarError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str = ""):
    def add(fn: Callable[..., nn.Module]):
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return add


def model_names() -> list[str]:
    return list(_REGISTRY)


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise KaggleCifarError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


class Normalize(nn.Module):
    """Per-channel standardisation as the model's first layer."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        import torch

        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


# Importing a family module registers its models.
from kagglecifar.models import baselines  # noqa: E402,F401
