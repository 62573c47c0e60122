"""kagglecifar: fetch, train, predict and submit for Kaggle's CIFAR-10 competition.

In Python (a notebook): kagglecifar.fetch(), kagglecifar.train(...), predict, evaluate, submit, run (see
kagglecifar.api); they are imported on first use, so `import kagglecifar` stays light.
"""

import os

# albumentations otherwise asks its registry for a newer version on every import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

API = ("fetch", "train", "predict", "evaluate", "submit", "run")
__all__ = [*API, "KaggleCifarError"]


def __getattr__(name: str):
    if name in API:
        from kagglecifar import api

        return getattr(api, name)
    if name == "KaggleCifarError":
        from kagglecifar.errors import KaggleCifarError

        return KaggleCifarError
    raise AttributeError(f"module 'kagglecifar' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
