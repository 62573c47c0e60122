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
import os
import re
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import py7zr
import py7zr.archiveinfo
import py7zr.io
from py7zr.member import FILE_ATTRIBUTE_UNIX_EXTENSION
from py7zr.properties import Property as PROPERTY

from kagglecifar.errors import KaggleCifarError

LZMA2, LZMA1 = b"\x21", b"\x03\x01\x01"  # 7z method ids
READ_BYTES = 1 << 20  # compressed input per read
CHUNK_BYTES = 1 << 20  # decompressed output per step; one chunk's members make one batch
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
        return py7zr.SevenZipFile(cast(BinaryIO, source), "r")  # a RawIOBase: typeshed's IO[bytes] is nominal
    except Exception as exc:  # noqa: BLE001 - py7zr raises many types for a damaged file
        raise DamagedArchive(f"{type(exc).__name__}: {exc}") from None


def read_members(z: py7zr.SevenZipFile, archive: Path, split: str) -> Members:
    """Check every member of an archive py7zr opened and list the split's images."""
    files = list(z.files)  # z.list() would build a datetime per member: 5x slower
    data = [m for m in files if not m.emptystream]
    return check_members(
        archive,
        split,
        [m.filename for m in files],
        [m.is_directory for m in files],
        [m.is_symlink for m in files],
        [m.emptystream for m in files],
        [m.uncompressed for m in data],
        [-1 if m.crc32 is None else m.crc32 for m in data],
    )


def check_members(archive: Path, split: str, names, is_dir, is_symlink, empty, sizes, crcs) -> Members:
    """Refuse members that point outside the archive's folder or PNGs not named SPLIT/ID.png; list the images.
    Per member in header order: names, is_dir, is_symlink, empty (stored without data); per member with data:
    sizes, crcs (-1: none recorded)."""
    image = re.compile(rf"{re.escape(split)}/(\d{{1,18}})\.png").fullmatch  # an id that fits in int64
    escapes = re.compile(r"^[/\\]|^[A-Za-z]:|(^|[/\\])\.\.([/\\]|$)").search
    image_ids, member_list, empty_list = array.array("q"), array.array("q"), array.array("q")
    for name, directory, symlink, no_data in zip(names, is_dir, is_symlink, empty):
        match = image(name)  # SPLIT/ID.png: inside the folder by its form
        if symlink or (match is None and escapes(name)):
            raise KaggleCifarError(f"{archive}: member {name!r} points outside the archive's folder; refusing it")
        image_id = -1
        if not directory and (match or name.lower().endswith(".png")):
            if not match:
                raise KaggleCifarError(f"{archive}: member {name!r} is not named {split}/<id>.png")
            image_id = int(match.group(1))
            image_ids.append(image_id)
        (empty_list if no_data else member_list).append(image_id)
    if not image_ids:
        raise KaggleCifarError(f"{archive}: no {split}/<id>.png images in it")
    ids = np.sort(np.frombuffer(image_ids, np.int64))
    duplicates = ids[1:][ids[1:] == ids[:-1]]
    if len(duplicates):
        raise KaggleCifarError(f"{archive}: {len(duplicates)} image ids appear twice (first: {duplicates[0]})")
    member_ids, empty_ids = np.frombuffer(member_list, np.int64), np.frombuffer(empty_list, np.int64)
    rows = np.where(member_ids >= 0, np.searchsorted(ids, member_ids), -1)
    return Members(
        ids,
        rows,
        np.asarray(sizes, np.int64),
        np.asarray(crcs, np.int64),
        np.searchsorted(ids, empty_ids[empty_ids >= 0]).tolist(),
    )


# ---- the fast path: the header read compactly, the data decompressed by the standard library


class _Header(py7zr.archiveinfo.Header):
    """py7zr's header reader (signature, encoded header, streams: coders, sizes, CRCs), except the file list:
    kept as names and flags instead of a dict per member, which for 300k members takes ~190 MB and seconds.
    file_list is None when the list holds something only py7zr's own reader handles."""

    def _extract_header_info(self, fp) -> None:
        pid = fp.read(1)
        if pid == PROPERTY.MAIN_STREAMS_INFO:
            self.main_streams = py7zr.archiveinfo.StreamsInfo.retrieve(fp)
            pid = fp.read(1)
        self.file_list = None
        if pid == PROPERTY.FILES_INFO:
            self.file_list = _read_file_list(fp)
        elif pid != PROPERTY.END:
            raise py7zr.Bad7zFile(f"end id expected but {pid!r} found")


@dataclass
class _FileList:
    names: list[str]
    empty: np.ndarray  # bool per member: stored without data
    attributes: np.ndarray  # uint32 per member, 0 where none recorded


