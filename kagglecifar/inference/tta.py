"""Test-time augmentation (TTA): the views a prediction averages over, and their weights.

A view is (dy, dx, mirrored): the batch reflect-padded and cropped dy, dx px from its place, then mirrored.
Views shared by several modes are computed once when several modes are asked for together (evaluate).
TTA_MODES declares each mode once, with the line that `--help` and docs/predict-evaluate-submit.md show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kagglecifar.errors import KaggleCifarError

if TYPE_CHECKING:  # torch is imported where views are made: --help needs only the table
    import torch

View = tuple[int, int, bool]  # (dy, dx, mirrored)
FLIP_VIEWS = ((0, 0, False), (0, 0, True))
SHIFT = 2
SHIFT_OFFSETS = ((-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT))  # up, down, left, right
TTA_MODES: dict[str, tuple[str, dict[View, float]]] = {  # mode -> (what it averages, {view: weight})
    "none": ("the image", {(0, 0, False): 1.0}),
    "flip": ("the image and its horizontal mirror", {view: 1 / 2 for view in FLIP_VIEWS}),
    "shift": (
        "the flip views, then 2 px reflect-padded shifts up, down, left and right, each mirrored (1/10 each)",
        {view: 1 / 10 for view in FLIP_VIEWS + tuple((dy, dx, m) for dy, dx in SHIFT_OFFSETS for m in (False, True))},
    ),
    "translate": (
        "airbench's: the flip views (1/4 each), then 1 px shifts down-right and up-left, each mirrored (1/8 each)",
        {**{view: 1 / 4 for view in FLIP_VIEWS}, **{(d, d, m): 1 / 8 for d in (-1, 1) for m in (False, True)}},
    ),
}
MODES: dict[str, dict[View, float]] = {mode: views for mode, (_, views) in TTA_MODES.items()}
TTA_VIEWS = {mode: len(views) for mode, views in MODES.items()}


def tta_help() -> str:
    """Every mode with its view count and what it averages: the --tta help."""
    described = (
        f"{mode} ({TTA_VIEWS[mode]} view{'s' * (TTA_VIEWS[mode] > 1)}): {what}" for mode, (what, _) in TTA_MODES.items()
    )
    return "Test-time augmentation: " + "; ".join(described) + "."


def check_tta_mode(mode: str) -> str:
    if mode not in MODES:
        raise KaggleCifarError(f"--tta {mode}: unknown TTA mode; choose one of {', '.join(MODES)}")
    return mode


def views_of(modes: list[str]) -> list[View]:
    """Every view the modes need, each once, in table order."""
    return list(dict.fromkeys(view for mode in modes for view in MODES[check_tta_mode(mode)]))


def make_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """One view of a float NCHW batch."""
    import torch.nn.functional as F

    dy, dx, mirrored = view
    if dy or dx:
        pad = max(abs(dy), abs(dx))
        height, width = x.shape[2:]
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = padded[:, :, pad + dy : pad + dy + height, pad + dx : pad + dx + width]
    return x.flip(3) if mirrored else x


def tta_views(x: torch.Tensor, mode: str):
    """Yield the views of `mode` for a float NCHW batch, one at a time, in table order."""
    for view in views_of([mode]):
        yield make_view(x, view)
