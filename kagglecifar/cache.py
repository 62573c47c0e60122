"""The image cache: what `fetch` builds and training and prediction read.

Layout, one folder per split under DATA_DIR/cache/:

    cache/train/images.npy    (N, 32, 32, 3) uint8, RGB, row order = ascending id
    cache/train/ids.npy       (N,) int64
    cache/train/labels.npy    (N,) int64, index into manifest["classes"]   (train only)
    cache/train/bad.npy       (N,) bool, True where the image could not be decoded (pixels are 0)
    cache/train/manifest.json counts, class names, source archive sizes and checksums

A split folder only ever appears under its final name once every file in it is written
(it is built in a hidden ".NAME.partial-PID" sibling and renamed), so a folder that exists is complete.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import errno
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import py7zr
import py7zr.io
from tqdm import tqdm

from kagglecifar.errors import KaggleCifarError

CACHE_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)
SPLITS = ("train", "test")


@dataclass
class ImageSet:
    """One split of the cache, memory-mapped."""

    images: np.ndarray  # (N, 32, 32, 3) uint8 RGB
    ids: np.ndarray  # (N,) int64, ascending
    labels: np.ndarray | None  # (N,) int64 class index; None for the test split
    bad: np.ndarray  # (N,) bool: undecodable image, kept so its id still gets a prediction
    classes: list[str]
    manifest: dict

    def __len__(self) -> int:
        return len(self.ids)


def split_dir(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / "cache" / split


def is_complete(data_dir: Path, split: str) -> bool:
    return (split_dir(data_dir, split) / "manifest.json").is_file()


def read_manifest(data_dir: Path, split: str) -> dict:
    path = split_dir(data_dir, split) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KaggleCifarError(f"{path}: no {split} cache here; run `kagglecifar fetch` first") from None
    except (OSError, ValueError) as exc:
        raise KaggleCifarError(f"{path}: unreadable cache manifest ({exc}); run `kagglecifar fetch --force`") from None


def load_split(data_dir: Path, split: str, mmap: bool = True) -> ImageSet:
    """Open a split of the cache; images stay on disk (memory map) unless mmap=False."""
    manifest = read_manifest(data_dir, split)
    folder = split_dir(data_dir, split)
    try:
        images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None)
        ids = np.load(folder / "ids.npy")
        bad = np.load(folder / "bad.npy")
        labels = np.load(folder / "labels.npy") if (folder / "labels.npy").exists() else None
    except (OSError, ValueError) as exc:
        raise KaggleCifarError(f"{folder}: damaged cache ({exc}); run `kagglecifar fetch --force`") from None
    if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8 or len(images) != len(ids) != len(bad):
        raise KaggleCifarError(f"{folder}: cache arrays do not match; run `kagglecifar fetch --force`")
    return ImageSet(images, ids, labels, bad, list(manifest["classes"]), manifest)


class SplitWriter:
    """Builds one split folder privately, then publishes it with a rename.

        with SplitWriter(data_dir, "test", count) as w:
            w.images[row] = ...; w.ids[row] = ...; w.bad[row] = ...
            w.finish(manifest)          # without finish() nothing is published
    """

    def __init__(self, data_dir: Path, split: str, count: int, with_labels: bool = False):
        self.final = split_dir(data_dir, split)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.final.parent / f".{split}.partial-{os.getpid()}"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir()
        self.images = np.lib.format.open_memmap(self.partial / "images.npy", "w+", np.uint8, (count, *IMAGE_SHAPE))
        self.ids = np.zeros(count, np.int64)
        self.bad = np.zeros(count, bool)
        self.labels = np.zeros(count, np.int64) if with_labels else None
        self.done = False

    def __enter__(self) -> SplitWriter:
        return self

    def finish(self, manifest: dict) -> Path:
        self.images.flush()
        del self.images  # close the memory map before the folder moves
        np.save(self.partial / "ids.npy", self.ids)
        np.save(self.partial / "bad.npy", self.bad)
        if self.labels is not None:
            np.save(self.partial / "labels.npy", self.labels)
        manifest = {"version": CACHE_VERSION, "count": len(self.ids), "bad": int(self.bad.sum()), **manifest}
        (self.partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(self.partial)
        _publish(self.partial, self.final)
        self.done = True
        return self.final

    def __exit__(self, *exc_info) -> None:
        if not self.done:
            if hasattr(self, "images"):
                del self.images
            shutil.rmtree(self.partial, ignore_errors=True)


def write_split(data_dir: Path, split: str, images: np.ndarray, ids, classes: list[str],
                labels=None, bad=None, **manifest) -> Path:
    """Write a whole split from in-memory arrays (small data and tests)."""
    ids = np.asarray(ids, np.int64)
    order = np.argsort(ids, kind="stable")
    with SplitWriter(data_dir, split, len(ids), with_labels=labels is not None) as w:
        w.images[:] = np.asarray(images, np.uint8)[order]
        w.ids[:] = ids[order]
        if bad is not None:
            w.bad[:] = np.asarray(bad, bool)[order]
        if labels is not None:
            w.labels[:] = np.asarray(labels, np.int64)[order]
        return w.finish({"classes": list(classes), **manifest})


def _publish(partial: Path, final: Path) -> None:
    """Rename a finished private folder to its final name; an older one is moved aside first, then dropped."""
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- building the cache from the competition archives -------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LABELS_FILE = "trainLabels.csv"
BATCH = 256  # PNGs (~3 KB each) per job for a decoding process; at most 2 jobs per process wait
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
    archive = _source_file(source_dir / f"{split}.7z")
    labels_path = _source_file(source_dir / LABELS_FILE) if split == "train" else None
    _remove_stale(split_dir(data_dir, split).parent, [f".{split}.partial-", f".{split}.old-"])
    _remove_stale(data_dir, [f".{split}.png-partial-", f".{split}.old-"])
    labels = _read_labels(labels_path) if labels_path else None
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
        with _ArchiveFile(archive) as source, _open_archive(source, archive) as z:
            ids = _image_ids(z, archive, split)
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
                conversions = _decode_archive(source, z, split, writer, workers, png_partial)
                bad_ids = ids[writer.bad].tolist()
                if png_partial:
                    _publish(png_partial, data_dir / split)
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


# -- the archive: member names, labels

def _open_archive(source: _ArchiveFile, archive: Path) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(source, "r")
    except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
        raise _damaged(archive, exc) from None


def _damaged(archive: Path, exc: Exception) -> KaggleCifarError:
    return KaggleCifarError(f"{archive}: damaged or truncated 7z archive ({type(exc).__name__}: {exc}); "
                            "download it again with `kagglecifar fetch --force`")


def _image_ids(z: py7zr.SevenZipFile, archive: Path, split: str) -> np.ndarray:
    """The ids of the split's PNG members, ascending, read from the archive header (nothing is decompressed)."""
    pattern = re.compile(rf"{re.escape(split)}/(\d+)\.png")
    ids = []
    for m in z.files:  # z.list() would build a datetime per member: 5x slower
        name = m.filename
        parts = re.split(r"[/\\]", name)
        if m.is_symlink or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise KaggleCifarError(f"{archive}: member {name!r} points outside the archive's folder; refusing it")
        if m.is_directory or not name.lower().endswith(".png"):
            continue  # folder entries and non-image files
        match = pattern.fullmatch(name)
        if not match:
            raise KaggleCifarError(f"{archive}: member {name!r} is not named {split}/<id>.png")
        ids.append(int(match.group(1)))
    if not ids:
        raise KaggleCifarError(f"{archive}: no {split}/<id>.png images in it")
    ids = np.array(sorted(ids), np.int64)
    duplicates = ids[1:][ids[1:] == ids[:-1]]
    if len(duplicates):
        raise KaggleCifarError(f"{archive}: {len(duplicates)} image ids appear twice (first: {duplicates[0]})")
    return ids


