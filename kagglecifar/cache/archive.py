"""Reading the competition's 7z archives: member-name safety, image ids, and streaming the members out.

py7zr parses the header. A solid archive whose one folder is plain LZMA2 or LZMA (Kaggle's are) is then
decompressed by the standard library's lzma module straight from the file and cut into members by the sizes
in the header; py7zr spends about as long again in per-member Python. Anything else a 7z may hold (filters
such as BCJ, other coders, several folders, encryption) goes through py7zr's own extraction.

Both hand members on in batches through emit(buffer, starts, ends, rows, crcs): the members are
buffer[starts[i]:ends[i]], bound for cache row rows[i] (-1: not an image), with the header's CRC32 crcs[i]
still to be checked (None: already checked).
"""
from __future__ import annotations

import array
import io
import lzma
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import py7zr
import py7zr.io

from kagglecifar.errors import KaggleCifarError

LZMA2, LZMA1 = b"\x21", b"\x03\x01\x01"  # 7z method ids
READ_BYTES = 1 << 20  # compressed input per read
CHUNK_BYTES = 4 << 20  # decompressed output per step; one chunk's members make one batch
PY7ZR_BATCH = 256  # members per batch on the py7zr path


class DamagedArchive(Exception):
    """The archive's data cannot be decompressed as its header describes."""


@dataclass
class Members:
    """What the header says about a split's archive, in the order its data is stored."""

    ids: np.ndarray  # the split's image ids, ascending: the cache's row order
    rows: np.ndarray  # per member with data: its cache row, -1 for non-image members
    sizes: np.ndarray  # per member with data: bytes
    crcs: np.ndarray  # per member with data: CRC32 from the header, -1 where it records none
    empty_rows: list[int]  # image members stored without data (0-byte files): undecodable


def open_archive(source: ArchiveFile) -> py7zr.SevenZipFile:
    try:
        return py7zr.SevenZipFile(source, "r")
    except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
        raise DamagedArchive(f"{type(exc).__name__}: {exc}") from None


def read_members(z: py7zr.SevenZipFile, archive: Path, split: str) -> Members:
    """Check every member name and list the split's images; nothing is decompressed."""
    pattern = re.compile(rf"{re.escape(split)}/(\d{{1,18}})\.png")  # an id that fits in int64
    # 8 bytes per number, not a Python int each: this runs while py7zr's header objects fill memory
    ids, member_ids, sizes, crcs, empty_ids = (array.array("q") for _ in range(5))
    for m in z.files:  # z.list() would build a datetime per member: 5x slower
        name = m.filename
        parts = re.split(r"[/\\]", name)
        if m.is_symlink or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise KaggleCifarError(f"{archive}: member {name!r} points outside the archive's folder; refusing it")
        image_id = -1
        if not m.is_directory and name.lower().endswith(".png"):
            match = pattern.fullmatch(name)
            if not match:
                raise KaggleCifarError(f"{archive}: member {name!r} is not named {split}/<id>.png")
            image_id = int(match.group(1))
            ids.append(image_id)
        if m.emptystream:
            if image_id >= 0:
                empty_ids.append(image_id)
            continue
        member_ids.append(image_id)
        sizes.append(m.uncompressed)
        crcs.append(-1 if m.crc32 is None else m.crc32)
    if not ids:
        raise KaggleCifarError(f"{archive}: no {split}/<id>.png images in it")
    ids = np.sort(np.frombuffer(ids, np.int64))
    duplicates = ids[1:][ids[1:] == ids[:-1]]
    if len(duplicates):
        raise KaggleCifarError(f"{archive}: {len(duplicates)} image ids appear twice (first: {duplicates[0]})")
    member_ids = np.frombuffer(member_ids, np.int64)
    rows = np.where(member_ids >= 0, np.searchsorted(ids, member_ids), -1)
    return Members(ids, rows, np.frombuffer(sizes, np.int64), np.frombuffer(crcs, np.int64),
                   np.searchsorted(ids, np.frombuffer(empty_ids, np.int64)).tolist())


@dataclass
class LzmaStream:
    """Where the archive's one LZMA/LZMA2 folder lies in the file, and the lzma filter chain that decodes it."""

    start: int
    packed_size: int
    filters: list[dict]


def lzma_stream(z: py7zr.SevenZipFile, members: Members) -> LzmaStream | None:
    """How to decompress the archive's data with the standard library, or None when py7zr must do it."""
    streams = z.header.main_streams
    if streams is None or streams.unpackinfo is None or len(streams.unpackinfo.folders) != 1:
        return None
    folder = streams.unpackinfo.folders[0]
    if len(folder.coders) != 1 or len(streams.packinfo.packsizes) != 1:
        return None  # a filter (BCJ, delta), encryption, or another coder in front
    coder = folder.coders[0]
    method, props = coder["method"], coder["properties"] or b""
    if (coder["numinstreams"], coder["numoutstreams"]) != (1, 1):
        return None
    if method == LZMA2 and len(props) == 1 and props[0] <= 40:
        p = props[0]
        dict_size = 0xFFFFFFFF if p == 40 else (2 | (p & 1)) << (p // 2 + 11)
        filters = [{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}]
    elif method == LZMA1 and len(props) == 5 and props[0] < 9 * 5 * 5:
        lc, lp, pb = props[0] % 9, props[0] // 9 % 5, props[0] // 45
        dict_size = max(int.from_bytes(props[1:], "little"), 4096)  # liblzma's minimum; a larger one is harmless
        filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]
    else:
        return None
    if len(members.sizes) != sum(streams.substreamsinfo.num_unpackstreams_folders) or \
            int(members.sizes.sum()) != folder.get_unpack_size():
        return None  # let py7zr make sense of it, or say what is wrong
    return LzmaStream(z.afterheader + streams.packinfo.packpos, streams.packinfo.packsizes[0], filters)


