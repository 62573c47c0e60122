"""airbench's test-time augmentation as weighted views: the proposed `translate` TTA mode.

| view                                           | weight |
|------------------------------------------------|--------|
| the image, and its mirror                      | 1/4 each |
| reflect-pad 1 px, crop 1 px up-left, + mirror  | 1/8 each |
| reflect-pad 1 px, crop 1 px down-right, + mirror | 1/8 each |

Six views whose weights sum to 1; the prediction is the weighted mean of the per-view outputs (airbench
averages logits; averaging softmax probabilities, as predict.py does, gives the same ranking in practice).
The first two views are the `flip` mode's, so `flip` comes free from the same pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATE_WEIGHTS = (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)


def translate_views(x: torch.Tensor):
    """Yield (view, weight) for a float NCHW batch, one view at a time, in the order of the table."""
    yield x, TRANSLATE_WEIGHTS[0]
    yield x.flip(3), TRANSLATE_WEIGHTS[1]
    height, width = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    for i, (top, left) in enumerate(((0, 0), (2, 2))):  # content moves 1 px down-right, then up-left
        crop = padded[:, :, top:top + height, left:left + width]
        yield crop, TRANSLATE_WEIGHTS[2 + 2 * i]
        yield crop.flip(3), TRANSLATE_WEIGHTS[3 + 2 * i]


@torch.no_grad()
def predict_translate(model, x: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the model's softmax over the six views."""
    return sum(weight * model(view).float().softmax(1) for view, weight in translate_views(x))
