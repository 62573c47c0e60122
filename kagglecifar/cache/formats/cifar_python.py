"""CIFAR-10 and CIFAR-100 in their original "python" format, as the .tar.gz or as its extracted folder.

    cifar-10-python.tar.gz:  cifar-10-batches-py/  data_batch_1..5, test_batch, batches.meta (label_names)
    cifar-100-python.tar.gz: cifar-100-python/     train, test, meta (fine_label_names, coarse_label_names)

Each data file is a pickled dict: b"data" (N, 3072) uint8, each row the R, G and B planes of a 32x32 image
(row-major); b"labels" (CIFAR-10) or b"fine_labels" and b"coarse_labels" (CIFAR-100); b"filenames".
The pickles go through safe_pickle's restricted unpickler only. An archive is read as a stream, in memory:
nothing is unpacked to disk, and an archive with a member whose path or link leaves its folder is refused.
Ids are 1..N per split, in file order (data_batch_1 first).
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from kagglecifar.cache.formats.safe_pickle import load_pickle
from kagglecifar.cache.formats.source_split import SourceSplit, fine_to_coarse
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import escapes_folder

LAYOUTS: dict[str, dict[str, Any]] = {  # kind -> split -> data files, and the meta file
    "cifar-10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"},
    "cifar-100": {"train": ["train"], "test": ["test"], "meta": "meta"},
}
MEMBER_NAMES = {
    name
    for layout in LAYOUTS.values()
    for files in layout.values()
    for name in ([files] if isinstance(files, str) else files)
}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
ROW = 32 * 32 * 3


def kind_of(names) -> str | None:
    """Which CIFAR a set of file names is: "cifar-10", "cifar-100", or None."""
    names = set(names)
    if names & {"batches.meta", "test_batch"} or any(n.startswith("data_batch_") for n in names):
        return "cifar-10"
    if "meta" in names and ("train" in names or "test" in names):
        return "cifar-100"
    return None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def read_cifar_python(path: Path, labels: str = "fine") -> dict[str, SourceSplit]:
    """Read a cifar-10/100 python archive or folder; labels="coarse" gives CIFAR-100's 20 super-classes."""
    path = Path(path)
    if labels not in ("fine", "coarse"):
        raise KaggleCifarError(f"--labels {labels}: choose fine or coarse")
    docs = _read_archive(path) if path.is_file() else _read_folder(path)
    kind = kind_of(docs)
    if kind is None:
        raise KaggleCifarError(
            f"{path}: no CIFAR python data in it (looked for data_batch_1..5, test_batch and "
            "batches.meta, or train, test and meta)"
        )
    layout = LAYOUTS[kind]
    missing = [name for name in [*layout["train"], *layout["test"], layout["meta"]] if name not in docs]
    if missing:
        raise KaggleCifarError(f"{path}: {kind} data without {', '.join(missing)}")
    meta = _fields(docs[layout["meta"]], f"{path}: {layout['meta']}")
    if kind == "cifar-10":
        if labels == "coarse":
            raise KaggleCifarError(f"--labels coarse: {path} is CIFAR-10, which has no coarse labels")
        classes = _names(meta, "label_names", f"{path}: batches.meta")
        return {split: _split(path, docs, files, "labels", classes) for split, files in _data_splits(layout)}
    fine = _names(meta, "fine_label_names", f"{path}: meta")
    coarse = _names(meta, "coarse_label_names", f"{path}: meta")
    if labels == "coarse":
        return {split: _split(path, docs, files, "coarse_labels", coarse) for split, files in _data_splits(layout)}
    splits = {split: _split(path, docs, files, "fine_labels", fine) for split, files in _data_splits(layout)}
    coarse_labels = [
        _split(path, docs, files, "coarse_labels", coarse, images=False).labels for _, files in _data_splits(layout)
    ]
    mapping = fine_to_coarse(
        np.concatenate([s.labels for s in splits.values()]), np.concatenate(coarse_labels), len(fine), str(path)
    )
    for split in splits.values():
        split.coarse_classes, split.fine_to_coarse = coarse, mapping
    return splits


