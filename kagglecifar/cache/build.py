"""Building the cache from the competition download: which splits need work, then archives -> rows -> publish.

Threads do the work: one per archive decompresses it (the largest is the longest chain of work) and
DecodeThreads turn its PNGs into rows. The main thread opens the archives, waits and shows progress; on an
error or Ctrl-C (KeyboardInterrupt) it stops every thread and removes what the build had begun. A split
whose own archive turns out damaged fails alone: the others are still published.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kagglecifar import competition
from kagglecifar.cache.archive import (
    ArchiveFile,
    DamagedArchive,
    open_archive,
    read_fast,
    read_members,
    stream_lzma,
    stream_py7zr,
)
from kagglecifar.cache.decode import (
    CorruptMember,
    DecodeThreads,
    SplitOutput,
    Stopped,
    lower_thread_priority,
    quiet_opencv,
)
from kagglecifar.cache.store import (
    CACHE_VERSION,
    SPLITS,
    SplitWriter,
    is_complete,
    publish,
    read_manifest,
    remove_stale,
    split_dir,
)
from kagglecifar.console import progress_bar
from kagglecifar.errors import KaggleCifarError


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


@dataclass
class _Plan:
    """A split that needs building, and what from."""

    split: str
    archive: Path
    labels_path: Path | None
    labels: dict[int, str] | None
    classes: list[str]
    stamps: dict
    downloaded: bool  # by `kagglecifar fetch`: a damaged archive can be downloaded again


def build_cache(
    source_dir: Path,
    data_dir: Path,
    *,
    force: bool = False,
    keep_png: bool = False,
    workers: int | None = None,
    splits=SPLITS,
    classes: list[str] | None = None,
    downloaded: bool = False,
) -> CacheSummary:
    """Turn the competition download in source_dir (train.7z, test.7z, trainLabels.csv) into the image cache.

    A split whose cache matches its source files (size and mtime) and classes is skipped unless force is set.
    keep_png also writes the PNG files to data_dir/train/ and data_dir/test/.
    workers: PNG-decoding threads beside the decompressing ones (0: the decompressing thread decodes too;
    None: one per core).
    classes: the class names, in label-index order (default: CIFAR-10's); every label in trainLabels.csv must
    be one of them. Both splits' manifests record them.
    downloaded: source_dir holds what `kagglecifar fetch` downloaded, so a damaged archive can be fetched again
    with --force; otherwise (the user's own folder, --from-dir) the advice is to replace the file.
    Ctrl-C (KeyboardInterrupt) stops every thread and removes what was begun.
    """
    source_dir, data_dir = Path(source_dir), Path(data_dir)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise KaggleCifarError(f"unknown split {unknown[0]!r}: choose from {', '.join(SPLITS)}")
    if workers is not None and workers < 0:
        raise KaggleCifarError(f"workers={workers}: give the number of decoding threads, 0 or more")
    classes = competition.check_classes(classes) if classes is not None else list(competition.CIFAR10_CLASSES)
    results, plans = {}, []
    for split in splits:
        with _os_errors(split, data_dir):
            plan = _plan_split(source_dir, data_dir, split, force, keep_png, classes, downloaded)
        if isinstance(plan, SplitSummary):
            results[split] = plan
        else:
            plans.append(plan)
    if plans:
        workers = os.cpu_count() or 1 if workers is None else workers
        results.update(_build_splits(plans, data_dir, keep_png, workers))
    return CacheSummary(data_dir / "cache", {split: results[split] for split in splits})


def _plan_split(
    source_dir: Path, data_dir: Path, split: str, force: bool, keep_png: bool, classes: list[str], downloaded: bool
) -> _Plan | SplitSummary:
    """What building the split needs, or its summary when its cache is up to date."""
    archive = _source_file(source_dir / competition.archive_name(split))
    labels_path = _source_file(source_dir / competition.LABELS_FILE) if split == "train" else None
    remove_stale(split_dir(data_dir, split).parent, [f".{split}.partial-", f".{split}.old-"])
    remove_stale(data_dir, [f".{split}.png-partial-", f".{split}.old-"])
    labels = competition.read_labels(labels_path, classes) if labels_path else None
    stamps = {"source": _file_stamp(archive)}
    if labels_path:
        stamps["labels_file"] = _file_stamp(labels_path)
    if not force and _up_to_date(data_dir, split, stamps, classes, keep_png):
        manifest = read_manifest(data_dir, split)
        return SplitSummary(split, manifest["count"], manifest["bad"], True, 0.0, manifest.get("conversions", {}))
    return _Plan(split, archive, labels_path, labels, classes, stamps, downloaded)


def _build_splits(plans: list[_Plan], data_dir: Path, keep_png: bool, workers: int) -> dict[str, SplitSummary]:
    # The largest archive is the longest chain of work (header, then decompression): the others start first,
    # so their decompression overlaps its header's parsing, and their threads then yield the CPU to its reader.
    plans = sorted(plans, key=lambda plan: plan.archive.stat().st_size)
    builds: list[_SplitBuild] = []
    threads_ended = False
    with quiet_opencv():
        try:
            decoders = DecodeThreads(workers)
            try:
                for plan in plans:
                    builds.append(_SplitBuild(plan))
                    with _os_errors(plan.split, data_dir):
                        builds[-1].start(data_dir, keep_png, decoders, critical=plan is plans[-1])
                _wait(builds, decoders)
            except BaseException:
                for build in builds:
                    build.stopped.set()
                raise
            finally:
                with _ctrl_c_held():  # a thread left running would write into the folders that cleanup removes
                    for build in builds:
                        build.join()
                    decoders.close()
                    threads_ended = True  # from here on, nothing writes into the splits' folders
            summaries = {}
            for build in builds:  # the splits that worked are published, then the first error is raised
                if build.error is None:
                    with _os_errors(build.plan.split, data_dir):
                        summaries[build.plan.split] = build.finish(data_dir)
            for build in builds:
                if build.error is not None:
                    raise _explain(build.error, build.plan, data_dir)
            return summaries
        finally:
            with _ctrl_c_held():
                for build in builds:
                    build.cleanup(threads_ended)


@contextlib.contextmanager
def _ctrl_c_held():
    """A Ctrl-C pressed inside is raised as KeyboardInterrupt once the block has run (in the main thread, where
    Python handles signals): teardown that has begun finishes, however often the user presses it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _wait(builds: list[_SplitBuild], decoders: DecodeThreads) -> None:
    """Wait for the archives to be read and their images decoded, showing progress."""
    total = sum(len(build.output.writer.ids) for build in builds)
    names = "+".join(build.plan.split for build in builds)
    with progress_bar(total, names, "img", mininterval=0.5) as progress:
        while alive := [build.thread for build in builds if build.thread.is_alive()]:
            alive[0].join(0.25)
            progress.update(sum(build.output.decoded for build in builds) - progress.n)
        decoders.close()
        progress.update(sum(build.output.decoded for build in builds) - progress.n)


class _SplitBuild:
    """One split being built: its archive's header, its private folders, and the thread reading the archive."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.started = time.perf_counter()
        self.stopped = threading.Event()  # set: stop reading, hashing and decoding for this split
        self.source: ArchiveFile | None = None
        self.writer: SplitWriter | None = None
        self.output: SplitOutput | None = None
        self.png_partial: Path | None = None
        self.thread: threading.Thread | None = None
        self.hashes: dict[str, tuple[concurrent.futures.Future[str], threading.Thread]] = {}

    def start(self, data_dir: Path, keep_png: bool, decoders: DecodeThreads, critical: bool) -> None:
        """Read the header, make the private folders, start the reading thread (critical: it is the longest
        chain of work: other threads yield the CPU to it)."""
        plan = self.plan
        self.hashes = {
            key: _sha256_in_background(path, self.stopped)
            for key, path in (("source", plan.archive), ("labels_file", plan.labels_path))
            if path
        }
        z, fast = None, read_fast(plan.archive, plan.split)
        if fast is not None:
            members, stream = fast
        else:  # anything else a 7z may hold: py7zr reads it all
            try:
                self.source = ArchiveFile(plan.archive)
            except OSError as exc:
                raise _unreadable(plan.archive, exc) from None
            try:
                z = open_archive(self.source)
            except DamagedArchive as exc:
                raise _explain(exc, plan, data_dir) from None
            members, stream = read_members(z, plan.archive, plan.split), None
        if plan.labels is not None:
            competition.check_labels_match(plan.labels_path, plan.labels, members.ids.tolist(), plan.archive)
        with _ctrl_c_held():  # its folder exists only once cleanup knows of it
            self.writer = SplitWriter(
                data_dir, plan.split, len(members.ids), with_labels=plan.labels is not None, mmap=False
            )
        self.writer.ids[:] = members.ids
        if plan.labels is not None:
            index = {name: i for i, name in enumerate(plan.classes)}
            self.writer.labels[:] = [index[plan.labels[i]] for i in members.ids.tolist()]
        if keep_png:
            self.png_partial = data_dir / f".{plan.split}.png-partial-{os.getpid()}"
            self.png_partial.mkdir(parents=True)
        self.output = SplitOutput(self.writer, self.png_partial, self.stopped)
        self.thread = threading.Thread(
            target=self._read,
            args=(z, members, stream, decoders, critical),
            name=f"kagglecifar-{plan.split}.7z",
            daemon=True,
        )
        self.thread.start()

    def _read(self, z, members, stream, decoders: DecodeThreads, critical: bool) -> None:
        def emit(*batch):
            decoders.submit(self.output, *batch)

        if not critical:
            lower_thread_priority()
        try:
            if stream is not None:
                stream_lzma(self.plan.archive, stream, members, emit, self.stopped.is_set)
            else:
                stream_py7zr(self.source, z, self.plan.split, members, emit)
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - the main thread raises it
            self.output.fail(exc)

    @property
    def error(self) -> BaseException | None:
        return self.output.error if self.output else None

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def finish(self, data_dir: Path) -> SplitSummary:
        """Publish the split (its PNG folder first, with keep_png); the archive has been read completely."""
        plan, writer = self.plan, self.writer
        if self.output.decoded != len(writer.ids):  # never publish a split with rows missing
            raise RuntimeError(f"{plan.archive}: {self.output.decoded} of {len(writer.ids)} images were decoded")
        bad_ids = writer.ids[writer.bad].tolist()
        conversions = dict(sorted(self.output.counts.items()))
        if self.png_partial:
            publish(self.png_partial, data_dir / plan.split)
            self.png_partial = None
        manifest = {
            "split": plan.split,
            "classes": plan.classes,
            "bad_ids": bad_ids,
            "conversions": conversions,
            "seconds": round(time.perf_counter() - self.started, 2),
        }
        for key, stamp in plan.stamps.items():
            manifest[key] = {**stamp, "sha256": self.hashes[key][0].result()}
        writer.finish(manifest)
        return SplitSummary(
            plan.split, len(writer.ids), len(bad_ids), False, time.perf_counter() - self.started, conversions
        )

    def cleanup(self, threads_ended: bool) -> None:
        """Remove what an unfinished build began. Its open files stay open while a thread may still
        write to them (a second Ctrl-C while waiting for the threads): the process is ending anyway."""
        self.stopped.set()  # ends the hashing threads
        if self.writer is not None:
            if threads_ended:
                self.writer.__exit__(None, None, None)
            elif not self.writer.done:
                shutil.rmtree(self.writer.partial, ignore_errors=True)
        if self.png_partial is not None:
            shutil.rmtree(self.png_partial, ignore_errors=True)
        if self.source is not None and threads_ended:
            self.source.close()
        for _, thread in self.hashes.values():
            thread.join()  # stopped: at most one more block


def _explain(exc: BaseException, plan: _Plan, data_dir: Path) -> BaseException:
    """The user's error for a split's failure; errors that are not the user's go on unchanged."""
    if isinstance(exc, (DamagedArchive, CorruptMember)):
        advice = (
            "download it again with `kagglecifar fetch --force`"
            if plan.downloaded
            else "replace it with a complete copy of the competition's file"
        )
        return KaggleCifarError(f"{plan.archive}: damaged or truncated 7z archive ({exc}); {advice}")
    if isinstance(exc, OSError):
        if exc.filename and Path(exc.filename) == plan.archive:
            return _unreadable(plan.archive, exc)
        return _os_error(exc, plan.split, data_dir)
    return exc


def _unreadable(path: Path, exc: OSError) -> KaggleCifarError:
    return KaggleCifarError(f"{path}: cannot be read ({exc.strerror or exc}); check the file and its permissions")


@contextlib.contextmanager
def _os_errors(split: str, data_dir: Path):
    try:
        yield
    except OSError as exc:
        raise _os_error(exc, split, data_dir) from None


def _os_error(exc: OSError, split: str, data_dir: Path) -> KaggleCifarError:
    """One line naming the file and what to do. The sources are read elsewhere (with their own errors), so an
    OSError here comes from writing into data_dir, or from reading an archive that was readable when opened."""
    where = exc.filename or data_dir
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return KaggleCifarError(
            f"{where}: no space left on device while building the {split} cache; free some space and run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return KaggleCifarError(
            f"{where}: cannot write there ({exc.strerror}) while building the {split} cache; "
            "make the data folder writable or choose another with --data-dir"
        )
    return KaggleCifarError(f"{where}: {exc.strerror or exc} while building the {split} cache")


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
    same_sources = all({k: (manifest.get(key) or {}).get(k) for k in stamp} == stamp for key, stamp in stamps.items())
    return manifest.get("version") == CACHE_VERSION and same_sources and manifest.get("classes") == classes


def _sha256_in_background(path: Path, stopped: threading.Event) -> tuple[concurrent.futures.Future, threading.Thread]:
    """hashlib releases the GIL on large updates, so this overlaps with decompression; it ends when stopped."""
    future: concurrent.futures.Future[str] = concurrent.futures.Future()

    def run():
        lower_thread_priority()
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while (block := f.read(1 << 20)) and not stopped.is_set():
                    digest.update(block)
            future.set_result(digest.hexdigest())
        except OSError as exc:
            future.set_exception(_unreadable(path, exc))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(exc)

    thread = threading.Thread(target=run, name="kagglecifar-sha256", daemon=True)
    thread.start()
    return future, thread
