"""PNG bytes -> (32, 32, 3) uint8 RGB pixels, one image or a batch into the cache's rows."""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import signal
from pathlib import Path

import cv2
import numpy as np

from kagglecifar.cache.store import IMAGE_SHAPE, SplitWriter
from kagglecifar.errors import KaggleCifarError

BATCH = 256  # PNGs (~3 KB each) per job for a decoding process; at most 2 jobs per process wait


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


def decode_batch(images_path: Path, rows: list[int], datas: list[bytes], png_paths: list[Path] | None):
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


def quiet_opencv() -> None:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no warning per truncated PNG


def _start_worker() -> None:
    quiet_opencv()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops us


class DecodePool:
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
            return self._collect(decode_batch(*job))
        self.pending.append(self.executor.submit(decode_batch, *job))
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
