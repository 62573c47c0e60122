"""PNG bytes -> (32, 32, 3) uint8 RGB pixels: one image, a batch of archive members into a split's rows,
and the threads that decode batches while the archives are being decompressed.

Threads, not processes: the LZMA decoder, cv2.imdecode, zlib.crc32 on large buffers and os.pwrite all
release the GIL, so threads use every core, and nothing can outlive the process that started them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np

from kagglecifar.cache.store import IMAGE_SHAPE, ROW_BYTES, SplitWriter

BACKGROUND_NICE = 10  # added to the nice value of the decoding, hashing and smaller archive's threads
MAX_QUEUED = 8  # batches waiting for a decoding thread; a batch is one decompressed chunk (~1 MB)


class Stopped(Exception):
    """The split was stopped: another thread failed or the user interrupted."""


class CorruptMember(Exception):
    """A member's bytes do not match the CRC32 the archive's header records for it."""


MAX_SIDE = 4096  # pixels: larger images are not decoded (a 10000x10000 16-bit PNG of 3 MB decodes to 600 MB)
JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's frame header, without decoding; None for anything else
    (or a header too damaged to say)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in JPEG_FRAMES and at + 9 <= len(data):
            return int.from_bytes(data[at + 7 : at + 9], "big"), int.from_bytes(data[at + 5 : at + 7], "big")
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, or the scan began before any frame header
            return None
        at += 2 + length
    return None


def decodable_size(data: bytes | memoryview) -> bool:
    """A PNG or JPEG whose header declares at most MAX_SIDE pixels each way (and at least one)."""
    size = image_size(data)
    return size is not None and 0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE


def png_to_rgb32(data: bytes | memoryview) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Decode PNG bytes to (32, 32, 3) uint8 RGB and name the conversions made; (None, ()) if undecodable.

    16-bit -> 8-bit (rounded), gray -> RGB, palette -> RGB, RGBA -> RGB by dropping alpha (the stored colours
    are kept: compositing would invent a background), any other size -> 32x32 with INTER_AREA.
    """
    if not data or not decodable_size(data):  # sized from the header first: never a decode of any size
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


@contextlib.contextmanager
def quiet_opencv():
    """No OpenCV warning per truncated PNG while decoding."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def lower_thread_priority() -> None:
    """Let the calling thread yield the CPU to the threads at normal priority: the one reading the largest
    archive is the longest chain of work, and on 2 cores it would otherwise share its core with helpers.
    Linux only, where a nice value applies to a single thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE)


class SplitOutput:
    """Where one split's decoded images go (its writer's images.npy, written with os.pwrite, and its bad
    flags), what was done (conversion counts, images decoded), and the split's first error."""

    def __init__(self, writer: SplitWriter, png_dir: Path | None, stopped: threading.Event):
        self.writer, self.png_dir = writer, png_dir
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.decoded = 0  # image members handled, decodable or not
        self.error: BaseException | None = None
        self.stopped = stopped  # set: drop this split's batches

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stopped.set()

    def write_rows(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Write block[i] to row rows[i] (rows < 0 are skipped), one os.pwrite per run of consecutive rows."""
        keep = np.flatnonzero(rows >= 0)
        if not len(keep):
            return
        targets = rows[keep]
        breaks = np.flatnonzero((np.diff(targets) != 1) | (np.diff(keep) != 1)) + 1
        for first, last in zip(np.r_[0, breaks], np.r_[breaks, len(keep)]):
            data = block[keep[first] : keep[last - 1] + 1].data.cast("B")
            offset = self.writer.images_offset + int(targets[first]) * ROW_BYTES
            try:
                while data:
                    written = os.pwrite(self.writer.images_fd, data, offset)
                    data, offset = data[written:], offset + written
            except OSError as exc:  # pwrite names no file
                raise OSError(exc.errno, exc.strerror, str(self.writer.images_path)) from None


def decode_batch(output: SplitOutput, buffer: bytes, starts, ends, rows, crcs=None) -> None:
    """Decode the members buffer[starts[i]:ends[i]] into their cache rows rows[i].

    rows[i] < 0: not an image (its CRC is still checked). crcs: the header's CRC32 per member, -1 where it
    records none; None when the archive reader checked them already.
    """
    view = memoryview(buffer)
    rows = np.asarray(rows, np.int64)
    crcs = None if crcs is None else np.asarray(crcs).tolist()
    block = np.zeros((len(rows), *IMAGE_SHAPE), np.uint8)
    bad: list[int] = []
    counts: collections.Counter[str] = collections.Counter()
    for i, (start, end, row) in enumerate(zip(np.asarray(starts).tolist(), np.asarray(ends).tolist(), rows.tolist())):
        data = view[start:end]
        if crcs is not None and crcs[i] >= 0 and zlib.crc32(data) != crcs[i]:
            name = f"{output.writer.final.name}/{output.writer.ids[row]}.png" if row >= 0 else "a member"
            raise CorruptMember(f"{name} fails its CRC32 check")
        if row < 0:
            continue
        image, done = png_to_rgb32(data)
        if image is None:
            bad.append(row)
        else:
            block[i] = image
            counts.update(done)
        if output.png_dir:
            (output.png_dir / f"{output.writer.ids[row]}.png").write_bytes(data)
    output.write_rows(rows, block)
    with output.lock:
        output.writer.bad[bad] = True
        output.counts.update(counts)
        output.decoded += int((rows >= 0).sum())


class DecodeThreads:
    """Decodes batches on `count` threads (0: right away, in the thread that submits them).

    A batch that fails stops its split (SplitOutput.fail); the batches of a stopped split are dropped.
    """

    def __init__(self, count: int):
        self.queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self.threads = [
            threading.Thread(target=self._run, name=f"kagglecifar-png-{i}", daemon=True) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, output: SplitOutput, *batch) -> None:
        """Queue a batch (decode_batch's arguments after the output); waits while the queue is full.
        Raises Stopped once the split is stopped."""
        if not self.threads:
            self._decode(output, batch)
            if output.stopped.is_set():
                raise Stopped
            return
        while not output.stopped.is_set():
            try:
                return self.queue.put((output, batch), timeout=0.1)
            except queue.Full:
                pass
        raise Stopped

    def _run(self) -> None:
        lower_thread_priority()
        while (item := self.queue.get()) is not None:
            self._decode(*item)

    @staticmethod
    def _decode(output: SplitOutput, batch: tuple) -> None:
        if output.stopped.is_set():
            return
        try:
            decode_batch(output, *batch)
        except BaseException as exc:  # noqa: BLE001 - the split's owner raises it
            output.fail(exc)

    def close(self) -> None:
        """Decode what is queued (dropping the batches of stopped splits), then end the threads."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            join(thread)
        self.threads = []


def join(thread: threading.Thread) -> None:
    """Thread.join in short waits, so a Ctrl-C reaches the main thread while it waits here. A blocking join
    wakes only for a signal delivered to this very thread, not for one that lands on another thread or for
    _thread.interrupt_main(), and a decoding thread that waits for the stop would then never be released."""
    while thread.is_alive():
        thread.join(0.1)
