"""Test-time augmentation (TTA): the views a prediction averages over, as batched tensor ops.

| mode    | views | the views                                                                   |
|---------|-------|-----------------------------------------------------------------------------|
| `none`  | 1     | the image                                                                   |
| `flip`  | 2     | the image and its horizontal mirror                                         |
| `shift` | 10    | the `flip` views, then the image reflect-padded by 2 px and cropped 2 px    |
|         |       | up, down, left and right, each crop also mirrored                           |

Each mode's views begin with the views of the smaller modes, so one pass gives every smaller mode too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kagglecifar.errors import KaggleCifarError

TTA_VIEWS = {"none": 1, "flip": 2, "shift": 10}
SHIFT = 2
SHIFT_OFFSETS = ((-SHIFT, 0), (SHIFT, 0), (0, -SHIFT), (0, SHIFT))  # (dy, dx): up, down, left, right


def check_tta_mode(mode: str) -> str:
    if mode not in TTA_VIEWS:
        raise KaggleCifarError(f"--tta {mode}: unknown TTA mode; choose one of {', '.join(TTA_VIEWS)}")
    return mode


def tta_views(x: torch.Tensor, mode: str):
    """Yield the views of `mode` for a float NCHW batch, one at a time, in the order of the table above."""
    check_tta_mode(mode)
    yield x
    if mode == "none":
        return
    yield x.flip(3)
    if mode == "flip":
        return
    height, width = x.shape[2:]
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT), mode="reflect")
    for dy, dx in SHIFT_OFFSETS:
        crop = padded[:, :, SHIFT + dy:SHIFT + dy + height, SHIFT + dx:SHIFT + dx + width]
        yield crop
        yield crop.flip(3)
