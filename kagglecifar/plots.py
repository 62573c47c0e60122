"""PNG figures: training curves and confusion matrices (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(np.asarray(labels) * num_classes + np.asarray(predictions),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_confusion_matrix(counts: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} accuracy {accuracy:.2%}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_curves(epochs: list[dict], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch from metrics rows (keys: epoch, train_loss, train_acc, val_loss, val_acc)."""
    plt = _pyplot()
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
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
