"""Albumentations pipelines run as batched tensor ops on the training device, every sample drawn apart.

    engine = compile_pipeline(build_pipeline("standard"))   # a BatchAugment, or a str: why not
    out = engine(images, seed=(run seed, epoch, step))      # uint8 (B, H, W, C) in, uint8 NHWC out

Images are uint8 NHWC tensors (the layout of the cache and of data.TrainLoader's batches) on any
device; one call augments the whole batch with a few gathers and masked selects, parameters drawn per
sample from a torch.Generator on the images' device, seeded from `seed` alone: the same (seed, epoch,
step) gives the same batch on the same device type, so a resumed run repeats its augmentation.

What has a batched equivalent, with albumentations 2.0.8's probabilities, parameter ranges and
uint8 pixel arithmetic (pixel-identical for the same parameters; tests/test_batch_augment.py):

    Pad             any padding, border modes constant / reflect_101 / reflect / replicate / wrap
    RandomCrop      a per-sample offset; after a Pad: per-sample translation, fused into one gather
    HorizontalFlip, VerticalFlip
    CoarseDropout   holes of a per-sample count and size; fill a value, per-channel values, "random"
                    or "random_uniform"
    ColorJitter     brightness, contrast, saturation in a per-sample random order; hue must be 0
    NoOp

Anything else (Affine, Rotate, a OneOf, ...) makes compile_pipeline return the reason as one line,
and training keeps albumentations in CPU workers. The random numbers are torch's, not numpy's, so a
batch is not the one albumentations would draw: the distributions are the same, the streams are not.
"""

from __future__ import annotations

import numpy as np
import torch

from kagglecifar.data.batch_ops import BORDER_NAMES, CONSTANT, Dropout, Flip, Geometry, Jitter, PadCrop, seed_generator

# --- the engine -----------------------------------------------------------------------------------


