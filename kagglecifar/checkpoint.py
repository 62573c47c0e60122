"""Checkpoints: written atomically, read with weights_only=True.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
    {"model": str, "model_kwargs": dict, "classes": list[str], "state_dict": dict,
     "epoch": int, "val_accuracy": float | None, "config": dict, ... training state ...}
"""
from __future__ import annotations

from pathlib import Path

import torch

from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_path


def save_checkpoint(payload: dict, path: Path) -> Path:
    """Write to a private temporary file, fsync, then rename over `path`: never a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise KaggleCifarError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise KaggleCifarError(f"{path}: not a readable kagglecifar checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model" not in payload:
        raise KaggleCifarError(f"{path}: not a kagglecifar checkpoint (no model name or state_dict)")
    return payload


def resolve_checkpoint(run_or_file: Path, which: str = "best") -> Path:
    """A checkpoint file as given, or RUN/best.pt (falling back to RUN/last.pt) for a run folder."""
    path = Path(run_or_file)
    if path.is_dir():
        for name in (f"{which}.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise KaggleCifarError(f"{path}: run folder has no {which}.pt or last.pt checkpoint")
    if not path.is_file():
        raise KaggleCifarError(f"{path}: no such run folder or checkpoint file")
    return path