def _read_file_list(fp) -> _FileList | None:
    count = py7zr.archiveinfo.read_uint64(fp)
    names, empty, attributes = None, np.zeros(count, bool), np.zeros(count, np.uint32)
    while (prop := fp.read(1)) != PROPERTY.END:
        if not prop:
            raise py7zr.Bad7zFile("the file list ends early")
        data = fp.read(py7zr.archiveinfo.read_uint64(fp))
        if prop == PROPERTY.EMPTY_STREAM:
            empty = np.unpackbits(np.frombuffer(data, np.uint8))[:count].astype(bool)
        elif prop == PROPERTY.NAME:
            if data[:1] != b"\x00":
                return None  # names stored elsewhere
            names = data[1:].decode("utf-16-le").split("\x00")[:-1]
            names = [name.replace("\\", "/") for name in names]
        elif prop == PROPERTY.ATTRIBUTES:
            defined = (
                np.ones(count, bool)
                if data[:1] != b"\x00"
                else np.unpackbits(np.frombuffer(data[1:], np.uint8))[:count].astype(bool)
            )
            start = 1 if data[:1] != b"\x00" else 1 + (count + 7) // 8
            if data[start : start + 1] != b"\x00":
                return None  # attributes stored elsewhere
            attributes[defined] = np.frombuffer(data, "<u4", int(defined.sum()), start + 1)
        elif prop not in (
            PROPERTY.EMPTY_FILE,
            PROPERTY.CREATION_TIME,
            PROPERTY.LAST_ACCESS_TIME,
            PROPERTY.LAST_WRITE_TIME,
            PROPERTY.START_POS,
            PROPERTY.DUMMY,
        ):
            return None  # anti-items, comments, ...
    if names is None or len(names) != count or len(empty) != count:
        return None
    return _FileList(names, empty, attributes)


def read_fast(archive: Path, split: str) -> tuple[Members, LzmaStream] | None:
    """The members, and how to decompress them with the standard library, when the archive is a single plain
    LZMA/LZMA2 folder (Kaggle's are); None when py7zr must do it."""
    try:
        with open(archive, "rb") as fp:
            signature = py7zr.archiveinfo.SignatureHeader.retrieve(fp)
            after_header = fp.tell()
            fp.seek(signature.nextheaderofs, os.SEEK_CUR)
            header_bytes = fp.read(signature.nextheadersize)
            if len(header_bytes) != signature.nextheadersize or zlib.crc32(header_bytes) != signature.nextheadercrc:
                return None  # py7zr will say what is wrong
            header = _Header.retrieve(fp, io.BytesIO(header_bytes), after_header)
    except Exception:  # noqa: BLE001 - not an archive this reader understands: py7zr will say what is wrong
        return None
    files, streams = getattr(header, "file_list", None), header.main_streams
    stream = lzma_stream(streams, after_header)
    if files is None:
        return None
    data_count = int((~files.empty).sum())
    sub = streams.substreamsinfo
    if (
        stream is None
        or sub is None
        or sub.num_unpackstreams_folders != [data_count]
        or sub.unpacksizes is None
        or len(sub.unpacksizes) != data_count
    ):
        return None
    crcs = [crc if defined else -1 for crc, defined in zip(sub.digests, sub.digestsdefined)]
    attributes = files.attributes
    unix = (attributes & FILE_ATTRIBUTE_UNIX_EXTENSION) != 0
    is_symlink = np.where(
        unix, (attributes >> 16) & 0o170000 == stat.S_IFLNK, (attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT) != 0
    )
    is_dir = (attributes & stat.FILE_ATTRIBUTE_DIRECTORY) != 0
    members = check_members(
        archive, split, files.names, is_dir.tolist(), is_symlink.tolist(), files.empty.tolist(), sub.unpacksizes, crcs
    )
    if int(members.sizes.sum()) != streams.unpackinfo.folders[0].get_unpack_size():
        return None
    return members, stream


@dataclass
class LzmaStream:
    """Where the archive's one LZMA/LZMA2 folder lies in the file, and the lzma filter chain that decodes it."""

    start: int
    packed_size: int
    filters: list[dict]


def lzma_stream(streams, after_header: int) -> LzmaStream | None:
    """From py7zr's main StreamsInfo: how to decompress a single plain LZMA/LZMA2 folder, else None."""
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
    return LzmaStream(after_header + streams.packinfo.packpos, streams.packinfo.packsizes[0], filters)


def stream_lzma(
    archive: Path, stream: LzmaStream, members: Members, emit: Callable, stopped: Callable[[], bool]
) -> None:
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
                emit(member, [0], [len(member)], members.rows[k : k + 1], members.crcs[k : k + 1])
                pending, k = [], k + 1
            j = int(np.searchsorted(ends, end, side="right"))
            if j > k:
                emit(out, starts[k:j] - done, ends[k:j] - done, members.rows[k:j], members.crcs[k:j])
                k = j
            if k < n and starts[k] < end:
                pending = [out[int(starts[k]) - done :]]
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
        self.output: Callable[[], int] | None = None  # during extraction: how many bytes have been decompressed so far

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
        self.factory, self.row = factory, row
        self.parts: list[bytes] | None = []

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
