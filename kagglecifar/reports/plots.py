"""PNG figures: training curves and confusion matrices (matplotlib, no display needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(
        np.asarray(labels) * num_classes + np.asarray(predictions), minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)


NUMBERED_CLASSES = 20  # above this many classes the cells carry no numbers: they would not be legible


@dataclass
class Confusion:
    true: str
    predicted: str
    count: int
    share: float  # of the true class's images


def top_confusions(counts: np.ndarray, classes: list[str], k: int = 10) -> list[Confusion]:
    """The k most frequent mistakes (true class, predicted class), most frequent first; ties in class order."""
    counts = np.asarray(counts)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    flat = np.flatnonzero(off)
    order = flat[np.lexsort((flat, -off.flat[flat]))][:k]
    totals = counts.sum(axis=1)
    return [
        Confusion(classes[i], classes[j], int(counts[i, j]), float(counts[i, j] / max(totals[i], 1)))
        for i, j in zip(*np.unravel_index(order, counts.shape))
    ]


def merge_classes(counts: np.ndarray, groups: list[int], n_groups: int) -> np.ndarray:
    """A confusion matrix over groups (CIFAR-100's super-classes): groups[c] is the group of class c."""
    member = np.zeros((len(groups), n_groups), np.int64)
    member[np.arange(len(groups)), groups] = 1
    return member.T @ np.asarray(counts, np.int64) @ member


def plot_confusion_matrix(counts: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    fig = confusion_figure(counts, classes, title)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return Path(path)


def confusion_figure(counts: np.ndarray, classes: list[str], title: str = ""):
    """Rows: true class, columns: predicted, coloured by the share of the row.

    Up to NUMBERED_CLASSES classes each cell shows its count; with more (CIFAR-100) the figure grows, the
    labels shrink, and the colour scale is a square root so that the few-percent confusions stay visible.
    """
    from matplotlib.colors import PowerNorm

    plt = pyplot()
    n = len(classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    numbered = n <= NUMBERED_CLASSES
    side = 7 if numbered else min(6 + 0.1 * n, 24)
    fontsize = 10 if numbered else max(4, min(8, 600 / n))
    fig, ax = plt.subplots(figsize=(side, side * 6 / 7 if numbered else side))
    norm = PowerNorm(1 if numbered else 0.5, vmin=0, vmax=1)
    shown = ax.imshow(rates, cmap="Blues", norm=norm, interpolation="nearest")
    if numbered:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    else:
        fig.colorbar(shown, ax=ax, fraction=0.03, pad=0.01, label="share of the true class")
    ax.set_xticks(
        range(n), classes, rotation=45 if numbered else 90, ha="right" if numbered else "center", fontsize=fontsize
    )
    ax.set_yticks(range(n), classes, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} accuracy {accuracy:.2%}".strip())
    fig.tight_layout()
    return fig


def plot_curves(epochs: list[dict], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch from metrics rows (keys: epoch, train_loss, train_acc, val_loss, val_acc)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [row["epoch"] for row in epochs]
    for key, axis in (("loss", left), ("acc", right)):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{key}") for row in epochs]
            if any(v is not None and v == v for v in values):
                axis.plot(x, values, marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.set_ylabel("accuracy" if key == "acc" else "loss")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
        else:  # every value NaN: the run diverged
            axis.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axis.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
