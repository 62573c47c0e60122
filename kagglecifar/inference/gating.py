"""Confidence-gated test-time augmentation: every image is predicted from itself alone; only the least confident
`fraction` of them also get the other views of the TTA mode, averaged with the mode's weights as without gating.

Most images get the same label with or without their mirror or shifts; the extra views matter where the net
hesitates between two answers. The ranking (`gate`), least confident first:

    runner-up  the highest p2, the second highest probability (the default): a strong second answer
    odds       the highest runner-up-to-top probability ratio p2/p1: a logit margin, how many times likelier
               the top class is than the second
    margin     the smallest p1 - p2
    top        the smallest p1

A test set with junk (the competition's: 290,000 of its 300,000 images are not scored) holds many images whose
probabilities are spread over several classes. Their p2/p1 is high and their p2 low: odds gives them the views,
runner-up gives them to images split between two classes, which is where a mirror decides. Measured on the
full replica's 300,000 ids with eight cpu-preset models (seeds 0-7), scored on the 5,000 hidden labels among
the junk (benchmarks/results/tta_gate_rankings.json), against every view on every image: at a share of 0.3
runner-up lost 0.12 points on average (0.30 at worst), at 0.31 0.13 (0.28), at 0.32 0.115 (0.26); odds 0.20
(0.42) at 0.3 and, the default before, 0.15 (0.38) at 0.33; margin 0.34 (0.54) at 0.3. The share trades those
points for time: side by side, the whole `predict` took 0.663x-0.677x the time of every view at 0.3 in five
sets, 0.683x-0.703x at 0.31 and 0.672x-0.716x at 0.32 (benchmarks/results/tta_gate_full_*runner_up*.json,
tta_gate_full_shares*.json). Ranked among the real images alone (a test set without junk), every ranking but
top lost at most 0.02 points on average from a share of 0.3 up.

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

GATES = ("runner-up", "odds", "margin", "top")
DEFAULT_GATE = "runner-up"
DEFAULT_FRACTION = 0.3  # measured: benchmarks/results/tta_gate_rankings.json
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
    """Per row, higher for the surer, in [0, 1]: 1 - p2 (`runner-up`), 1 - p2/p1 (`odds`), p1 - p2 (`margin`)
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