class BatchAugment:
    """A compiled pipeline: `engine(images, seed)` augments a uint8 NHWC batch on its own device."""

    def __init__(self, steps: list, size: tuple[int, int]):
        self.steps, self.size = steps, size

    def sample(self, n: int, seed, device) -> list[dict]:
        """Every step's parameters for a batch of n, drawn from `seed` alone."""
        g = seed_generator(seed, device)
        params, size = [], self.size
        for step in self.steps:
            params.append(step.sample(n, size, g, device))
            size = step.output_size(size) if isinstance(step, PadCrop) else size
        return params

    def apply(self, images: torch.Tensor, params: list[dict]) -> torch.Tensor:
        geometry = None  # pads, crops and flips not yet done: done together, by one gather
        for step, p in zip(self.steps, params):
            if isinstance(step, (PadCrop, Flip)):
                if geometry is None:
                    geometry = Geometry.identity(len(images), images.shape[1:3], images.device)
                elif isinstance(step, PadCrop) and step.mode == CONSTANT and geometry.fill not in (None, step.fill):
                    images, geometry = geometry.gather(images), None  # two different fills: one at a time
                    geometry = Geometry.identity(len(images), images.shape[1:3], images.device)
                geometry = step.compose(geometry, p)
                continue
            if geometry is not None:
                images, geometry = geometry.gather(images), None
            images = step.apply(images, p)
        return images if geometry is None else geometry.gather(images)

    def __call__(self, images: torch.Tensor, seed, flip: torch.Tensor | None = None) -> torch.Tensor:
        """Augment uint8 (B, H, W, C) images; `flip` (B,) bool, if given, replaces HorizontalFlip's draw."""
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:3]) != self.size:
            raise ValueError(
                f"expected uint8 (B, {self.size[0]}, {self.size[1]}, C) images, got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        params = self.sample(len(images), seed, images.device)
        if flip is not None:
            for step, p in zip(self.steps, params):
                if isinstance(step, Flip) and step.dim == 2:
                    p["flip"] = flip.to(images.device)
        return self.apply(images, params)

    @property
    def horizontal_flip_p(self) -> float | None:
        """p of the pipeline's HorizontalFlip (None without one): alternating flips replace it when 0.5."""
        flips = [s.p for s in self.steps if isinstance(s, Flip) and s.dim == 2]
        return flips[0] if len(flips) == 1 else None

    def describe(self) -> str:
        return " + ".join(s.name for s in self.steps) or "nothing"


def compile_pipeline(pipeline, image_size: tuple[int, int] = (32, 32)) -> BatchAugment | str:
    """A BatchAugment doing what `pipeline` (an A.Compose, a transform, or None) does, or the reason it
    cannot, as one line naming the transform (for the message of the fallback to CPU workers)."""
    import albumentations as A

    if pipeline is None:
        return BatchAugment([], image_size)
    if isinstance(pipeline, A.BaseCompose):
        if type(pipeline) is not A.Compose:
            return f"{type(pipeline).__name__} has no batched equivalent"
        if pipeline.p < 1:
            return f"Compose with p={pipeline.p} has no batched equivalent"
        transforms = list(pipeline.transforms)
    else:
        transforms = [pipeline]
    steps: list[PadCrop | Flip | Dropout | Jitter] = []
    size: tuple[int, int] = (image_size[0], image_size[1])
    i = 0
    while i < len(transforms):
        t = transforms[i]
        name = type(t).__name__
        if isinstance(t, A.BaseCompose):
            return f"{name} (a nested composition) has no batched equivalent"
        if name == "NoOp":
            i += 1
            continue
        if name == "Pad":
            step = _pad_step(t)
            if isinstance(step, str):
                return step
            after = transforms[i + 1] if i + 1 < len(transforms) else None
            if type(after).__name__ == "RandomCrop":
                crop = _crop_size(after, step.output_size(size))
                if isinstance(crop, str):
                    return crop
                step.crop, step.name = crop, "Pad + RandomCrop"
                i += 1
            elif step.pad_p < 1:
                return f"Pad with p={step.pad_p} and no RandomCrop after it gives images of two sizes"
            steps.append(step)
        elif name == "RandomCrop":
            crop = _crop_size(t, size)
            if isinstance(crop, str):
                return crop
            steps.append(PadCrop(crop=crop, name="RandomCrop"))
        elif name in ("HorizontalFlip", "VerticalFlip"):
            steps.append(Flip(t.p, 2 if name == "HorizontalFlip" else 1, name))
        elif name == "CoarseDropout":
            dropout = _dropout_step(t)
            if isinstance(dropout, str):
                return dropout
            steps.append(dropout)
        elif name == "ColorJitter":
            if tuple(t.hue) != (0, 0):
                return f"ColorJitter with hue={tuple(t.hue)} has no batched equivalent (use hue=0)"
            steps.append(Jitter(tuple(t.brightness), tuple(t.contrast), tuple(t.saturation), t.p))
        else:
            return f"{name} has no batched equivalent"
        size = steps[-1].output_size(size) if steps and isinstance(steps[-1], PadCrop) else size
        i += 1
    return BatchAugment(steps, (image_size[0], image_size[1]))


def _pad_step(t) -> PadCrop | str:
    if t.border_mode not in BORDER_NAMES:
        return f"Pad with border_mode={t.border_mode} has no batched equivalent"
    padding = t.padding
    if isinstance(padding, (int, float)):
        pad = (int(padding),) * 4
    elif len(padding) == 2:
        pad = (int(padding[1]), int(padding[1]), int(padding[0]), int(padding[0]))
    else:  # albumentations: (left, top, right, bottom)
        pad = (int(padding[1]), int(padding[3]), int(padding[0]), int(padding[2]))
    values = np.atleast_1d(np.asarray(t.fill, dtype=np.float64))
    if not np.isfinite(values).all():
        return f"Pad with fill={t.fill} has no batched equivalent"
    # cv2.copyMakeBorder saturates the fill to uint8, rounding half to even.
    fill = tuple(int(v) for v in np.clip(np.rint(values), 0, 255))
    if len(fill) not in (1, 3):
        return f"Pad with fill={t.fill} has no batched equivalent (give one value or three)"
    return PadCrop(pad=pad, mode=t.border_mode, fill=fill, pad_p=t.p, name="Pad")


def _crop_size(t, size) -> tuple[int, int] | str:
    if t.p < 1 and (t.height, t.width) != tuple(size):
        return f"RandomCrop with p={t.p} gives images of two sizes"
    if t.height > size[0] or t.width > size[1]:
        return f"RandomCrop to {t.height}x{t.width} of a {size[0]}x{size[1]} image has no batched equivalent"
    return (t.height, t.width)


def _dropout_step(t) -> Dropout | str:
    fill = t.fill
    if isinstance(fill, str):
        if fill not in ("random", "random_uniform"):
            return f"CoarseDropout with fill={fill!r} has no batched equivalent"
    else:
        values = np.atleast_1d(np.array(fill, dtype=np.uint8))  # albumentations' own conversion
        if len(values) not in (1, 3):
            return f"CoarseDropout with fill={fill} has no batched equivalent (give one value or three)"
        fill = tuple(int(v) for v in values)
    return Dropout(tuple(t.num_holes_range), tuple(t.hole_height_range), tuple(t.hole_width_range), fill, t.p)
