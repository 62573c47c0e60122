"""The model registry: families register constructors by name; create_model builds one.

    create_model("resnet18", num_classes=10, width=0.25)   -> nn.Module taking float NCHW in [0, 1]

Every constructor reads `fn(num_classes=10, width=1.0, dropout=0.0, **family options)`; create_model
rejects options a model does not take.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from kagglecifar.console import table
from kagglecifar.errors import KaggleCifarError

COMMON_OPTIONS = ("num_classes", "width", "dropout")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_BATCH_SIZES: dict[str, int] = {}
_RECIPES: dict[str, str] = {}


def register(name: str, description: str = "", batch_size: int = 512, recipe: str = "gpu"):
    """Register a constructor under `name`; batch_size is its default training batch on a GPU; recipe names the
    preset (kagglecifar/presets/RECIPE.yaml) whose recipe trains the model when no preset of its own is asked
    for (config.model_recipe scales it to batch_size)."""

    def add(fn: Callable[..., nn.Module]):
        _REGISTRY[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        _BATCH_SIZES[name] = batch_size
        _RECIPES[name] = recipe
        return fn

    return add


def model_names() -> list[str]:
    return list(_REGISTRY)


def constructor(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise KaggleCifarError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def describe(name: str) -> str:
    constructor(name)
    return _DESCRIPTIONS[name]


def default_batch_size(name: str) -> int:
    """The training batch size the model is meant for on one GPU."""
    constructor(name)
    return _BATCH_SIZES[name]


def recipe_preset(name: str) -> str:
    """The preset whose recipe is the model's own: its family's (ResNets gpu, airbench fast, baselines baseline)."""
    constructor(name)
    return _RECIPES[name]


def model_options(name: str) -> dict:
    """Every keyword the model's constructor takes, with its default."""
    params = inspect.signature(constructor(name)).parameters
    return {key: p.default for key, p in params.items()}


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    fn = constructor(name)
    unknown = sorted(set(kwargs) - set(model_options(name)))
    if unknown:
        raise KaggleCifarError(
            f"model {name!r} takes no option {', '.join(unknown)}; its options: {', '.join(model_options(name))}"
        )
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
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "flops": counter.get_total_flops(),
        "default_batch_size": _BATCH_SIZES[name],
        "description": _DESCRIPTIONS[name],
    }


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
    return table(rows[0], rows[1:], right=(1, 2, 3))
