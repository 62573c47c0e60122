"""Test-time augmentation (TTA): the views a prediction averages over, and their weights.

| mode        | views | the views                                                                     |
|-------------|-------|-------------------------------------------------------------------------------|
| `none`      | 1     | the image                                                                     |
| `flip`      | 2     | the image and its horizontal mirror                                           |
| `shift`     | 10    | the `flip` views, then the image reflect-padded by 2 px and cropped 2 px      |
|             |       | up, down, left and right, each crop also mirrored (equal weights)             |
| `translate` | 6     | airbench's: the `flip` views (1/4 each), then 1 px reflect-padded crops that   |
|             |       | move the content down-right and up-left, each also mirrored (1/8 each)       |

A view is (dy, dx, mirrored): the batch reflect-padded and cropped dy, dx px from its place, then mirrored.
Views shared by several modes are computed once when several modes are asked for together (evaluate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kagglecifar.errors import KaggleCifarError

View = tuple[int, int, bool]  # (dy, dx, mirrored)
FLIP_VIEWS = ((0, 0, False), (0, 0, True))
SHIFT = 2
SHIFT_OFFSETS = ((-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT))  # up, down, left, right
MODES: dict[str, dict[View, float]] = {
    "none": {(0, 0, False): 1.0},
    "flip": {view: 1 / 2 for view in FLIP_VIEWS},
    "shift": {
        view: 1 / 10 for view in FLIP_VIEWS + tuple((dy, dx, m) for dy, dx in SHIFT_OFFSETS for m in (False, True))
    },
    "translate": {**{view: 1 / 4 for view in FLIP_VIEWS}, **{(d, d, m): 1 / 8 for d in (-1, 1) for m in (False, True)}},
}
TTA_VIEWS = {mode: len(views) for mode, views in MODES.items()}


def check_tta_mode(mode: str) -> str:
    if mode not in MODES:
        raise KaggleCifarError(f"--tta {mode}: unknown TTA mode; choose one of {', '.join(MODES)}")
    return mode


def views_of(modes: list[str]) -> list[View]:
    """Every view the modes need, each once, in table order."""
    return list(dict.fromkeys(view for mode in modes for view in MODES[check_tta_mode(mode)]))


def make_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """One view of a float NCHW batch."""
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