def _read_labels(path: Path) -> dict[int, str]:
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
    path = source_dir / LABELS_FILE
    return sorted(set(_read_labels(path).values())) if path.is_file() else list(CIFAR10_CLASSES)


# -- decompression (main process) overlapped with PNG decoding (a worker process)

def png_to_rgb32(data: bytes) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Decode PNG bytes to (32, 32, 3) uint8 RGB and name the conversions made; (None, ()) if undecodable.

    16-bit -> 8-bit (rounded), gray -> RGB, palette -> RGB, RGBA -> RGB by dropping alpha (the stored colours
    are kept: compositing would invent a background), any other size -> 32x32 with INTER_AREA.
    """
    if not data:
        return None, ()
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None, ()
    if image is None or image.dtype not in (np.uint8, np.uint16) or image.size == 0:
        return None, ()
    done = []
    if data[12:16] == b"IHDR" and data[25:26] == b"\x03":  # PNG colour type 3: OpenCV expands the palette
        done.append("palette")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        done.append("16bit")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        done.append("gray")
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        done.append("rgba")
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        return None, ()
    if image.shape[:2] != IMAGE_SHAPE[:2]:
        image = cv2.resize(image, IMAGE_SHAPE[1::-1], interpolation=cv2.INTER_AREA)
        done.append("resized")
    return image, tuple(done)


def _decode_batch(images_path: Path, rows: list[int], datas: list[bytes], png_paths: list[Path] | None):
    """Decode PNGs into their rows of the memory-mapped images.npy; return (undecodable rows, conversion counts)."""
    images = np.load(images_path, mmap_mode="r+")
    bad, counts = [], collections.Counter()
    for i, (row, data) in enumerate(zip(rows, datas)):
        image, done = png_to_rgb32(data)
        if image is None:
            bad.append(row)
        else:
            images[row] = image
            counts.update(done)
        if png_paths:
            png_paths[i].write_bytes(data)
    return bad, counts


def _quiet_opencv() -> None:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no warning per truncated PNG


def _start_worker() -> None:
    _quiet_opencv()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops us


class _DecodePool:
    """Decodes PNGs in batches in worker processes (here, with 0 workers) while the archive is decompressed.

    Processes, not threads: py7zr spends most of its time in Python holding the GIL, so decoding threads
    would mostly wait for it. The workers write straight into the memory-mapped images.npy.
    """

    def __init__(self, writer: SplitWriter, workers: int, png_dir: Path | None):
        self.writer, self.png_dir = writer, png_dir
        self.images_path = writer.partial / "images.npy"
        self.executor = concurrent.futures.ProcessPoolExecutor(
            workers, multiprocessing.get_context("spawn"), initializer=_start_worker) if workers else None
        self.max_pending = 2 * workers
        self.pending: collections.deque = collections.deque()
        self.rows, self.datas = [], []
        self.counts = collections.Counter()
        self.error: BaseException | None = None

    def put(self, row: int, data: bytes) -> None:
        self.rows.append(row)
        self.datas.append(data)
        if len(self.rows) == BATCH:
            self._submit()

    def _submit(self) -> None:
        png_paths = [self.png_dir / f"{self.writer.ids[r]}.png" for r in self.rows] if self.png_dir else None
        job = (self.images_path, self.rows, self.datas, png_paths)
        self.rows, self.datas = [], []
        if self.executor is None:
            return self._collect(_decode_batch(*job))
        self.pending.append(self.executor.submit(_decode_batch, *job))
        while self.pending and (len(self.pending) > self.max_pending or self.pending[0].done()):
            self._collect(self.pending.popleft())

    def _collect(self, result) -> None:
        try:
            bad, counts = result.result() if isinstance(result, concurrent.futures.Future) else result
        except concurrent.futures.process.BrokenProcessPool:
            self.error = KaggleCifarError(
                "the PNG-decoding process died (out of memory? a script calling build_cache needs an "
                "`if __name__ == \"__main__\":` guard); run again, or with workers=0")
            raise self.error from None
        except BaseException as exc:
            self.error = exc  # lets the caller tell it from py7zr's errors
            raise
        self.writer.bad[bad] = True
        self.counts.update(counts)

    def finish(self) -> dict:
        """Decode what is left; return how often each conversion happened."""
        if self.rows:
            self._submit()
        while self.pending:
            self._collect(self.pending.popleft())
        return dict(sorted(self.counts.items()))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class _Member(py7zr.io.Py7zIO):
    """One archive member's bytes; py7zr calls close() once the member is complete and its CRC checked."""

    __slots__ = ("factory", "row", "parts")

    def __init__(self, factory: _MemberFactory, row: int | None):
        self.factory, self.row, self.parts = factory, row, []

    def write(self, s) -> int:
        self.factory.bytes_out += len(s)
        if self.row is not None:
            self.parts.append(bytes(s))
        return len(s)

    def close(self) -> None:
        if self.parts is not None and self.row is not None:
            self.factory.deliver(self.row, b"".join(self.parts))
        self.parts = None  # py7zr keeps every member object until the end: hold no bytes

    def read(self, size=None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return 0


class _MemberFactory(py7zr.io.WriterFactory):
    """Maps each member py7zr opens to its cache row and hands the finished bytes to the decode pool."""

    def __init__(self, split: str, ids: np.ndarray, pool: _DecodePool, progress):
        self.ids, self.pool, self.progress = ids, pool, progress
        self.pattern = re.compile(rf"{re.escape(split)}/(\d+)\.png")
        self.received = 0
        self.bytes_out = 0  # decompressed so far, all members

    def create(self, filename: str) -> _Member:
        # py7zr passes the output path; the header check already made every PNG member exactly SPLIT/ID.png
        match = self.pattern.fullmatch("/".join(filename.rsplit("/", 2)[-2:]))
        if match is None:
            return _Member(self, None)  # non-image members
        return _Member(self, int(np.searchsorted(self.ids, int(match.group(1)))))

    def deliver(self, row: int, data: bytes) -> None:
        self.pool.put(row, data)
        self.received += 1
        self.progress.update()


class _ArchiveFile(io.RawIOBase):
    """The archive file; while members are extracted, it is read only a little ahead of the output.

    py7zr gives the LZMA decompressor another 1 MB of input for every member (~3 KB of output each), and the
    decompressor keeps what it has not used yet: unchecked, the whole compressed archive (about the size of
    all the PNGs together) ends up in memory. Compressed data is never larger than its output by more than
    the format's framing, so reading stops while it is more than a margin ahead of the output, and resumes
    before the decompressor can run dry.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.file = open(path, "rb")
        self.name = str(path)
        self.output = None  # during extraction: how many bytes have been decompressed so far

    def read(self, size: int = -1) -> bytes:
        if self.output is not None:
            done = self.output()
            if self.file.tell() - done > (1 << 20) + done // 50:
                return b""
        return self.file.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
        super().close()


def _decode_archive(source: _ArchiveFile, z: py7zr.SevenZipFile, split: str, writer: SplitWriter, workers: int,
                    png_dir: Path | None) -> dict:
    """Stream every member of the archive into the writer's rows; return the conversion counts."""
    archive = Path(source.name)
    log_level = cv2.utils.logging.getLogLevel()
    _quiet_opencv()
    pool = _DecodePool(writer, workers, png_dir)
    try:
        with tqdm(total=len(writer.ids), desc=split, unit="img", file=sys.stderr, mininterval=0.5) as progress:
            factory = _MemberFactory(split, writer.ids, pool, progress)
            source.output = lambda: factory.bytes_out
            try:
                # py7zr resolves each member's output path below `path` (an lstat per folder level) although
                # the factory writes nothing there; "/" is the cheapest, and _image_ids vetted the names already
                z.extractall(path=Path("/"), factory=factory)
            except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
                if exc is pool.error:
                    raise
                raise _damaged(archive, exc) from None
            conversions = pool.finish()
    finally:
        pool.close()
        cv2.utils.logging.setLogLevel(log_level)
    if factory.received != len(writer.ids):
        raise KaggleCifarError(f"{archive}: only {factory.received} of {len(writer.ids)} images could be read")
    return conversions
