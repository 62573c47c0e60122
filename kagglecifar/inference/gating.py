"""Confidence-gated test-time augmentation: every image is predicted from itself alone; only the least confident
`fraction` of them also get the other views of the TTA mode, averaged with the mode's weights as without gating.

Most images get the same label with or without their mirror or shifts; the extra views matter where the net
hesitates between two answers. The ranking (`gate`), least confident first:

    odds       the highest runner-up-to-top probability ratio p2/p1 (the default): a logit margin, how many
               times likelier the top class is than the second
    margin     the smallest p1 - p2
    runner-up  the highest p2
    top        the smallest p1

Measured on the full replica's 300,000 ids with three cpu-preset models, scored on the 5,000 hidden labels
among the junk (benchmarks/results/tta_gate_full*.json): at a share of 0.33, odds lost 0.15 points on average
against every view on every image (0.26 at worst), margin 0.26 (0.46), runner-up 0.21 (0.40), top 0.71.
Fraction 1 is plain TTA: every image gets every view, through the same code path and with the same
probabilities as before gating existed.

predict.predict_gated is the layer around predict_images: one pass with the first view of every mode (the
image itself), then one pass over the chosen rows with the mode's other views. This module holds the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference.tta import MODES, TTA_VIEWS, View

GATES = ("odds", "margin", "runner-up", "top")
DEFAULT_GATE = "odds"
DEFAULT_FRACTION = 0.33  # measured: benchmarks/results/tta_gate_full*.json
IDENTITY: View = (0, 0, False)  # every mode's first view


def check_fraction(fraction: float, option: str = "--tta-fraction") -> float:
    """0 < fraction <= 1, as one clear line otherwise (NaN included)."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise KaggleCifarError(f"{option} {fraction}: expected a number above 0 and at most 1") from None
    if not 0 < value <= 1:  # false for NaN too
        raise KaggleCifarError(
            f"{option} {fraction}: expected a share of the images above 0 and at most 1 "
            "(1: every image gets every view of the TTA mode)"
        )
    return value


def confidence(probs: np.ndarray, gate: str = DEFAULT_GATE) -> np.ndarray:
    """Per row, higher for the surer, in [0, 1]: 1 - p2/p1 (`odds`), p1 - p2 (`margin`), 1 - p2 (`runner-up`)
    or p1 (`top`), for the highest probability p1 and the second p2."""
    if gate not in GATES:
        raise KaggleCifarError(f"gate {gate}: choose one of {', '.join(GATES)}")
    if gate == "top" or probs.shape[1] < 2:
        return probs.max(axis=1)
    two = np.partition(probs, -2, axis=1)[:, -2:]
    second, first = two[:, 0], two[:, 1]
    if gate == "odds":
        return 1 - second / np.maximum(first, np.finfo(np.float32).tiny)  # p1 > 0 after a softmax; zeros: sure
    return 1 - second if gate == "runner-up" else first - second


def gated_count(fraction: float, candidates: int) -> int:
    """How many of `candidates` images get every view: the fraction rounded up (a rounding error of the float
    product, as 0.1 * 30 = 3.0000000000000004, does not add one)."""
    return min(candidates, math.ceil(fraction * candidates * (1 - 1e-12)))


def least_confident(
    probs: np.ndarray, fraction: float, gate: str = DEFAULT_GATE, eligible: np.ndarray | None = None
) -> np.ndarray:
    """Ascending row indices of the least confident `fraction` of the eligible rows (ties: the lower index)."""
    candidates = np.arange(len(probs)) if eligible is None else np.flatnonzero(eligible)
    score = confidence(probs[candidates], gate)
    chosen = np.argsort(score, kind="stable")[: gated_count(fraction, len(candidates))]
    return np.sort(candidates[chosen])


@dataclass
class GatedProbs:
    probs: np.ndarray  # (N, C) float32
    views: np.ndarray  # (N,) uint8: how many views of the mode each row's probabilities average


def combine(
    one_view: np.ndarray,
    every_view: np.ndarray,
    mode: str,
    fraction: float,
    gate: str = DEFAULT_GATE,
    eligible: np.ndarray | None = None,
) -> GatedProbs:
    """What gating gives, from probabilities already computed with one view and with every view of the mode
    (evaluate has both from one pass; so does the gating benchmark)."""
    if fraction >= 1 or TTA_VIEWS[mode] == 1:
        return GatedProbs(every_view, np.full(len(every_view), TTA_VIEWS[mode], np.uint8))
    rows = least_confident(one_view, fraction, gate, eligible)
    probs = one_view.copy()
    probs[rows] = every_view[rows]
    views = np.ones(len(probs), np.uint8)
    views[rows] = TTA_VIEWS[mode]
    return GatedProbs(probs, views)


class Rows:
    """Some rows of an image array, read batch by batch like the array itself (a memory map stays one)."""

    def __init__(self, images, rows: np.ndarray):
        self.images, self.rows = images, rows
        self.shape = (len(rows), *images.shape[1:])
        self.dtype = images.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return np.asarray(self.images[self.rows[key]])


def other_views(mode: str) -> dict[str, dict[View, float]]:
    """The mode's views but the image itself, with their weights: what the chosen rows get in the second pass."""
    return {mode: {view: weight for view, weight in MODES[mode].items() if view != IDENTITY}}
