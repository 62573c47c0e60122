"""Building the cache from the competition download: which splits need work, then archive -> rows -> publish."""
from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecifar import competition
from kagglecifar.cache.archive import ArchiveFile, decode_archive, image_ids, open_archive
from kagglecifar.cache.store import CACHE_VERSION, SPLITS, SplitWriter, is_complete, publish, read_manifest, split_dir
from kagglecifar.errors import KaggleCifarError

MIN_IMAGES_FOR_WORKER = 10_000


@dataclass
class SplitSummary:
    split: str
    count: int
    bad: int
    skipped: bool  # True: the cache was already up to date
    seconds: float
    conversions: dict


@dataclass
class CacheSummary:
    cache_dir: Path
    splits: dict[str, SplitSummary]

    def line(self) -> str:
        parts = []
        for s in self.splits.values():
            if s.skipped:
                parts.append(f"{s.split} {s.count} images (up to date)")
            else:
                rate = s.count / s.seconds if s.seconds else 0.0
                parts.append(f"{s.split} {s.count} images, {s.bad} undecodable, {s.seconds:.1f} s ({rate:.0f} img/s)")
        return f"cache {self.cache_dir}: " + "; ".join(parts)


def build_cache(source_dir: Path, data_dir: Path, *, force: bool = False, keep_png: bool = False,
                workers: int | None = None, splits=SPLITS) -> CacheSummary:
    """Turn the competition download in source_dir (train.7z, test.7z, trainLabels.csv) into the image cache.

    A split whose cache matches its source files (size and mtime) is skipped unless force is set.
    keep_png also writes the PNG files to data_dir/train/ and data_dir/test/.
    workers: PNG-decoding processes beside the decompressing main process (0: decode here; None: 1 for
    large splits on a machine with 2+ cores). They are started with "spawn", so a script that calls this
    with workers needs the usual `if __name__ == "__main__":` guard.
    """
    source_dir, data_dir = Path(source_dir), Path(data_dir)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise KaggleCifarError(f"unknown split {unknown[0]!r}: choose from {', '.join(SPLITS)}")
    if workers is not None and workers < 0:
        raise KaggleCifarError(f"workers={workers}: give the number of decoding processes, 0 or more")
    results = {}
    for split in splits:
        try:
            results[split] = _build_split(source_dir, data_dir, split, force, keep_png, workers)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise KaggleCifarError(f"{exc.filename or data_dir}: no space left on device while building the "
                                   f"{split} cache; free some space and run again") from None
    return CacheSummary(data_dir / "cache", results)


def _build_split(source_dir: Path, data_dir: Path, split: str, force: bool, keep_png: bool,
                 workers: int | None) -> SplitSummary:
    archive = _source_file(source_dir / competition.archive_name(split))
    labels_path = _source_file(source_dir / competition.LABELS_FILE) if split == "train" else None
    _remove_stale(split_dir(data_dir, split).parent, [f".{split}.partial-", f".{split}.old-"])
    _remove_stale(data_dir, [f".{split}.png-partial-", f".{split}.old-"])
    labels = competition.read_labels(labels_path) if labels_path else None
    classes = sorted(set(labels.values())) if labels else _test_classes(source_dir)
    stamps = {"source": _file_stamp(archive)}
    if labels_path:
        stamps["labels_file"] = _file_stamp(labels_path)
    if not force and _up_to_date(data_dir, split, stamps, classes, keep_png):
        manifest = read_manifest(data_dir, split)
        return SplitSummary(split, manifest["count"], manifest["bad"], True, 0.0, manifest.get("conversions", {}))

    return _convert_split(archive, labels_path, labels, classes, stamps, data_dir, split, keep_png, workers)


