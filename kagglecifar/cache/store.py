"""The image cache's format, and reading it back: what `fetch` builds and training and prediction read.

Layout, one folder per split under DATA_DIR/cache/:

    cache/train/images.npy    (N, 32, 32, 3) uint8, RGB, row order = ascending id
    cache/train/ids.npy       (N,) int64
    cache/train/labels.npy    (N,) int64, index into manifest["classes"]   (train only)
    cache/train/bad.npy       (N,) bool, True where the image could not be decoded (pixels are 0)
    cache/train/manifest.json counts, class names, source archive sizes and checksums
                              (sources other than the competition's: cache/sources.py adds what it records)

A split folder only ever appears under its final name once every file in it is written
(it is built in a hidden ".NAME.partial-PID" sibling and renamed), so a folder that exists is complete.
Reading needs numpy only: no archive library, no threads, no processes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecifar.errors import KaggleCifarError

CACHE_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)
ROW_BYTES = 32 * 32 * 3
SPLITS = ("train", "test")


@dataclass
class ImageSet:
    """One split of the cache, memory-mapped."""

    images: np.ndarray  # (N, 32, 32, 3) uint8 RGB
    ids: np.ndarray  # (N,) int64, ascending
    labels: np.ndarray | None  # (N,) int64 class index; None for the test split
    bad: np.ndarray  # (N,) bool: undecodable image, kept so its id still gets a prediction
    classes: list[str]
    manifest: dict

    def __len__(self) -> int:
        return len(self.ids)


def split_dir(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "cache" / split


def is_complete(data_dir: Path, split: str) -> bool:
    return (split_dir(data_dir, split) / "manifest.json").is_file()


def read_manifest(data_dir: Path, split: str) -> dict:
    path = split_dir(data_dir, split) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise KaggleCifarError(f"{path}: no {split} cache here; run `kagglecifar fetch` first") from None
    except (OSError, ValueError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise KaggleCifarError(
            f"{path}: unreadable cache manifest ({first}); run `kagglecifar fetch --force`"
        ) from None
    classes = manifest.get("classes") if isinstance(manifest, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise KaggleCifarError(f"{path}: damaged cache manifest (no list of classes); run `kagglecifar fetch --force`")
    return manifest


def labelled_classes(data_dir: Path, split: str = "train") -> list[str]:
    """The class names of a split that training can use: it has labels and at least two classes."""
    manifest = read_manifest(data_dir, split)
    folder = split_dir(data_dir, split)
    if manifest.get("labelled") is False or not (folder / "labels.npy").is_file():
        raise KaggleCifarError(
            f"{folder}: the {split} images have no labels, so no model can learn from them; "
            "fetch a source whose training images are labelled (train/CLASS/ folders, CIFAR "
            "python data, or train.7z with trainLabels.csv)"
        )
    classes = list(manifest.get("classes") or [])
    if len(classes) < 2:
        raise KaggleCifarError(f"{folder}: {len(classes)} class ({', '.join(classes)}); a classifier needs two or more")
    return classes


def load_split(data_dir: Path, split: str, mmap: bool = True) -> ImageSet:
    """Open a split of the cache; images stay on disk (memory map) unless mmap=False."""
    manifest = read_manifest(data_dir, split)
    folder = split_dir(data_dir, split)
    try:
        images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
        ids = np.load(folder / "ids.npy")
        bad = np.load(folder / "bad.npy")
        labels = np.load(folder / "labels.npy") if (folder / "labels.npy").exists() else None
    except (OSError, ValueError) as exc:
        raise KaggleCifarError(f"{folder}: damaged cache ({exc}); run `kagglecifar fetch --force`") from None
    if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8 or len(images) != len(ids) != len(bad):
        raise KaggleCifarError(f"{folder}: cache arrays do not match; run `kagglecifar fetch --force`")
    return ImageSet(images, ids, labels, bad, list(manifest["classes"]), manifest)


class SplitWriter:
    """Builds one split folder privately, then publishes it with a rename.

        with SplitWriter(data_dir, "test", count) as w:
            w.images[row] = ...; w.ids[row] = ...; w.bad[row] = ...
            w.finish(manifest)          # without finish() nothing is published

    With mmap=False, images.npy is written with os.pwrite at images_offset + row * ROW_BYTES through
    images_fd instead (the builder does: written pages then count as the file's, not as our memory).
    """

    def __init__(self, data_dir: Path, split: str, count: int, with_labels: bool = False, mmap: bool = True):
        self.final = split_dir(data_dir, split)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.final.parent / f".{split}.partial-{os.getpid()}"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir()
        self.images_path = self.partial / "images.npy"
        self.images_fd = None
        self.done = False
        try:
            images = np.lib.format.open_memmap(self.images_path, "w+", np.uint8, (count, *IMAGE_SHAPE))
            self.images, self.images_offset = images, images.offset
            if not mmap:
                del images, self.images
                self.images_fd = os.open(self.images_path, os.O_RDWR)
                reserve_disk_space(self.images_fd)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.ids = np.zeros(count, np.int64)
        self.bad = np.zeros(count, bool)
        self.labels = np.zeros(count, np.int64) if with_labels else None

    def __enter__(self) -> SplitWriter:
        return self

    def finish(self, manifest: dict) -> Path:
        self._close_images(sync=True)
        np.save(self.partial / "ids.npy", self.ids)
        np.save(self.partial / "bad.npy", self.bad)
        if self.labels is not None:
            np.save(self.partial / "labels.npy", self.labels)
        manifest = {"version": CACHE_VERSION, "count": len(self.ids), "bad": int(self.bad.sum()), **manifest}
        (self.partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        fsync_dir(self.partial)
        publish(self.partial, self.final)
        self.done = True
        return self.final

    def _close_images(self, sync: bool) -> None:
        if hasattr(self, "images"):
            if sync:
                self.images.flush()
            del self.images  # close the memory map before the folder moves
        if self.images_fd is not None:
            fd, self.images_fd = self.images_fd, None
            try:
                if sync:
                    os.fsync(fd)
                    if os.fstat(fd).st_nlink == 0:  # someone removed it while we wrote: publish nothing
                        raise FileNotFoundError(errno.ENOENT, "removed before it was complete", str(self.images_path))
            finally:
                os.close(fd)

    def __exit__(self, *exc_info) -> None:
        if not self.done:
            self._close_images(sync=False)
            shutil.rmtree(self.partial, ignore_errors=True)


def write_split(
    data_dir: Path, split: str, images: np.ndarray, ids, classes: list[str], labels=None, bad=None, **manifest
) -> Path:
    """Write a whole split from in-memory arrays (small data and tests)."""
    ids = np.asarray(ids, np.int64)
    order = np.argsort(ids, kind="stable")
    with SplitWriter(data_dir, split, len(ids), with_labels=labels is not None) as w:
        w.images[:] = np.asarray(images, np.uint8)[order]
        w.ids[:] = ids[order]
        if bad is not None:
            w.bad[:] = np.asarray(bad, bool)[order]
        if labels is not None:
            w.labels[:] = np.asarray(labels, np.int64)[order]
        return w.finish({"classes": list(classes), **manifest})


def publish(partial: Path, final: Path) -> None:
    """Rename a finished private folder to its final name; an older one is moved aside first, then dropped."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    fsync_dir(final.parent)


def reserve_disk_space(fd: int) -> None:
    """Allocate the file's blocks now: a full disk then fails here, before any work is done."""
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale(folder: Path, prefixes: list[str]) -> None:
    """Drop half-built folders left by runs that died; those of another run still going are left alone."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        prefix = next((p for p in prefixes if path.name.startswith(p)), None)
        if prefix is None:
            continue
        pid = path.name[len(prefix) :]
        if pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True
