"""Reading the competition's 7z archives: member-name safety, image ids, and streaming members out."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import py7zr
import py7zr.io
from tqdm import tqdm

from kagglecifar.cache.decode import DecodePool, quiet_opencv
from kagglecifar.cache.store import SplitWriter
from kagglecifar.errors import KaggleCifarError


def open_archive(source: ArchiveFile, archive: Path) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(source, "r")
    except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
        raise damaged(archive, exc) from None


def damaged(archive: Path, exc: Exception) -> KaggleCifarError:
    return KaggleCifarError(f"{archive}: damaged or truncated 7z archive ({type(exc).__name__}: {exc}); "
                            "download it again with `kagglecifar fetch --force`")


def image_ids(z: py7zr.SevenZipFile, archive: Path, split: str) -> np.ndarray:
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

    def __init__(self, split: str, ids: np.ndarray, pool: DecodePool, progress):
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


class ArchiveFile(io.RawIOBase):
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


def decode_archive(source: ArchiveFile, z: py7zr.SevenZipFile, split: str, writer: SplitWriter, workers: int,
                   png_dir: Path | None) -> dict:
    """Stream every member of the archive into the writer's rows; return the conversion counts."""
    archive = Path(source.name)
    log_level = cv2.utils.logging.getLogLevel()
    quiet_opencv()
    pool = DecodePool(writer, workers, png_dir)
    try:
        with tqdm(total=len(writer.ids), desc=split, unit="img", file=sys.stderr, mininterval=0.5) as progress:
            factory = _MemberFactory(split, writer.ids, pool, progress)
            source.output = lambda: factory.bytes_out
            try:
                # py7zr resolves each member's output path below `path` (an lstat per folder level) although
                # the factory writes nothing there; "/" is the cheapest, and image_ids vetted the names already
                z.extractall(path=Path("/"), factory=factory)
            except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
                if exc is pool.error:
                    raise
                raise damaged(archive, exc) from None
            conversions = pool.finish()
    finally:
        pool.close()
        cv2.utils.logging.setLogLevel(log_level)
    if factory.received != len(writer.ids):
        raise KaggleCifarError(f"{archive}: only {factory.received} of {len(writer.ids)} images could be read")
    return conversions