def _data_splits(layout: dict):
    return [(split, layout[split]) for split in ("train", "test")]


def _split(
    path: Path, docs: dict, files: list[str], label_key: str, classes: list[str], images: bool = True
) -> SourceSplit:
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    names: list[str] | None = []
    for name in files:
        doc = _fields(docs[name], f"{path}: {name}")
        data = doc.get("data")
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == ROW):
            raise KaggleCifarError(f"{path}: {name}: 'data' is not an (N, 3072) uint8 array")
        found = _labels(doc.get(label_key), len(data), len(classes), f"{path}: {name}: {label_key!r}")
        rows.append(data)
        labels.append(found)
        filenames = doc.get("filenames")
        if names is not None and isinstance(filenames, list) and len(filenames) == len(data):
            names += [_text(n) for n in filenames]
        else:
            names = None
    count = sum(len(r) for r in rows)
    pixels = None
    if images:  # R, G, B planes of 32 rows of 32 -> (N, 32, 32, 3)
        data = rows[0] if len(rows) == 1 else np.concatenate(rows)
        pixels = np.ascontiguousarray(data.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1))
    return SourceSplit(
        pixels,
        np.arange(1, count + 1, dtype=np.int64),
        np.concatenate(labels),
        np.zeros(count, bool),
        list(classes),
        names=names,
    )


def _labels(values, count: int, n_classes: int, what: str) -> np.ndarray:
    if values is None:
        raise KaggleCifarError(f"{what} missing")
    try:
        labels = np.asarray(values)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise KaggleCifarError(f"{what}: expected {count} integer labels")
    if count and (labels.min() < 0 or labels.max() >= n_classes):
        raise KaggleCifarError(f"{what}: labels outside 0..{n_classes - 1}")
    return labels.astype(np.int64)


def _fields(doc, what: str) -> dict:
    """The pickled dict with str keys (Python 2 wrote them as bytes)."""
    if not isinstance(doc, dict):
        raise KaggleCifarError(f"{what}: expected a pickled dict, found {type(doc).__name__}")
    return {_text(key): value for key, value in doc.items()}


def _names(meta: dict, key: str, what: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise KaggleCifarError(f"{what}: no list of {key}")
    names = [_text(n) for n in names]
    if len(set(names)) != len(names):
        raise KaggleCifarError(f"{what}: {key} has duplicates")
    return names


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_folder(folder: Path) -> dict:
    if not folder.is_dir():
        raise KaggleCifarError(f"{folder}: not found")
    root = folder.resolve()
    docs = {}
    for name in sorted(MEMBER_NAMES):
        path = folder / name
        if not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            raise KaggleCifarError(f"{path}: a link to {path.resolve()}, outside {folder}; refusing it")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KaggleCifarError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        docs[name] = load_pickle(data, str(path))
    return docs


def _read_archive(archive: Path) -> dict:
    """Unpickle the CIFAR members of a tar(.gz) as they stream past, keyed by file name."""
    docs: dict[str, dict] = {}
    seen: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = member.name
                if escapes_folder(name) or ((member.issym() or member.islnk()) and escapes_folder(member.linkname)):
                    raise KaggleCifarError(
                        f"{archive}: member {name!r} points outside the archive's folder; refusing the archive"
                    )
                base = name.rstrip("/").rsplit("/", 1)[-1]
                if not member.isfile() or base not in MEMBER_NAMES:
                    continue
                if base in seen:
                    raise KaggleCifarError(
                        f"{archive}: two {base} members ({seen[base]}, {name}); extract the "
                        "archive and point at one folder"
                    )
                seen[base] = name
                docs[base] = load_pickle(tar.extractfile(member).read(), f"{archive}: {name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise KaggleCifarError(
            f"{archive}: damaged or truncated archive ({type(exc).__name__}: {exc}); download it again"
        ) from None
    return docs
