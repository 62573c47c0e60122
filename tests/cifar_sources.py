"""Tiny CIFAR sources in the shapes people download, for tests.

    make_cifar_python(folder, "cifar-100", n_train=12, n_test=6, archive=True)  # -> the .tar.gz (or the folder)
    make_image_folder(root, {"cat": 3, "dog": 2}, test={"cat": 1} or 4 or None)

The python-format files are written as Python 2's cPickle wrote the real ones (py2 str opcodes, numpy
arrays reduced through numpy.core.multiarray._reconstruct), so reading them needs encoding="bytes" exactly
as the real files do. Pixels are random; labels cycle through the classes (image i has class i % classes).
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import cv2
import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_FINE, N_COARSE = 100, 20


class _Py2Pickler(pickle._Pickler):
    """The pure-Python pickler, writing str and bytes as Python 2 str (SHORT_BINSTRING / BINSTRING)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def rows_of(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) RGB -> CIFAR's (N, 3072) rows: the R plane, then G, then B."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def fine_names() -> list[str]:
    return [f"fine{i:02d}" for i in range(N_FINE)]


def coarse_names() -> list[str]:
    return [f"coarse{i:02d}" for i in range(N_COARSE)]


def coarse_of(fine: np.ndarray) -> np.ndarray:
    return np.asarray(fine) % N_COARSE


def cifar_files(kind: str, n_train: int, n_test: int, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """{file name: pickle bytes} of a tiny CIFAR python dataset, and the arrays in it per split."""
    rng = np.random.default_rng(seed)
    truth, files = {}, {}
    for split, count in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        n_classes = 10 if kind == "cifar-10" else N_FINE
        labels = (np.arange(count) * 7 + (split == "test")) % n_classes
        truth[split] = {"images": images, "labels": labels, "coarse": coarse_of(labels)}
        names = [f"{split}_{i:05d}.png" for i in range(count)]
        if kind == "cifar-10":
            parts = [f"data_batch_{b}" for b in range(1, 6)] if split == "train" else ["test_batch"]
            for name, idx in zip(parts, np.array_split(np.arange(count), len(parts))):
                files[name] = py2_pickle(
                    {
                        b"batch_label": f"{name} of 5".encode(),
                        b"labels": labels[idx].tolist(),
                        b"data": rows_of(images[idx]),
                        b"filenames": [names[i].encode() for i in idx],
                    }
                )
        else:
            files[split] = py2_pickle(
                {
                    b"filenames": [n.encode() for n in names],
                    b"batch_label": split.encode(),
                    b"fine_labels": labels.tolist(),
                    b"coarse_labels": coarse_of(labels).tolist(),
                    b"data": rows_of(images),
                }
            )
    if kind == "cifar-10":
        files["batches.meta"] = py2_pickle(
            {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}
        )
    else:
        files["meta"] = py2_pickle(
            {
                b"fine_label_names": [n.encode() for n in fine_names()],
                b"coarse_label_names": [n.encode() for n in coarse_names()],
            }
        )
    return files, truth


def make_cifar_python(
    folder: Path,
    kind: str = "cifar-10",
    n_train: int = 10,
    n_test: int = 5,
    archive: bool = True,
    seed: int = 0,
    extra: dict[str, bytes] | None = None,
):
    """Write the dataset as cifar-10-python.tar.gz / cifar-100-python.tar.gz (archive) or its extracted folder.

    Returns (path, truth). extra: more members/files, e.g. a malicious pickle under a CIFAR file name.
    """
    files, truth = cifar_files(kind, n_train, n_test, seed)
    files.update(extra or {})
    inner = "cifar-10-batches-py" if kind == "cifar-10" else "cifar-100-python"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not archive:
        (folder / inner).mkdir(exist_ok=True)
        for name, data in files.items():
            (folder / inner / name).write_bytes(data)
        return folder / inner, truth
    path = folder / f"{'cifar-10-python' if kind == 'cifar-10' else 'cifar-100-python'}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, inner + "/", None)
        for name, data in files.items():
            add_member(tar, f"{inner}/{name}", data)
    return path, truth


def add_member(tar: tarfile.TarFile, name: str, data: bytes | None, link: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def make_image_folder(root: Path, train: dict[str, int], test=None, seed: int = 0) -> dict:
    """train/CLASS/NNNN.png; test: {CLASS: count} (labelled) or a count (flat, unlabelled test/ID.png).

    Returns {relative path: RGB image} of everything written.
    """
    rng = np.random.default_rng(seed)
    written = {}
    layouts = [("train", train)] + ([("test", test)] if test is not None else [])
    for split, spec in layouts:
        groups = spec.items() if isinstance(spec, dict) else [(None, spec)]
        for name, count in groups:
            folder = Path(root) / split / (name or "")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = folder / (f"{i + 1}.png" if name is None else f"{name}_{i:04d}.png")
                path.write_bytes(png(image))
                written[path.relative_to(root).as_posix()] = image
    return written
