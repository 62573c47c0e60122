"""Training-time augmentation with albumentations 2.0: named presets (PRESETS, each with its one-line
description, which `train --help` and docs/training.md show) or a pipeline saved to a file.

Pipelines work on uint8 HWC RGB images and must give uint8 32x32x3 back: no ToFloat, Normalize or
ToTensorV2 at the end, because batches go to the device as uint8 and become float NCHW in [0, 1]
there, and every model normalises its input itself.

A custom pipeline (`--augment my-aug.json` or `.yaml`) is any albumentations pipeline saved with A.save;
start from a preset, for example:

    python -c "import albumentations as A; from kagglecifar.data.augment import build_pipeline;
               A.save(build_pipeline('strong'), 'my-aug.yaml', data_format='yaml')"

then edit the file. Randomness never comes from global state: each batch reseeds the pipeline from
(seed, epoch, batch number), so a run's augmentations are the same whatever the worker count.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from kagglecifar.errors import KaggleCifarError

PRESETS = {  # name -> what it does; build_pipeline makes each
    "none": "no augmentation",
    "light": "airbench94's: reflect-pad 2, random 32x32 crop, horizontal flip",
    "standard": "the classic CIFAR recipe: reflect-pad 4, random 32x32 crop, horizontal flip",
    "cutout": "airbench96's: standard + one 12x12 hole in every image",
    "strong": "standard + an 8x8 hole at p=0.5, a small affine at p=0.3 and colour jitter at p=0.5",
}


def build_pipeline(spec: str):
    """An albumentations Compose for a preset name or a saved pipeline file; None for "none" (albumentations
    is then skipped entirely: pure tensor batching)."""
    import albumentations as A
    import cv2

    if spec == "none":
        return None

    def pad_crop_flip(pad: int) -> list:
        return [
            A.Pad(padding=pad, border_mode=cv2.BORDER_REFLECT_101),  # numpy's "reflect": edge not repeated
            A.RandomCrop(height=32, width=32),
            A.HorizontalFlip(p=0.5),
        ]

    standard = pad_crop_flip(4)
    if spec == "light":
        return A.Compose(pad_crop_flip(2))
    if spec == "standard":
        return A.Compose(standard)
    if spec == "cutout":
        return A.Compose(
            standard
            + [
                A.CoarseDropout(
                    num_holes_range=(1, 1), hole_height_range=(12, 12), hole_width_range=(12, 12), fill=0, p=1.0
                )
            ]
        )
    if spec == "strong":
        return A.Compose(
            standard
            + [
                A.CoarseDropout(
                    num_holes_range=(1, 1), hole_height_range=(8, 8), hole_width_range=(8, 8), fill=0, p=0.5
                ),
                A.Affine(
                    scale=(0.9, 1.1),
                    translate_percent=(-0.05, 0.05),
                    rotate=(-10, 10),
                    border_mode=cv2.BORDER_REFLECT_101,
                    p=0.3,
                ),
                A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.5),
            ]
        )
    return load_pipeline(Path(spec))


def load_pipeline(path: Path):
    """A pipeline saved with A.save (.json or .yaml/.yml), checked to give uint8 32x32x3 images."""
    import albumentations as A

    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise KaggleCifarError(f"--augment {path}: not a preset ({', '.join(PRESETS)}) nor a .json/.yaml pipeline file")
    if not path.is_file():
        raise KaggleCifarError(f"--augment {path}: no such pipeline file (presets: {', '.join(PRESETS)})")
    try:
        pipeline = A.load(str(path), data_format="json" if suffix == ".json" else "yaml")
    except Exception as exc:  # A.load raises whatever the parser or the transform constructors raise
        raise KaggleCifarError(
            f"{path}: not a readable albumentations pipeline ({type(exc).__name__}: {exc})".replace("\n", " ")
        ) from None
    if not isinstance(pipeline, A.BaseCompose):
        pipeline = A.Compose([pipeline])
    try:
        out = pipeline(image=np.zeros((32, 32, 3), np.uint8))["image"]
    except Exception as exc:
        raise KaggleCifarError(f"{path}: pipeline fails on a 32x32 RGB image ({type(exc).__name__}: {exc})") from None
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != (32, 32, 3):
        raise KaggleCifarError(
            f"{path}: pipeline must return uint8 32x32x3 images (got "
            f"{getattr(out, 'dtype', type(out).__name__)} {tuple(getattr(out, 'shape', ()))}); "
            "drop ToFloat/Normalize/ToTensorV2, the models normalise themselves"
        )
    return pipeline


def augment_batch(pipeline, images: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    """Apply `pipeline` to each image of a uint8 (B, 32, 32, 3) batch; randomness from `seed` only."""
    rng = np.random.default_rng(seed)
    pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = pipeline(image=image)["image"]
    return out
