"""kagglecifar: fetch, train, predict and submit for Kaggle's CIFAR-10 competition.

In Python (a notebook): kagglecifar.fetch(), kagglecifar.train(...), predict, evaluate, submit, run (see
kagglecifar.api); they are imported on first use, so `import kagglecifar` stays light.
"""

import os

# albumentations otherwise asks its registry for a newer version on every import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it (dynamic version)

API = ("fetch", "train", "predict", "evaluate", "submit", "run")
__all__ = [*API, "KaggleCifarError"]


def __getattr__(name: str):
    # Re-exported on first use: the API sits on top of every stage, which themselves import this package (for
    # __version__), so the package does not import the API at import time.
    if name in API:
        import importlib

        return getattr(importlib.import_module("kagglecifar.api"), name)
    if name == "KaggleCifarError":
        from kagglecifar.errors import KaggleCifarError

        return KaggleCifarError
    raise AttributeError(f"module 'kagglecifar' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
