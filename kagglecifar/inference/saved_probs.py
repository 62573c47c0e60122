"""Checking a probabilities file (`predict --save-probs X.npz`) before numpy allocates what it declares.

An .npz is a zip of .npy files, each with a header declaring its shape and dtype; np.load allocates that
shape before reading a byte of data, so a 2 kB file can ask for petabytes. Here every member's header is read
first and checked against what a prediction of CIFAR-sized test data can be; then the arrays are loaded and
checked against each other.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from kagglecifar.errors import KaggleCifarError, excerpt
from kagglecifar.inference.tta import TTA_VIEWS

MAX_ROWS = 10_000_000  # test ids (Kaggle's CIFAR-10 test set has 300,000)
MAX_CLASSES = 1000
MAX_TOTAL_BYTES = 512 << 20  # all arrays together, as declared (300,000 ids x 100 classes: 120 MB)
KINDS = {  # member -> (allowed dtype kinds, number of dimensions)
    "ids": ("iu", 1),
    "probs": ("f", 2),
    "confidence": ("f", 1),
    "bad": ("b", 1),
    "classes": ("U", 1),
    "tta": ("U", 0),
}


def check_headers(path: Path) -> None:
    """Refuse, in one line, an .npz whose members are missing or declare shapes no prediction has."""
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for name, (kinds, ndim) in KINDS.items():
                try:
                    info = archive.getinfo(f"{name}.npy")
                except KeyError:
                    raise _bad(path, f"no {name} array") from None
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                        version, np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
                if dtype.kind not in kinds or dtype.hasobject or len(shape) != ndim:
                    raise _bad(path, f"{name} is a {len(shape)}-d {dtype} array")
                if any(not isinstance(n, int) or n < 0 for n in shape):
                    raise _bad(path, f"{name} declares the shape {excerpt(shape, 40)}")
                limits = {0: MAX_ROWS, 1: MAX_CLASSES} if name != "classes" else {0: MAX_CLASSES}
                if any(n > limits[axis] for axis, n in enumerate(shape) if axis in limits):
                    raise _bad(path, f"{name} declares the shape {shape}, more than CIFAR test data has")
                if name in ("classes", "tta") and dtype.itemsize > 4 * 1000:
                    raise _bad(path, f"{name} declares strings of {dtype.itemsize // 4} characters")
                total += math.prod(shape) * dtype.itemsize
                if total > MAX_TOTAL_BYTES:
                    raise _bad(path, f"its arrays declare more than {MAX_TOTAL_BYTES >> 20} MiB")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError, NotImplementedError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise KaggleCifarError(f"{path}: no such file") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _bad(path, excerpt(first, 100)[1:-1]) from None


def check_arrays(path: Path, ids, probs, confidence, bad, classes, tta: str, modes) -> None:
    """The loaded arrays agree with each other and hold what predict writes."""
    n = len(ids)
    if probs.shape != (n, len(classes)) or confidence.shape != (n,) or bad.shape != (n,):
        raise _bad(path, f"probs {probs.shape}, confidence {confidence.shape}, bad {bad.shape} for {n} ids")
    if not len(classes) or len(set(classes)) != len(classes):
        raise _bad(path, "its class list is empty or has duplicates")
    if n > 1 and not (np.diff(ids) > 0).all():
        raise _bad(path, "its ids are not unique and ascending")
    if not np.isfinite(probs).all() or probs.min(initial=0) < 0 or probs.max(initial=0) > 1:
        raise _bad(path, "its probabilities are not numbers in [0, 1]")
    if tta not in modes:
        raise _bad(path, f"TTA mode {excerpt(tta, 30)}")


def _bad(path: Path, problem: str) -> KaggleCifarError:
    return KaggleCifarError(f"{path}: not probabilities saved by `kagglecifar predict --save-probs` ({problem})")


def read_views(path: Path, saved, rows: int) -> tuple[np.ndarray | None, float]:
    """(views per row, tta_fraction) of a gated prediction; (None, 1.0) for a file from before gating, where
    every row had every view. `saved`: the open np.load of `path`."""
    if "views" not in saved.files:
        return None, 1.0
    with zipfile.ZipFile(path) as archive:  # sized before it is read, like the other arrays
        if archive.getinfo("views.npy").file_size > rows * 8 + 1024:
            raise _bad(path, "its views array is larger than its ids")
    views = saved["views"]
    fraction = float(saved["tta_fraction"]) if "tta_fraction" in saved.files else 1.0
    if views.shape != (rows,) or views.dtype.kind not in "iu" or (rows and views.min() < 1) or not 0 < fraction <= 1:
        raise _bad(path, f"views {views.shape} {views.dtype} or tta_fraction {fraction:g} do not fit its {rows} ids")
    return views.astype(np.uint8), fraction


def widest_mode(modes) -> str:
    """Of several TTA modes, the one with the most views (the alphabetically first of equals)."""
    return max(sorted(modes), key=lambda mode: TTA_VIEWS[mode])


def ensemble_views(members: list, bad: np.ndarray) -> tuple[str, np.ndarray, float]:
    """What an ensemble of saved probabilities alone had (the command's --tta computes nothing then): the
    members' TTA mode (widest_mode when they differ), each row's views (the most any member gave it) and the
    share of the decodable rows with every view of that mode. `members`: load_probs's."""
    mode = widest_mode({member.tta for member in members})
    views = np.max([member.views_per_row() for member in members], axis=0)
    good = ~np.asarray(bad, bool)
    fraction = float((views[good] >= TTA_VIEWS[mode]).mean()) if good.any() else 1.0
    return mode, views, fraction


def files_mode(sources: list[Path]) -> str | None:
    """The mode ensemble_views will give when every source is a probabilities file, read from their `tta`
    members alone; None otherwise, or when one cannot be read (predict then names the problem)."""
    modes = []
    for source in map(Path, sources):
        if source.suffix != ".npz" or not source.is_file():
            return None
        try:
            check_headers(source)
            with np.load(source, allow_pickle=False) as saved:
                modes.append(str(saved["tta"]))
        except (KaggleCifarError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
    return widest_mode(modes) if modes and all(mode in TTA_VIEWS for mode in modes) else None
