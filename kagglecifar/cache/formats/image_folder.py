"""Image-folder datasets: one folder of images per class.

    ROOT/train/CLASS/*.png|jpg|jpeg     labelled training images; the classes are the sorted folder names
    ROOT/test/CLASS/*  or  ROOT/test/*  optional: a labelled or an unlabelled test split

Images are decoded by the cache's png_to_rgb32 (OpenCV: any size, gray, 16-bit, alpha -> 32x32 RGB); one that
cannot be decoded is flagged bad, not fatal; one whose header declares more than 4096 pixels a side is
refused before decoding. Ids are the file names when those are distinct integers (like the competition's
test/123.png); test images sharing an id (3.png, 3.jpg) or mixing integer and other names are refused;
otherwise ids are 1..N over the sorted relative paths, said in one line. A file or folder that is a link
leading outside ROOT is refused; other files (.txt, .DS_Store, subfolders of a class folder) are ignored.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import cv2
import numpy as np

from kagglecifar.cache.decode import MAX_SIDE, image_size, png_to_rgb32, quiet_opencv
from kagglecifar.cache.formats.source_split import SourceSplit
from kagglecifar.console import note, progress_bar
from kagglecifar.errors import KaggleCifarError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_FILE_BYTES = 64 << 20  # a 4096x4096 16-bit RGBA PNG barely compressed


def is_image_folder(root: Path) -> bool:
    """ROOT/train has a class folder with at least one image in it (only the first few entries are looked at)."""
    train = Path(root) / "train"
    try:
        folders = [e for e in os.scandir(train) if e.is_dir() and not e.name.startswith(".")]
        return any(_is_image(e.name) for folder in folders[:3] for e in _first(folder.path, 50))
    except OSError:
        return False


def read_image_folder(root: Path) -> dict[str, SourceSplit]:
    root = Path(root)
    if not (root / "train").is_dir():
        raise KaggleCifarError(f"{root}: no train/ folder (expected train/CLASS/*.png|jpg)")
    inside = root.resolve()
    train_files, loose = _listing(root / "train", inside)
    if loose:
        raise KaggleCifarError(
            f"{root / 'train'}: {len(loose)} images outside class folders (first: "
            f"{loose[0].name}); put each image in train/CLASS/"
        )
    empty = [name for name, files in train_files.items() if not files]
    if not train_files or empty:
        raise KaggleCifarError(
            f"{root / 'train'}: "
            + (
                f"class folder {empty[0]}/ has no images"
                if empty
                else "no class folders (expected train/CLASS/*.png|jpg)"
            )
        )
    classes = sorted(train_files)
    splits = {"train": _decode(root, "train", train_files, classes)}
    if (root / "test").is_dir():
        test_files, loose = _listing(root / "test", inside)
        test_files = {name: files for name, files in test_files.items() if files}
        if test_files and loose:
            raise KaggleCifarError(f"{root / 'test'}: has both class folders and loose images; use one layout")
        unknown = sorted(set(test_files) - set(classes))
        if unknown:
            raise KaggleCifarError(
                f"{root / 'test' / unknown[0]}: class {unknown[0]!r} is not among the training "
                f"classes ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
            )
        if not test_files and not loose:
            raise KaggleCifarError(f"{root / 'test'}: no images (expected test/*.png|jpg or test/CLASS/*)")
        splits["test"] = _decode(root, "test", test_files or {None: loose}, classes)
    return splits


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _first(folder: str, count: int) -> list:
    with os.scandir(folder) as entries:
        return [e for _, e in zip(range(count), entries)]


def _listing(folder: Path, inside: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """({class folder name: its image files, sorted}, images directly in folder, sorted)."""
    _check_inside(folder, inside)
    classes, loose = {}, []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            _check_inside(path, inside)
            classes[entry.name] = _images(path, inside)
        elif entry.is_file() and _is_image(entry.name):
            _check_inside(path, inside)
            loose.append(path)
    return classes, loose


def _images(folder: Path, inside: Path) -> list[Path]:
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if _is_image(entry.name) and entry.is_file():
            if entry.is_symlink():
                _check_inside(Path(entry.path), inside)
            files.append(Path(entry.path))
    return files


def _check_inside(path: Path, inside: Path) -> None:
    target = path.resolve()
    if not target.is_relative_to(inside):
        raise KaggleCifarError(f"{path}: a link to {target}, outside {inside}; refusing it")


def _decode(root: Path, split: str, files_by_class: dict, classes: list[str]) -> SourceSplit:
    paths: list[Path] = []
    label_list: list[int] = []
    for name, files in files_by_class.items():
        paths += files
        label_list += [classes.index(name) if name is not None else -1] * len(files)
    names = [p.relative_to(root).as_posix() for p in paths]
    order = sorted(range(len(paths)), key=names.__getitem__)
    paths, names, labels = [paths[i] for i in order], [names[i] for i in order], np.array(label_list, np.int64)[order]
    images = np.zeros((len(paths), 32, 32, 3), np.uint8)
    bad = np.zeros(len(paths), bool)
    conversions: collections.Counter[str] = collections.Counter()
    log_level = cv2.utils.logging.getLogLevel()
    quiet_opencv()  # no warning per broken image
    try:
        for row, path in enumerate(progress_bar(len(paths), split, "img", mininterval=0.5, iterable=paths)):
            data = _read_image(path)
            image, done = png_to_rgb32(data)
            if image is None:
                bad[row] = True
            else:
                images[row] = image
                conversions.update(done)
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    labelled = None not in files_by_class
    return SourceSplit(
        images,
        _ids(root, split, paths),
        labels if labelled else None,
        bad,
        list(classes),
        names=names,
        conversions=dict(sorted(conversions.items())),
    )


def _read_image(path: Path) -> bytes:
    """The file's bytes, once its size and the dimensions its header declares are within what an image folder
    of small pictures can hold (one line naming the file otherwise)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise KaggleCifarError(
                f"{path}: {size / 2**20:.0f} MiB, more than an image of at most {MAX_SIDE}x{MAX_SIDE} pixels "
                "needs; refusing the folder"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise KaggleCifarError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    dimensions = image_size(data)
    if dimensions and (dimensions[0] > MAX_SIDE or dimensions[1] > MAX_SIDE):
        raise KaggleCifarError(
            f"{path}: {dimensions[0]}x{dimensions[1]} pixels; images larger than {MAX_SIDE}x{MAX_SIDE} are "
            "refused (they are resized to 32x32 anyway): shrink it or leave it out"
        )
    return data


def _ids(root: Path, split: str, paths: list[Path]) -> np.ndarray:
    """Ids are the file names when those are integers (like the competition's test/123.png), so a submission's
    rows keep the names' ids. Two files with one id (3.png and 3.jpg), or integer names mixed with others in
    the test split, are refused; a split of names that are no integers is numbered 1..N in name order, said in
    one line."""
    stems = [p.stem for p in paths]
    numeric = [s.isascii() and s.isdigit() and len(s) < 19 for s in stems]
    shown = lambda i: paths[i].relative_to(root).as_posix()  # noqa: E731
    if all(numeric):
        ids = np.array([int(s) for s in stems], np.int64)
        first: dict[int, int] = {}
        for i, image_id in enumerate(ids.tolist()):
            if image_id in first and split == "test":
                raise KaggleCifarError(
                    f"{root / shown(first[image_id])} and {shown(i)}: both would be test id {image_id}; "
                    "keep one of them"
                )
            first.setdefault(image_id, i)
        if len(first) == len(ids):
            return ids
    elif split == "test" and any(numeric):
        other, named = numeric.index(False), numeric.index(True)
        raise KaggleCifarError(
            f"{root / shown(other)}: not an integer id like {shown(named)}; name every test image ID.png "
            "(its id in the submission) or none of them"
        )
    examples = ", ".join(shown(i) for i in range(min(2, len(paths))))
    if split == "test":  # training ids are never submitted: nothing to say
        note(
            f"{root / split}: the file names ({examples}{', ...' if len(paths) > 2 else ''}) are not distinct "
            f"integer ids: numbered 1..{len(paths)} in name order"
        )
    return np.arange(1, len(paths) + 1, dtype=np.int64)
