"""kagglecifar: fetch, train, predict and submit for Kaggle's CIFAR-10 competition."""

import os

# albumentations otherwise asks its registry for a newer version on every import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it (dynamic version)
