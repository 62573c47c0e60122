"""Training data: a seeded stratified split of the train cache, held in memory as uint8, served in batches.

Batches leave here as uint8 NHWC tensors; `models.to_model_input` turns them into float NCHW in [0, 1] on the
device (4x less to copy than float, and the conversion runs on the GPU). Augmentation runs in DataLoader
workers one whole batch at a time, reseeded from (seed, epoch, batch number), and the batch order comes
from a DistributedSampler seeded by (seed, epoch): an epoch's batches depend on nothing else, so a run
resumed at any step sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from kagglecifar import cache
from kagglecifar.data.augment import augment_batch, build_pipeline


@dataclass
class TrainData:
    train_images: np.ndarray  # (N, 32, 32, 3) uint8, in memory
    train_labels: np.ndarray  # (N,) int64
    val_images: np.ndarray
    val_labels: np.ndarray
    val_ids: np.ndarray  # train-split ids of the validation images
    classes: list[str]
    excluded_bad: int  # undecodable images left out of both parts

    def unvalidated_classes(self) -> list[str]:
        """Classes too small for the validation split (split_rows keeps their images for training)."""
        trained, validated = set(self.train_labels.tolist()), set(self.val_labels.tolist())
        return [self.classes[c] for c in sorted(trained - validated)]

    def unvalidated_note(self, val_fraction: float) -> str:
        missing = self.unvalidated_classes()
        return (
            f"{len(missing)} of {len(self.classes)} classes have too few images for a validation share of "
            f"{val_fraction:g} (e.g. {', '.join(missing[:3])}): their validation accuracy is not measured"
        )


def split_rows(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): `val_fraction` of every class, chosen with `seed`; both sorted.

    Any share above 0 gives each class one validation image at least, so that a small share of a small
    dataset still validates; a class always keeps one training image (a class of one has none for validation)."""
    rng = np.random.default_rng(seed)
    parts = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        wanted = max(1, round(len(rows) * val_fraction)) if val_fraction > 0 else 0
        parts.append(rng.permutation(rows)[: min(wanted, len(rows) - 1)])
    val = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), val), val


def load_train_data(data_dir: Path, val_fraction: float, seed: int) -> TrainData:
    """The train cache split into train/validation parts, copied into memory; bad rows excluded."""
    split = cache.load_split(data_dir, "train")
    good = np.flatnonzero(~split.bad)
    train_rows, val_rows = split_rows(split.labels[good], val_fraction, seed)
    train_rows, val_rows = good[train_rows], good[val_rows]
    return TrainData(
        train_images=np.ascontiguousarray(split.images[train_rows]),
        train_labels=split.labels[train_rows].copy(),
        val_images=np.ascontiguousarray(split.images[val_rows]),
        val_labels=split.labels[val_rows].copy(),
        val_ids=split.ids[val_rows].copy(),
        classes=split.classes,
        excluded_bad=int(split.bad.sum()),
    )


class EpochBatches(Sampler):
    """Yields (epoch, batch number, row indices) for one epoch of this rank's share of the data."""

    def __init__(self, count: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        rows = cast(Dataset, range(count))  # the sampler only reads its length
        self.rows: DistributedSampler[int] = DistributedSampler(
            rows, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        self.batch_size = batch_size
        per_rank = self.rows.num_samples
        # A last short batch is dropped (a batch of one breaks BatchNorm) unless it is the only one.
        self.batches = max(1, per_rank // batch_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.rows.set_epoch(epoch)

    def __len__(self) -> int:
        return self.batches - self.start

    def __iter__(self):
        rows = list(self.rows)
        for number in range(self.start, self.batches):
            yield self.epoch, number, rows[number * self.batch_size : (number + 1) * self.batch_size]


class AugmentedBatches(Dataset):
    """Item (epoch, number, rows) -> (uint8 images (B, 32, 32, 3), int64 labels), augmented."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, pipeline, seed: int):
        self.images, self.labels, self.pipeline, self.seed = images, labels, pipeline, seed

    def __getitem__(self, item):
        epoch, number, rows = item
        batch = self.images[rows]
        if self.pipeline is not None:
            batch = augment_batch(self.pipeline, batch, (self.seed, epoch, number))
        return torch.from_numpy(batch), torch.from_numpy(self.labels[rows])


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; the trainer handles it, workers must keep serving.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainLoader:
    """Training batches one epoch at a time: `for images, labels in loader.epoch(e, start=k)`.

    Preset "none" skips albumentations and workers: batches are slices of one uint8 tensor kept on the
    training device. Otherwise a DataLoader with persistent workers augments whole batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        augment: str,
        batch_size: int,
        seed: int,
        workers: int = 0,
        device: str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 4,
    ):
        self.sampler = EpochBatches(len(images), batch_size, seed, rank, world_size)
        pipeline = build_pipeline(augment)
        self.on_device = None
        if pipeline is None:
            self.on_device = (torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device))
            return
        self.loader = DataLoader(
            AugmentedBatches(images, labels, pipeline, seed),
            batch_size=None,
            sampler=self.sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=prefetch if workers else None,
            pin_memory=str(device).startswith("cuda"),
            worker_init_fn=_ignore_sigint if workers else None,
            generator=torch.Generator(),  # else every epoch's iterator draws from the global torch RNG
        )

    def __len__(self) -> int:
        return self.sampler.batches

    def epoch(self, epoch: int, start: int = 0):
        self.sampler.set_epoch(epoch, start)
        if self.on_device is None:
            return iter(self.loader)
        return self._on_device_batches()

    def _on_device_batches(self):
        images, labels = self.on_device
        for _, _, rows in self.sampler:
            rows = torch.tensor(rows, device=images.device)
            yield images[rows], labels[rows]
