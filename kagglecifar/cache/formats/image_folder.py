"""Image-folder datasets: one folder of images per class.

    ROOT/train/CLASS/*.png|jpg|jpeg     labelled training images; the classes are the sorted folder names
    ROOT/test/CLASS/*  or  ROOT/test/*  optional: a labelled or an unlabelled test split

Images are decoded by the cache's png_to_rgb32 (OpenCV: any size, gray, 16-bit, alpha -> 32x32 RGB); one that
cannot be decoded is flagged bad, not fatal. Ids are the file names when those are distinct integers (like
the competition's test/123.png), else 1..N over the sorted relative paths. A file or folder that is a link
leading outside ROOT is refused; other files (.txt, .DS_Store, subfolders of a class folder) are ignored.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import cv2
import numpy as np

from kagglecifar.cache.decode import png_to_rgb32, quiet_opencv
from kagglecifar.cache.formats.source_split import SourceSplit
from kagglecifar.console import progress_bar
from kagglecifar.errors import KaggleCifarError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KaggleCifarError(f"{path}: cannot read it ({exc.strerror or exc})") from None
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
        _ids(paths),
        labels if labelled else None,
        bad,
        list(classes),
        names=names,
        conversions=dict(sorted(conversions.items())),
    )


def _ids(paths: list[Path]) -> np.ndarray:
    stems = [p.stem for p in paths]
    if all(s.isascii() and s.isdigit() and len(s) < 19 for s in stems) and len(set(map(int, stems))) == len(stems):
        return np.array([int(s) for s in stems], np.int64)
    return np.arange(1, len(paths) + 1, dtype=np.int64)
