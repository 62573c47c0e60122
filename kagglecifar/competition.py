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


def read_labels(path: Path) -> dict[int, str]:
    """trainLabels.csv as {id: label}: the header id,label, then one '<integer id>,<label>' per line."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != ["id", "label"]:
            raise KaggleCifarError(f"{path}: expected the header 'id,label', found {','.join(header or [])!r}")
        labels = {}
        for line, row in enumerate(rows, 2):
            if len(row) != 2 or not row[0].strip().isdigit() or not row[1].strip():
                raise KaggleCifarError(f"{path}: line {line}: expected '<integer id>,<label>', found {','.join(row)!r}")
            image_id = int(row[0])
            if image_id in labels:
                raise KaggleCifarError(f"{path}: line {line}: id {image_id} appears twice")
            labels[image_id] = row[1].strip()
    if not labels:
        raise KaggleCifarError(f"{path}: no labels in it")
    return labels
