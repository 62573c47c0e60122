"""What every reader returns: one split as plain arrays, ready for the cache writer, and its class lists."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SourceSplit:
    images: np.ndarray  # (N, 32, 32, 3) uint8 RGB
    ids: np.ndarray  # (N,) int64, unique
    labels: np.ndarray | None  # (N,) int64 index into classes; None for an unlabelled split
    bad: np.ndarray  # (N,) bool: undecodable image (its pixels are 0), kept so its id still gets a prediction
    classes: list[str]  # what labels index, in label order
    coarse_classes: list[str] | None = None  # CIFAR-100 with fine labels: the 20 super-classes
    fine_to_coarse: list[int] | None = None  # len(classes) entries: the super-class of each class
    names: list[str] | None = None  # where each image came from in the source (file name or relative path)
    conversions: dict = field(default_factory=dict)  # e.g. {"resized": 3, "gray": 1}

    def __len__(self) -> int:
        return len(self.ids)

    def manifest_fields(self) -> dict:
        """What the cache manifest keeps of this split beside its arrays (cache.write_split(..., **these))."""
        fields = {"labelled": self.labels is not None, "conversions": self.conversions}
        if self.coarse_classes is not None:
            fields.update(coarse_classes=list(self.coarse_classes), fine_to_coarse=list(self.fine_to_coarse))
        return fields


def fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, n_fine: int, source: str) -> list[int]:
    """The super-class of each fine class, from per-image labels; a fine class seen under two is an error."""
    from kagglecifar.errors import KaggleCifarError

    mapping = np.full(n_fine, -1, np.int64)
    mapping[fine] = coarse
    clash = np.flatnonzero(mapping[fine] != coarse)
    if len(clash):
        row = clash[0]
        raise KaggleCifarError(
            f"{source}: fine label {fine[row]} appears under coarse labels {coarse[row]} and "
            f"{mapping[fine[row]]}; the file is inconsistent"
        )
    return mapping.tolist()  # -1 for a fine class no image has