def _convert_split(archive: Path, labels_path: Path | None, labels: dict | None, classes: list[str], stamps: dict,
                   data_dir: Path, split: str, keep_png: bool, workers: int | None) -> SplitSummary:
    started = time.perf_counter()
    hashes = {key: _sha256_in_background(path) for key, path in
              (("source", archive), ("labels_file", labels_path)) if path}
    png_partial = data_dir / f".{split}.png-partial-{os.getpid()}" if keep_png else None
    try:
        # parsing a 300k-member header takes seconds: open it once
        with ArchiveFile(archive) as source, open_archive(source, archive) as z:
            ids = image_ids(z, archive, split)
            if labels is not None:
                _check_labels_match(labels_path, labels, ids, archive)
            if workers is None:  # decoding costs about a fifth of decompressing; a process takes ~1 s to start
                workers = 1 if len(ids) >= MIN_IMAGES_FOR_WORKER and (os.cpu_count() or 1) > 1 else 0
            with SplitWriter(data_dir, split, len(ids), with_labels=labels is not None) as writer:
                _reserve_disk_space(writer.partial / "images.npy")
                writer.ids[:] = ids
                if labels is not None:
                    index = {name: i for i, name in enumerate(classes)}
                    writer.labels[:] = [index[labels[i]] for i in ids.tolist()]
                if png_partial:
                    png_partial.mkdir(parents=True)
                conversions = decode_archive(source, z, split, writer, workers, png_partial)
                bad_ids = ids[writer.bad].tolist()
                if png_partial:
                    publish(png_partial, data_dir / split)
                manifest = {"split": split, "classes": classes, "bad_ids": bad_ids, "conversions": conversions,
                            "seconds": round(time.perf_counter() - started, 2)}
                for key, stamp in stamps.items():
                    manifest[key] = {**stamp, "sha256": hashes[key].result()}
                writer.finish(manifest)
    finally:
        if png_partial:
            shutil.rmtree(png_partial, ignore_errors=True)
    return SplitSummary(split, len(ids), len(bad_ids), False, time.perf_counter() - started, conversions)


def _source_file(path: Path) -> Path:
    if not path.is_file():
        raise KaggleCifarError(f"{path}: not found; run `kagglecifar fetch` to download the competition files")
    return path


def _file_stamp(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _up_to_date(data_dir: Path, split: str, stamps: dict, classes: list[str], keep_png: bool) -> bool:
    if not is_complete(data_dir, split) or (keep_png and not (Path(data_dir) / split).is_dir()):
        return False
    try:
        manifest = read_manifest(data_dir, split)
    except KaggleCifarError:
        return False
    same_sources = all(
        {k: (manifest.get(key) or {}).get(k) for k in stamp} == stamp for key, stamp in stamps.items())
    return manifest.get("version") == CACHE_VERSION and same_sources and manifest.get("classes") == classes


def _remove_stale(folder: Path, prefixes: list[str]) -> None:
    """Drop half-built folders left by runs that died; those of another run still going are left alone."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        prefix = next((p for p in prefixes if path.name.startswith(p)), None)
        if prefix is None:
            continue
        pid = path.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def _sha256_in_background(path: Path) -> concurrent.futures.Future:
    """hashlib releases the GIL on large reads, so this overlaps with decompression."""
    future = concurrent.futures.Future()

    def run():
        try:
            with open(path, "rb") as f:
                future.set_result(hashlib.file_digest(f, "sha256").hexdigest())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def _reserve_disk_space(path: Path) -> None:
    """Allocate the memory map's blocks now: a full disk then fails here with ENOSPC, not later with SIGBUS."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)



# -- labels

def _check_labels_match(path: Path, labels: dict[int, str], ids: np.ndarray, archive: Path) -> None:
    image_ids = set(ids.tolist())
    unlabelled = sorted(image_ids - labels.keys())
    no_image = sorted(labels.keys() - image_ids)
    if unlabelled or no_image:
        problems = [f"{len(found)} {what} (first: {', '.join(map(str, found[:5]))})"
                    for found, what in ((unlabelled, "images have no label"), (no_image, "labels have no image"))
                    if found]
        raise KaggleCifarError(f"{path}: does not match the images in {archive.name}: " + "; ".join(problems))


def _test_classes(source_dir: Path) -> list[str]:
    """The class names predictions will use: from trainLabels.csv when it is there."""
    path = source_dir / competition.LABELS_FILE
    return sorted(set(competition.read_labels(path).values())) if path.is_file() else list(competition.CIFAR10_CLASSES)
