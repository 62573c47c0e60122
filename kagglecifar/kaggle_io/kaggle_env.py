"""Running inside a Kaggle notebook: the competition's files are already attached under /kaggle/input (read there,
in place) and only /kaggle/working is writable, so default folders go there.

KAGGLECIFAR_KAGGLE_INPUT and KAGGLECIFAR_KAGGLE_WORKING move both roots (tests use them).
"""

from __future__ import annotations

import os
from pathlib import Path

COMPETITION_FILES = ("train.7z", "test.7z", "trainLabels.csv", "sampleSubmission.csv")


def input_root() -> Path:
    return Path(os.environ.get("KAGGLECIFAR_KAGGLE_INPUT", "/kaggle/input"))


def working_dir() -> Path:
    return Path(os.environ.get("KAGGLECIFAR_KAGGLE_WORKING", "/kaggle/working"))


def on_kaggle() -> bool:
    """A Kaggle notebook sets KAGGLE_KERNEL_RUN_TYPE (Interactive, Batch); its input folder exists."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or input_root().is_dir()


def default_dir(name: str) -> Path:
    """A default output folder: NAME, or WORKING/NAME in a Kaggle notebook (whatever the current folder is)."""
    return working_dir() / name if on_kaggle() else Path(name)


def competition_input(competition: str) -> Path | None:
    """The folder under the input root holding the competition's files (train.7z, trainLabels.csv, ...): the
    competition's own attachment first (INPUT/SLUG, INPUT/competitions/SLUG), else any attached folder two levels
    down that holds them; None when not on Kaggle or nothing is attached."""
    root = input_root()
    if not on_kaggle() or not root.is_dir():
        return None
    candidates = [root / competition, root / "competitions" / competition]
    candidates += sorted(p for p in root.iterdir() if p.is_dir())
    candidates += sorted(q for p in root.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir())
    for folder in candidates:
        if all((folder / name).is_file() for name in COMPETITION_FILES):
            return folder
    return None
