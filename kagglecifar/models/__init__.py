"""Model registry: one small file per family, each registering its constructors by name.

    create_model("resnet18", num_classes=10, width=0.25)   -> nn.Module taking float NCHW in [0, 1]

Every constructor reads `fn(num_classes=10, width=1.0, dropout=0.0, **family options)`; create_model
rejects options a model does not take. Every model normalises its input itself (first layer), so
training and prediction only ever hand it images scaled to [0, 1].
Adding a model = one small file that calls @register, plus its import at the bottom of this file.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from kagglecifar.errors import KaggleCifarError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
COMMON_OPTIONS = ("num_classes", "width", "dropout")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_BATCH_SIZES: dict[str, int] = {}


def register(name: str, description: str = "", batch_size: int = 512):
    """Register a constructor under `name`; batch_size is its default training batch on a GPU."""

    def add(fn: Callable[..., nn.Module]):
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        _BATCH_SIZES[name] = batch_size
        return fn

    return add


def model_names() -> list[str]:
    return list(_REGISTRY)


def _constructor(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise KaggleCifarError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def describe(name: str) -> str:
    _constructor(name)
    return _DESCRIPTIONS[name]


def default_batch_size(name: str) -> int:
    """The training batch size the model is meant for on one GPU."""
    _constructor(name)
    return _BATCH_SIZES[name]


def model_options(name: str) -> dict:
    """Every keyword the model's constructor takes, with its default."""
    params = inspect.signature(_constructor(name)).parameters
    return {key: p.default for key, p in params.items()}


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    fn = _constructor(name)
    unknown = sorted(set(kwargs) - set(model_options(name)))
    if unknown:
        raise KaggleCifarError(f"model {name!r} takes no option {', '.join(unknown)}; "
                               f"its options: {', '.join(model_options(name))}")
    if num_classes < 1:
        raise KaggleCifarError(f"model {name!r}: num_classes must be at least 1, got {num_classes}")
    return fn(num_classes=num_classes, **kwargs)


def model_info(name: str, **kwargs) -> dict:
    """Parameter count and forward FLOPs for one 32x32 image (a multiply-add counts as 2 FLOPs).

    Built on the meta device: nothing is allocated or computed, and no pretrained weights are read
    (pass weights=None for models that would load them).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = create_model(name, **kwargs).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
    return {"model": name, "params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "flops": counter.get_total_flops(), "default_batch_size": _BATCH_SIZES[name],
            "description": _DESCRIPTIONS[name]}


def model_table(width: float = 1.0) -> list[str]:
    """`kagglecifar models`: one aligned row per registered model (sizes at `width`, no weights read)."""
    if not width > 0:
        raise KaggleCifarError(f"width must be positive, got {width}")
    rows = [("model", "params", "GFLOPs", "batch", "options", "description")]
    for name in model_names():
        options = model_options(name)
        kwargs = {"width": width} if width != 1 else {}
        if "weights" in options:
            kwargs["weights"] = None
        try:
            info = model_info(name, **kwargs)
            gflops = info["flops"] / 1e9
            params, gflops = f"{info['params'] / 1e6:.2f}M", f"{gflops:.{2 if gflops >= 0.1 else 4}f}"
        except KaggleCifarError:  # a model whose width is fixed (pretrained channels)
            params = gflops = "-"
        extra = ", ".join(k for k in options if k not in COMMON_OPTIONS) or "-"
        rows.append((name, params, gflops, str(_BATCH_SIZES[name]), extra, _DESCRIPTIONS[name]))
    sizes = [max(len(row[i]) for row in rows) for i in range(5)]  # the description column stays ragged
    numbers = (1, 2, 3)
    return ["  ".join([cell.rjust(size) if i in numbers else cell.ljust(size)
                       for i, (cell, size) in enumerate(zip(row, sizes))] + [row[5]]) for row in rows]


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier, rounded to a multiple of 8 (kept as is at width 1)."""
    if width == 1:
        return channels
    return max(8, int(channels * width / 8 + 0.5) * 8)


def check_common(name: str, width: float, dropout: float) -> None:
    if not width > 0:
        raise KaggleCifarError(f"model {name!r}: width must be positive, got {width}")
    if not 0 <= dropout < 1:
        raise KaggleCifarError(f"model {name!r}: dropout must be in [0, 1), got {dropout}")


class Normalize(nn.Module):
    """Per-channel standardisation as the model's first layer."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


# Importing a family module registers its models.
from kagglecifar.models import airbench, baselines, resnet, resnet_imagenet  # noqa: E402,F401
