"""Pretrained weights for timm/NAME models: from the Hugging Face cache (downloaded when allowed) or from a file
on disk (a state dict .pt/.pth, a .safetensors file, or a timm checkpoint dict holding 'state_dict' or 'model').

The classifier is the one part allowed not to fit: it is replaced for the dataset's classes. Any other missing,
unexpected or differently shaped tensor means the file belongs to another model: one line names the file and
the first keys that do not fit.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from kagglecifar.errors import KaggleCifarError

SHOWN_KEYS = 3  # how many mismatching keys an error names


def hub_weights_file(arch: str) -> tuple[Path, str]:
    """(the cached weights file, its hub id) for timm's pretrained tag of `arch`, downloading it when allowed."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise KaggleCifarError(
            f"model 'timm/{arch}': timm knows no Hugging Face weights for it; pass --pretrained PATH to a weights "
            "file, or --pretrained none to train from scratch"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    try:
        try:
            return Path(hf_hub_download(hub_id, "model.safetensors")), hub_id
        except EntryNotFoundError as exc:  # older repositories hold only pytorch_model.bin
            if isinstance(exc, LocalEntryNotFoundError):  # not cached and no hub: asking again only waits again
                raise
            return Path(hf_hub_download(hub_id, "pytorch_model.bin")), hub_id
    except Exception as exc:  # offline, no network, proxy, disk: the fix is the same
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the hub is unreachable: {type(exc).__name__}"
        raise KaggleCifarError(
            f"model 'timm/{arch}': pretrained weights {hub_id} are not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and cannot be downloaded ({why}); pass --pretrained PATH to a weights "
            f"file (.safetensors/.pth, e.g. a Kaggle dataset), pre-download them where there is network with "
            f"`hf download {hub_id}`, or train from scratch with --pretrained none"
        ) from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or torch.load(weights_only=True) of a state dict or a
    checkpoint dict holding one under 'state_dict' or 'model'."""
    path = Path(path)
    where = f"--pretrained {path}"
    if not path.is_file():
        raise KaggleCifarError(f"{where}: no such weights file (or use --pretrained hub or none)")
    try:
        state: Any
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals, damaged files, foreign formats
        if isinstance(exc, pickle.UnpicklingError):  # weights_only refused it: never suggest loading it anyway
            why = "not a torch.save file of tensors and plain data"
        else:
            why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}" if str(exc).strip() else ""
        raise KaggleCifarError(
            f"{where}: not a readable weights file ({why or type(exc).__name__}); expected a state dict "
            "(.pt/.pth saved with torch.save) or a .safetensors file"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KaggleCifarError(f"{where}: holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP wrapper


def load_into(backbone: Any, state: dict[str, torch.Tensor], source: str, arch: str) -> str:
    """Load `state` into the timm model; returns the line that says what was loaded."""
    own = backbone.state_dict()
    classifier = backbone.pretrained_cfg.get("classifier") or ""
    classifier_names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    is_head = lambda key: any(key.startswith(f"{c}.") for c in classifier_names if c)  # noqa: E731
    state = dict(state)
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = resized_pos_embed(backbone, state["pos_embed"])
    dropped = [k for k in state if is_head(k) and (k not in own or state[k].shape != own[k].shape)]
    for key in dropped:
        del state[key]
    optional = lambda key: key.endswith("num_batches_tracked")  # noqa: E731  absent from older checkpoints
    problems = [f"{k} (not in the model)" for k in state if k not in own]
    problems += [
        f"{k} ({tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model)"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    missing = [k for k in own if k not in state and not is_head(k) and not optional(k)]
    problems += [f"{k} (missing from the file)" for k in missing]
    if problems:
        raise KaggleCifarError(
            f"--pretrained {source}: does not fit model 'timm/{arch}' ({len(problems)} mismatching tensors, "
            f"first: {'; '.join(problems[:SHOWN_KEYS])})"
        )
    backbone.load_state_dict(state, strict=False)
    new = [k for k in own if k not in state and not optional(k)]
    line = f"timm/{arch}: loaded {len(state)} of {len(own)} tensors from {source}"
    if new:
        shown = ", ".join(new[:SHOWN_KEYS]) + (", ..." if len(new) > SHOWN_KEYS else "")
        line += f"; {len(new)} new: {shown}" + (" (the classifier, for this dataset's classes)" if dropped else "")
    elif dropped:
        line += f"; the file's classifier ({', '.join(dropped)}) not used"
    return line


def resized_pos_embed(backbone: Any, pos_embed: torch.Tensor) -> torch.Tensor:
    """A ViT's position embedding resampled to the model's patch grid (trained at another image size)."""
    from timm.layers import resample_abs_pos_embed

    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if grid is None:
        return pos_embed  # not a ViT: the shape check reports it
    prefix = 0 if getattr(backbone, "no_embed_class", False) else getattr(backbone, "num_prefix_tokens", 1)
    return resample_abs_pos_embed(pos_embed, new_size=list(grid), num_prefix_tokens=prefix)
