"""The cache from the sources that are not the competition's: CIFAR python data and image folders.

The competition's 7z archives are streamed into the cache by cache.build. These sources are read whole by
formats.read_source (CIFAR-100 is 180 MB of pixels, read in seconds) and each split is written with
store.write_split. Beside store's fields, each split's manifest records:

    format          "cifar-python" or "image-folder"; a split cache.build made has none: "competition"
    kind            "cifar-10" or "cifar-100" (cifar-python)
    label_set       "fine" or "coarse" (CIFAR-100's 20 super-classes)
    source          the source's stamp (formats.source_stamp) with the label set: the same stamp, the same cache
    source_splits   the splits the source has (an image folder may have no test/)
    labelled        whether the split has true labels (CIFAR's test split, test/CLASS/ folders)
    coarse_classes, fine_to_coarse   CIFAR-100 with fine labels: the super-class of each class
    names           the test split of an image folder: the file of each id (ascending id order), for predict
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from kagglecifar.cache.store import (
    CACHE_VERSION,
    SPLITS,
    is_complete,
    read_manifest,
    remove_stale,
    split_dir,
    write_split,
)
from kagglecifar.errors import KaggleCifarError

COMPETITION = "competition"
LABEL_SETS = ("fine", "coarse")


def cache_format(data_dir: Path, split: str) -> str | None:
    """The format a split of the cache was built from ("competition", "cifar-python", ...); None without one."""
    if not is_complete(data_dir, split):
        return None
    return read_manifest(data_dir, split).get("format", COMPETITION)


def check_label_set(labels: str) -> str:
    if labels not in LABEL_SETS:
        raise KaggleCifarError(f"--labels {labels}: choose {' or '.join(LABEL_SETS)}")
    return labels


def build_from_source(found, data_dir: Path, *, labels: str = "fine", force: bool = False):
    """Read the source that formats.locate found and write its splits to the cache; skipped when the cache
    already holds this source (same files, sizes, times) with this label set, unless force.

    A split the source does not have (an image folder without test/) is removed from the cache, so that a
    test split of an earlier source is never taken for this one's. Returns a cache.build.CacheSummary.
    """
    from kagglecifar.cache.build import CacheSummary, SplitSummary
    from kagglecifar.cache.formats import read_source, source_stamp

    data_dir = Path(data_dir)
    stamp = {**source_stamp(found), "labels": check_label_set(labels)}
    if not force and _up_to_date(data_dir, stamp):
        summaries = {}
        for split in SPLITS:
            if is_complete(data_dir, split):
                manifest = read_manifest(data_dir, split)
                summaries[split] = SplitSummary(
                    split, manifest["count"], manifest["bad"], True, 0.0, manifest.get("conversions", {})
                )
        return CacheSummary(data_dir / "cache", summaries)

    started = time.perf_counter()
    splits = read_source(found, labels=labels)
    summaries = {}
    for split in SPLITS:
        if split not in splits:
            _drop_split(data_dir, split)
            continue
        source = splits[split]
        remove_stale(split_dir(data_dir, split).parent, [f".{split}.partial-", f".{split}.old-"])  # killed builds
        order = np.argsort(source.ids, kind="stable")  # write_split stores rows in ascending id order
        extra = {"kind": found.kind} if found.kind else {}
        if split == "test" and found.format == "image-folder" and source.names:
            extra["names"] = [source.names[i] for i in order]
        write_split(
            data_dir,
            split,
            source.images,
            source.ids,
            source.classes,
            labels=source.labels,
            bad=source.bad,
            format=found.format,
            **extra,
            label_set=labels,
            source=stamp,
            source_splits=sorted(splits),
            bad_ids=source.ids[order][source.bad[order]].tolist(),
            **source.manifest_fields(),
        )
        summaries[split] = SplitSummary(
            split, len(source), int(source.bad.sum()), False, time.perf_counter() - started, source.conversions
        )
        started = time.perf_counter()
    return CacheSummary(data_dir / "cache", summaries)


def _up_to_date(data_dir: Path, stamp: dict) -> bool:
    """Every split the source has is in the cache with this stamp, and no other split is."""
    try:
        expected = read_manifest(data_dir, "train").get("source_splits") or []
        for split in SPLITS:
            if split not in expected:
                if is_complete(data_dir, split):
                    return False
                continue
            manifest = read_manifest(data_dir, split)
            if manifest.get("version") != CACHE_VERSION or manifest.get("source") != stamp:
                return False
    except KaggleCifarError:  # missing or unreadable: build it
        return False
    return bool(expected)


def _drop_split(data_dir: Path, split: str) -> None:
    """Remove a split folder of the cache; only one with its manifest (the cache writes that last) is ours."""
    folder = split_dir(data_dir, split)
    if (folder / "manifest.json").is_file():
        old = folder.parent / f".{split}.old-{os.getpid()}"
        folder.rename(old)  # gone at once under its name, even if the removal below is cut short
        shutil.rmtree(old, ignore_errors=True)