def stream_lzma(archive: Path, stream: LzmaStream, members: Members, emit: Callable,
                stopped: Callable[[], bool]) -> None:
    """Decompress the archive's one folder with the standard library and emit its members chunk by chunk.

    Memory: the decoder's dictionary, one chunk of output, and what the caller keeps of earlier chunks.
    """
    left, total = stream.packed_size, int(members.sizes.sum())
    ends = np.cumsum(members.sizes)
    starts = ends - members.sizes
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=stream.filters)
    done, k, n = 0, 0, len(ends)  # bytes decompressed; the first member not emitted yet
    pending: list[bytes] = []  # the start of member k, when it began in an earlier chunk
    if members.empty_rows:
        zeros = [0] * len(members.empty_rows)
        emit(b"", zeros, zeros, members.empty_rows, None)
    with open(archive, "rb") as f:
        f.seek(stream.start)
        while done < total:
            if stopped():
                return
            data = b""
            if decoder.needs_input:
                data = f.read(min(READ_BYTES, left))
                if not data:
                    raise DamagedArchive(f"the compressed data ends after {done} of {total} bytes")
                left -= len(data)
            try:
                out = decoder.decompress(data, max_length=CHUNK_BYTES)
            except lzma.LZMAError as exc:
                raise DamagedArchive(f"LZMAError: {exc}") from None
            if not out:
                if decoder.eof or not (data or decoder.needs_input):  # no output, and none to come
                    raise DamagedArchive(f"the compressed data ends after {done} of {total} bytes")
                continue
            end = done + len(out)
            if end > total:
                raise DamagedArchive(f"more data than the header's {total} bytes")
            if pending:
                need = int(ends[k]) - done
                if need > len(out):
                    pending.append(out)
                    done = end
                    continue
                member = b"".join(pending) + out[:need]
                emit(member, [0], [len(member)], members.rows[k:k + 1], members.crcs[k:k + 1])
                pending, k = [], k + 1
            j = int(np.searchsorted(ends, end, side="right"))
            if j > k:
                emit(out, starts[k:j] - done, ends[k:j] - done, members.rows[k:j], members.crcs[k:j])
                k = j
            if k < n and starts[k] < end:
                pending = [out[int(starts[k]) - done:]]
            done = end


class ArchiveFile(io.RawIOBase):
    """The archive file; while py7zr extracts members, it is read only a little ahead of the output.

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
    """Maps each member py7zr opens to its cache row and emits the finished members in batches."""

    def __init__(self, split: str, ids: np.ndarray, emit: Callable):
        self.ids, self.emit = ids, emit
        self.pattern = re.compile(rf"{re.escape(split)}/(\d+)\.png")
        self.rows: list[int] = []
        self.datas: list[bytes] = []
        self.received = 0
        self.bytes_out = 0  # decompressed so far, all members
        self.error: BaseException | None = None

    def create(self, filename: str) -> _Member:
        # py7zr passes the output path; read_members already made every PNG member exactly SPLIT/ID.png
        match = self.pattern.fullmatch("/".join(filename.rsplit("/", 2)[-2:]))
        if match is None:
            return _Member(self, None)  # non-image members
        return _Member(self, int(np.searchsorted(self.ids, int(match.group(1)))))

    def deliver(self, row: int, data: bytes) -> None:
        self.rows.append(row)
        self.datas.append(data)
        self.received += 1
        if len(self.rows) == PY7ZR_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        ends = np.cumsum([len(d) for d in self.datas])
        batch = (b"".join(self.datas), ends - [len(d) for d in self.datas], ends, self.rows, None)
        self.rows, self.datas = [], []
        try:
            self.emit(*batch)
        except BaseException as exc:
            self.error = exc  # lets stream_py7zr tell it from py7zr's own errors
            raise


def stream_py7zr(source: ArchiveFile, z: py7zr.SevenZipFile, split: str, members: Members, emit: Callable) -> None:
    """Extract every member with py7zr (which checks the CRCs) and emit the images in batches."""
    factory = _MemberFactory(split, members.ids, emit)
    source.output = lambda: factory.bytes_out
    try:
        # py7zr resolves each member's output path below `path` (an lstat per folder level) although the
        # factory writes nothing there; "/" is the cheapest, and read_members vetted the names already
        z.extractall(path=Path("/"), factory=factory)
        factory.flush()
    except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
        if exc is factory.error:
            raise
        raise DamagedArchive(f"{type(exc).__name__}: {exc}") from None
    if factory.received != len(members.ids):
        raise KaggleCifarError(f"{source.name}: only {factory.received} of {len(members.ids)} images could be read")
