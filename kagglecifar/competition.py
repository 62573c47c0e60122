"""Kaggle's CIFAR-10 competition: its files, its classes, and the one parser of trainLabels.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from kagglecifar.errors import KaggleCifarError

TRAIN_ARCHIVE = "train.7z"
TEST_ARCHIVE = "test.7z"
LABELS_FILE = "trainLabels.csv"
SAMPLE_SUBMISSION = "sampleSubmission.csv"
FILES = (TRAIN_ARCHIVE, TEST_ARCHIVE, LABELS_FILE, SAMPLE_SUBMISSION)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def archive_name(split: str) -> str:
    return f"{split}.7z"


def check_classes(classes) -> list[str]:
    """A class list given instead of the competition's (the order fixes the label indices)."""
    classes = [str(name) for name in classes]
    bad = next((name for name in classes if not name or name != name.strip() or "," in name or "\n" in name), None)
    problem = (
        f"{bad!r} is not a usable class name"
        if bad is not None
        else "a name appears twice"
        if len(set(classes)) != len(classes)
        else "at least two are needed"
        if len(classes) < 2
        else None
    )
    if problem:
        raise KaggleCifarError(f"classes {','.join(classes)!r}: {problem}; give distinct names, e.g. --classes cat,dog")
    return classes


def read_labels(path: Path, classes: list[str] | None = None) -> dict[int, str]:
    """trainLabels.csv as {id: label}: the header id,label, then one '<integer id>,<label>' per line, every
    label one of `classes` (default: the competition's)."""
    allowed = set(classes or CIFAR10_CLASSES)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_labels(path, csv.reader(f), classes or CIFAR10_CLASSES, allowed)
    except FileNotFoundError:
        raise KaggleCifarError(
            f"{path}: not found; run `kagglecifar fetch` to download the competition files"
        ) from None
    except UnicodeDecodeError as exc:
        raise KaggleCifarError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 CSV and run again"
        ) from None
    except OSError as exc:
        raise KaggleCifarError(f"{path}: cannot be read ({exc.strerror}); check the file and its permissions") from None


def _parse_labels(path: Path, rows, classes: list[str], allowed: set[str]) -> dict[int, str]:
    header = next(rows, None)
    if header != ["id", "label"]:
        raise KaggleCifarError(f"{path}: expected the header 'id,label', found {','.join(header or [])!r}")
    labels = {}
    for line, row in enumerate(rows, 2):
        if len(row) != 2 or not row[0].strip().isdigit() or not row[1].strip():
            raise KaggleCifarError(f"{path}: line {line}: expected '<integer id>,<label>', found {','.join(row)!r}")
        image_id, label = int(row[0]), row[1].strip()
        if image_id in labels:
            raise KaggleCifarError(f"{path}: line {line}: id {image_id} appears twice")
        if label not in allowed:
            raise KaggleCifarError(f"{path}: line {line}: {_unknown_label(label, classes)}")
        labels[image_id] = label
    if not labels:
        raise KaggleCifarError(f"{path}: no labels in it")
    return labels


def _unknown_label(label: str, classes: list[str]) -> str:
    same_but_case = [name for name in classes if name.lower() == label.lower()]
    hint = f"did you mean {same_but_case[0]!r}? " if same_but_case else ""
    if classes == CIFAR10_CLASSES:
        return (
            f"{label!r} is not a CIFAR-10 class ({', '.join(classes)}); {hint}"
            "to train on other classes, name them all with --classes"
        )
    return f"{label!r} is not one of the classes given ({', '.join(classes)}); {hint}add it to --classes"


def check_labels_match(path: Path, labels: dict[int, str], image_ids: list[int], archive: Path) -> None:
    """Every image has a label and every label an image."""
    unlabelled = sorted(set(image_ids) - labels.keys())
    no_image = sorted(labels.keys() - set(image_ids))
    if unlabelled or no_image:
        problems = [
            f"{len(found)} {what} (first: {', '.join(map(str, found[:5]))})"
            for found, what in ((unlabelled, "images have no label"), (no_image, "labels have no image"))
            if found
        ]
        raise KaggleCifarError(f"{path}: does not match the images in {archive.name}: " + "; ".join(problems))
