"""The device a command runs on: `--device` read the same way by train, predict, evaluate and tune."""

from __future__ import annotations

import torch

from kagglecifar.errors import KaggleCifarError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> CUDA, else Apple's MPS, else CPU; an explicit device must exist here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise KaggleCifarError(
                f"--device mps: Apple's MPS is not available here (torch {torch.__version__}); use --device cpu"
            )
        return torch.device("mps")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise KaggleCifarError(f"--device {name}: choose {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise KaggleCifarError(
            f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
        )
    index = int(name[5:]) if name.startswith("cuda:") else local_rank
    if index >= torch.cuda.device_count():
        raise KaggleCifarError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
