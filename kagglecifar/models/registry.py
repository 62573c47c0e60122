"""The model registry: families register constructors by name; create_model builds one.

    create_model("resnet18", num_classes=10, width=0.25)   -> nn.Module taking float NCHW in [0, 1]

Every constructor reads `fn(num_classes=10, width=1.0, dropout=0.0, **family options)`; create_model
rejects options a model does not take. A family may also own every name under a prefix (`timm/NAME`): its
constructor then takes the rest of the name first, `fn(NAME, num_classes=10, ...)`, and its check turns an
unknown NAME into one clear line.
"""

from __future__ import annotations

import functools
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
_PREFIXES: dict[str, tuple[Callable[..., nn.Module], Callable[[str], None]]] = {}
_LISTERS: list[Callable[[], dict[str, str]]] = []  # each gives prefixed names `kagglecifar models` shows
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


def register_prefix(
    prefix: str,
    check: Callable[[str], None],
    description: str = "",
    batch_size: int = 128,
    listed: Callable[[], dict[str, str]] | None = None,
    recipe: str = "gpu",
):
    """Register a constructor for every name PREFIX+REST; check(REST) raises KaggleCifarError for an unknown REST.
    listed() maps the few PREFIX+REST names `kagglecifar models` shows to their descriptions (called only there,
    so that the family's library is imported only when needed)."""

    def add(fn: Callable[..., nn.Module]):
        _PREFIXES[prefix] = (fn, check)
        _RECIPES[prefix] = recipe
        if listed is not None:
            _LISTERS.append(listed)
        _DESCRIPTIONS[prefix] = description or (fn.__doc__ or "").strip().splitlines()[0]
        _BATCH_SIZES[prefix] = batch_size
        return fn

    return add


def model_names() -> list[str]:
    """The registered names (names under a prefix, such as timm/NAME, are not listed)."""
    return list(_REGISTRY)


def split_prefix(name: str) -> tuple[str, str] | None:
    """(prefix, rest) when a prefix family owns `name`, else None."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return prefix, name[len(prefix) :]
    return None


def constructor(name: str) -> Callable[..., nn.Module]:
    prefixed = split_prefix(name)
    if prefixed:
        fn, check = _PREFIXES[prefixed[0]]
        check(prefixed[1])
        return fn
    if name not in _REGISTRY:
        also = "".join(f", or {prefix}NAME" for prefix in _PREFIXES)
        raise KaggleCifarError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}{also}")
    return _REGISTRY[name]


def _key(name: str) -> str:
    """The name the descriptions and batch sizes are kept under (the prefix for prefixed names)."""
    constructor(name)
    prefixed = split_prefix(name)
    return prefixed[0] if prefixed else name


def describe(name: str) -> str:
    return _DESCRIPTIONS[_key(name)]


def default_batch_size(name: str) -> int:
    """The training batch size the model is meant for on one GPU."""
    return _BATCH_SIZES[_key(name)]


def recipe_preset(name: str) -> str:
    """The preset whose recipe is the model's own: its family's (ResNets gpu, airbench fast, baselines baseline)."""
    return _RECIPES[_key(name)]


def model_options(name: str) -> dict:
    """Every keyword the model's constructor takes, with its default."""
    params = inspect.signature(constructor(name)).parameters
    options = {key: p.default for key, p in params.items()}
    if split_prefix(name):
        options.pop(next(iter(options)))  # the rest of the name, given positionally
    return options


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    fn = constructor(name)
    prefixed = split_prefix(name)
    if prefixed:
        fn = functools.partial(fn, prefixed[1])
    unknown = sorted(set(kwargs) - set(model_options(name)))
    if unknown:
        raise KaggleCifarError(
            f"model {name!r} takes no option {', '.join(unknown)}; its options: {', '.join(model_options(name))}"
        )
    if num_classes < 1:
        raise KaggleCifarError(f"model {name!r}: num_classes must be at least 1, got {num_classes}")
    return fn(num_classes=num_classes, **kwargs)


def without_pretrained_weights(name: str, kwargs: dict) -> dict:
    """`kwargs` for building `name` without reading pretrained weights (weights=None, pretrained="none"): when
    a checkpoint supplies the weights, or only the model's shape matters."""
    options = model_options(name)
    return {
        **kwargs,
        **({"weights": None} if "weights" in options else {}),
        **({"pretrained": "none"} if "pretrained" in options else {}),
    }


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
        "default_batch_size": default_batch_size(name),
        "description": describe(name),
    }


def model_table(width: float = 1.0) -> list[str]:
    """`kagglecifar models`: one aligned row per registered model and per listed prefixed name (sizes at
    `width`, no weights read)."""
    if not width > 0:
        raise KaggleCifarError(f"width must be positive, got {width}")
    rows = [("model", "params", "GFLOPs", "batch", "options", "description")]
    listed = {name: text for lister in _LISTERS for name, text in lister().items()}
    for name in [*model_names(), *listed]:
        options = model_options(name)
        kwargs = without_pretrained_weights(name, {"width": width} if width != 1 else {})
        try:
            info = model_info(name, **kwargs)
            gflops = info["flops"] / 1e9
            params, gflops = f"{info['params'] / 1e6:.2f}M", f"{gflops:.{2 if gflops >= 0.1 else 4}f}"
        except KaggleCifarError:  # a model whose width is fixed (pretrained channels)
            params = gflops = "-"
        extra = ", ".join(k for k in options if k not in COMMON_OPTIONS) or "-"
        rows.append((name, params, gflops, str(default_batch_size(name)), extra, listed.get(name) or describe(name)))
    return table(rows[0], rows[1:], right=(1, 2, 3))
