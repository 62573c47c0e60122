"""The checkpoint contract: what a .pt file holds, writing it atomically, reading it safely, and
rebuilding its model. Train writes checkpoints; predict, evaluate, compare and run only read them here.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so weights_only=True loads it):
    {"model": str, "model_kwargs": dict, "classes": list[str], "state_dict": dict (EMA weights when EMA is on),
     "val_ids": list[int], "epoch": int, "val_accuracy": float | None, "config": dict (TrainConfig.to_dict()),
     "train_state": {...} (last.pt only: what resuming needs)}
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_path


def make_payload(
    *,
    model: str,
    model_kwargs: dict,
    classes: list[str],
    state_dict: dict,
    val_ids: list[int],
    epoch: int,
    val_accuracy: float | None,
    config: dict,
    train_state: dict | None = None,
) -> dict:
    payload = {
        "model": model,
        "model_kwargs": dict(model_kwargs),
        "classes": list(classes),
        "state_dict": state_dict,
        "val_ids": list(val_ids),
        "epoch": epoch,
        "val_accuracy": val_accuracy,
        "config": config,
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return payload


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
    except pickle.UnpicklingError:
        # weights_only refused something that is not plain data: possibly code. Never suggest loading it anyway.
        raise KaggleCifarError(
            f"{path}: not a safe checkpoint (it holds objects other than tensors and plain data); it will not be loaded"
        ) from None
    except Exception as exc:  # torch raises many types for damaged or foreign files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise KaggleCifarError(
            f"{path}: not a readable kagglecifar checkpoint ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "model" not in payload:
        raise KaggleCifarError(f"{path}: not a kagglecifar checkpoint (no model name or state_dict)")
    problem = _payload_problem(payload)
    if problem:
        raise KaggleCifarError(f"{path}: damaged kagglecifar checkpoint ({problem})")
    return payload


def _payload_problem(payload: dict) -> str | None:
    """What train writes: a model name, its options, a non-empty list of distinct class names, tensors."""
    classes = payload.get("classes")
    if not isinstance(payload["model"], str):
        return "the model name is not text"
    if not isinstance(payload.get("model_kwargs", {}), dict) or not all(
        isinstance(k, str) for k in payload.get("model_kwargs", {})
    ):
        return "its model options are not a mapping"
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "no list of class names"
    if len(set(classes)) != len(classes):
        return "its class names repeat"
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "its state_dict is not a mapping of tensors"
    return None


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


def build_model(payload: dict, path: Path | str = "checkpoint") -> nn.Module:
    """The checkpoint's model with its weights, on the CPU, in eval mode.

    A model that downloads pretrained weights (resnet50-imagenet) is rebuilt with weights=None: its
    weights come from the state_dict, so no network is needed.
    """
    from kagglecifar import models

    kwargs = dict(payload.get("model_kwargs", {}))
    if "weights" in models.model_options(payload["model"]):
        kwargs["weights"] = None
    try:
        model = models.create_model(payload["model"], num_classes=len(payload["classes"]), **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # options of the wrong type or out of range
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KaggleCifarError(f"{path}: its model options do not build {payload['model']!r} ({first[:120]})") from None
    except KaggleCifarError as exc:
        raise KaggleCifarError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise KaggleCifarError(f"{path}: weights do not fit model {payload['model']!r} ({first})") from None
    return model.eval()


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, the checkpoint) for a run folder or checkpoint file."""
    path = resolve_checkpoint(path)
    payload = load_checkpoint(path)
    model = build_model(payload, path).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, payload
