"""Training batches that never leave the device: the train split sits there as one uint8 tensor, a batch is
an index slice of it, and a compiled albumentations pipeline (batch_augment) augments it in place.

    loader, line = choose_loader(images, labels, augment="standard", batch_size=512, seed=0, device=device)
    for images, labels in loader.epoch(epoch, start=step):   # uint8 NHWC on `device`, augmented
        x = to_model_input(images, device, channels_last)     # float NCHW in [0, 1], as for data.TrainLoader

The batch order is data.EpochBatches' (seed, epoch, rank, world size), the same as the CPU-worker
loader's, and the augmentation is seeded by (seed, epoch, batch number[, rank]): an epoch depends on
nothing else, so a run resumed at any step sees the batches an uninterrupted one would (on the same
device type). With `alternate_flip` (airbench) each image gets one random flip for the whole run and
every odd epoch mirrors it, instead of a fresh coin per epoch; it replaces a HorizontalFlip(p=0.5).
"""

from __future__ import annotations

import numpy as np
import torch

from kagglecifar.data.augment import build_pipeline
from kagglecifar.data.batch_augment import BatchAugment, compile_pipeline, seed_generator
from kagglecifar.data.loading import EpochBatches, TrainLoader

FLIP_STREAM = 0x5F11D  # a fixed extra seed word: the per-image flips are a stream of their own


class DeviceLoader:
    """Same interface as data.TrainLoader: len() = batches per epoch, epoch(e, start) yields (images, labels)
    as uint8 (B, H, W, C) and int64 (B,) tensors on `device`."""

    def __init__(
        self,
        images,
        labels,
        *,
        engine: BatchAugment,
        batch_size: int,
        seed: int,
        device="cpu",
        rank: int = 0,
        world_size: int = 1,
        alternate_flip: bool = False,
    ):
        self.sampler = EpochBatches(len(images), batch_size, seed, rank, world_size)
        self.images = torch.as_tensor(images).to(device)
        self.labels = torch.as_tensor(labels).to(device)
        self.engine, self.seed, self.device = engine, seed, torch.device(device)
        self.rank = (rank,) if world_size > 1 else ()  # ranks augment differently; one process as before
        self.base_flips = None
        if alternate_flip and engine.horizontal_flip_p == 0.5:
            # Drawn on the CPU for every image of the split: the same on every rank and device type.
            draw = torch.rand(len(images), generator=seed_generator((seed, FLIP_STREAM), "cpu"))
            self.base_flips = (draw < 0.5).to(self.device)

    def __len__(self) -> int:
        return self.sampler.batches

    def epoch(self, epoch: int, start: int = 0):
        self.sampler.set_epoch(epoch, start)
        # One copy of the epoch's order to the device, then slices: no host-to-device copy per batch.
        order = torch.tensor(list(self.sampler.rows), device=self.device)
        size = self.sampler.batch_size
        for number in range(start, self.sampler.batches):
            rows = order[number * size : (number + 1) * size]
            flips = None
            if self.base_flips is not None:
                flips = self.base_flips[rows] ^ bool(epoch % 2)
            images = self.engine(self.images[rows], (self.seed, epoch, number, *self.rank), flip=flips)
            yield images, self.labels[rows]


def choose_loader(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    augment: str,
    batch_size: int,
    seed: int,
    device="cpu",
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    alternate_flip: bool = False,
    batched: bool = True,
):
    """(loader, one line saying where augmentation runs and, on a fallback, which transform forced it).

    The batched DeviceLoader whenever the pipeline compiles (and `batched`); otherwise data.TrainLoader
    with albumentations in `workers` CPU processes.
    """
    pipeline = build_pipeline(augment)
    engine = compile_pipeline(pipeline) if batched else "batched augmentation is switched off"
    if isinstance(engine, BatchAugment):
        loader = DeviceLoader(
            images,
            labels,
            engine=engine,
            batch_size=batch_size,
            seed=seed,
            device=device,
            rank=rank,
            world_size=world_size,
            alternate_flip=alternate_flip,
        )
        flips = ", alternating flips" if loader.base_flips is not None else ""
        return loader, f"augmentation: batched on {torch.device(device).type} ({engine.describe()}{flips})"
    fallback = TrainLoader(
        images,
        labels,
        augment=augment,
        batch_size=batch_size,
        seed=seed,
        workers=workers,
        device=device,
        rank=rank,
        world_size=world_size,
    )
    return fallback, (f"augmentation: albumentations in {workers} CPU worker(s), not batched on the device: {engine}")
