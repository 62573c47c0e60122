"""The shapes CIFAR data comes in, recognised from what is there, and read into plain arrays (SourceSplit).

    competition   train.7z + trainLabels.csv (Kaggle's CIFAR-10 competition; the cache builder streams those)
    cifar-python  cifar-10/100-python.tar.gz, or its extracted folder (cifar_python.py)
    image-folder  train/CLASS/*.png|jpg, optional test/ (image_folder.py)

A path may be the source itself or a folder holding it up to two levels down, as a downloaded Kaggle
dataset does (DATASET/cifar-100-python/train, DATASET/cifar10/train/cat/...).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kagglecifar.cache.formats.cifar_python import MEMBER_NAMES, is_archive, kind_of, read_cifar_python
from kagglecifar.cache.formats.image_folder import is_image_folder, read_image_folder
from kagglecifar.cache.formats.source_split import SourceSplit
from kagglecifar.errors import KaggleCifarError

FORMATS = ("competition", "cifar-python", "image-folder")
SEARCH_DEPTH = 2
PEEK_MEMBERS = 64  # an archive whose first members are not CIFAR files is not looked at further
LOOKED_FOR = (
    "train.7z + trainLabels.csv (competition); cifar-10/100 python data: data_batch_1..5 + batches.meta, "
    "train + test + meta, or a .tar.gz of them (cifar-python); train/CLASS/*.png|jpg (image-folder)"
)

__all__ = ["FORMATS", "Found", "SourceSplit", "detect_format", "locate", "read_source", "source_stamp"]


@dataclass
class Found:
    format: str
    path: Path  # the source itself: the competition folder, the archive or data folder, the image-folder root
    kind: str = ""  # cifar-python: "cifar-10" or "cifar-100"


def locate(path: Path, fmt: str | None = None) -> Found:
    """The one source at or under path (of format fmt when given); an error lists what was looked for."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise KaggleCifarError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if not path.exists():
        raise KaggleCifarError(f"{path}: not found")
    found = [f for f in _search(path) if fmt is None or f.format == fmt]
    # The same CIFAR data often comes both as the archive and extracted: read the folder, nothing to decompress.
    folders = {f.kind for f in found if f.format == "cifar-python" and f.path.is_dir()}
    found = [f for f in found if not (f.format == "cifar-python" and f.path.is_file() and f.kind in folders)]
    if not found:
        what = f"{fmt} data" if fmt else "CIFAR data"
        raise KaggleCifarError(f"{path}: no {what} found (looked {SEARCH_DEPTH} folder levels down for {LOOKED_FOR})")
    if len(found) > 1:
        listed = "; ".join(f"{f.path} ({f.format}{' ' + f.kind if f.kind else ''})" for f in found[:5])
        raise KaggleCifarError(
            f"{path}: {len(found)} sources in it: {listed}; point at one of them" + ("" if fmt else " or pass --format")
        )
    return found[0]


def detect_format(path: Path) -> str:
    """ "competition", "cifar-python" or "image-folder", from what is at or under path."""
    return locate(path).format


def read_source(path: Path, fmt: str | None = None, labels: str = "fine") -> dict[str, SourceSplit]:
    """Read the cifar-python or image-folder source at or under path into {"train": ..., "test": ...}.

    labels: "fine" or "coarse" (CIFAR-100's 20 super-classes). The competition's files are not read here:
    the cache builder streams their 7z archives (check locate(path).format first).
    """
    found = path if isinstance(path, Found) else locate(path, fmt)
    if found.format == "competition":
        raise ValueError(f"{found.path}: competition files are built by the cache builder, not read_source")
    if found.format == "cifar-python":
        return read_cifar_python(found.path, labels)
    if labels != "fine":
        raise KaggleCifarError(
            f"--labels {labels}: only CIFAR-100 python data has coarse labels; {found.path} is an image folder"
        )
    return read_image_folder(found.path)


def source_stamp(found: Found) -> dict:
    """Size and time of what a source is made of (stat calls only): a changed stamp means read it again."""
    files = (
        [found.path]
        if found.path.is_file()
        else [Path(folder) / name for folder, _, names in os.walk(found.path) for name in names]
    )
    stats = [p.stat() for p in files]
    return {
        "format": found.format,
        "path": str(found.path.resolve()),
        "files": len(stats),
        "bytes": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def _search(top: Path) -> list[Found]:
    """Sources at top and below it, shallow first, without looking into the folders of a source found."""
    if top.is_file():  # named explicitly: a damaged archive gets read_source's error, not "nothing found"
        return [Found("cifar-python", top, _archive_kind(top) or "")] if is_archive(top) else []
    found, level = [], [top]
    for _ in range(SEARCH_DEPTH + 1):
        below = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            names = {e.name for e in entries if e.is_file()}
            here = _folder_source(folder, names)
            if here:
                found.append(here)
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_file() and is_archive(Path(entry.path)):
                    kind = _archive_kind(Path(entry.path))
                    if kind:
                        found.append(Found("cifar-python", Path(entry.path), kind))
                elif entry.is_dir() and not entry.is_symlink() and not here:
                    below.append(Path(entry.path))
        level = below
    return found


def _folder_source(folder: Path, names: set[str]) -> Found | None:
    if {"train.7z", "trainLabels.csv"} <= names:
        return Found("competition", folder)
    kind = kind_of(names)
    if kind:
        return Found("cifar-python", folder, kind)
    if is_image_folder(folder):
        return Found("image-folder", folder)
    return None


def _archive_kind(archive: Path) -> str | None:
    """Which CIFAR a tar(.gz) holds: from its usual name, else from the first CIFAR file name among its first
    members (a gzip is decompressed only that far; CIFAR-100's meta comes last, so train or test decide)."""
    known = {"cifar-10-python": "cifar-10", "cifar-100-python": "cifar-100"}
    name = archive.name.lower()
    for stem, kind in known.items():
        if name.startswith(stem + "."):
            return kind
    try:
        with tarfile.open(archive, "r:*") as tar:
            for _, member in zip(range(PEEK_MEMBERS), tar):
                base = member.name.rstrip("/").rsplit("/", 1)[-1]
                if member.isfile() and base in MEMBER_NAMES:
                    return kind_of({base}) or "cifar-100"
    except Exception:  # noqa: BLE001 - not an archive we can read; read_source says why if it is chosen
        return None
    return None
