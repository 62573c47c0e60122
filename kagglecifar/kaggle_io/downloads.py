"""Downloading competition files and datasets.

A data file is fetched by the client's own resumable `download_file` into NAME.part (its ".kaggle-partial"
marker lets a later run continue it with a Range request), checked against the size in the file list, and
only then renamed to NAME: a file under its final name is always complete.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from kagglecifar.console import interactive
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import escapes_folder, write_text_atomic
from kagglecifar.kaggle_io.client import Connection, Transient, client_output, connect, note, reason, retrying

REQUIRED_FILES = ("train.7z", "test.7z", "trainLabels.csv", "sampleSubmission.csv")
CHUNK_BYTES = 1 << 20  # download read size; a broken connection loses at most this much of the partial file


@dataclass
class DownloadSummary:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete
    bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        if not self.downloaded:
            return f"all {len(self.skipped)} files already downloaded"
        return f"{len(self.downloaded)} files downloaded ({_size(self.bytes)}), {len(self.skipped)} already complete"


def download_competition(competition: str, data_dir: Path, force: bool = False) -> DownloadSummary:
    """Download REQUIRED_FILES into data_dir, skipping files already complete (unless force)."""
    started = time.perf_counter()
    data_dir = Path(data_dir)
    conn = connect(competition)
    sizes = _file_sizes(conn)
    missing = [name for name in REQUIRED_FILES if name not in sizes]
    if missing:
        raise KaggleCifarError(
            f"competition {competition!r} has no {', '.join(missing)} (it has: "
            f"{', '.join(sorted(sizes)) or 'no files'}); is --competition right?"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    result = DownloadSummary()
    for name in REQUIRED_FILES:
        final, size = data_dir / name, sizes[name]
        if not force and final.is_file() and size in (None, final.stat().st_size):
            result.skipped.append(name)
            continue
        _download(conn, name, final, size)
        result.downloaded.append(name)
        result.bytes += final.stat().st_size
    result.seconds = time.perf_counter() - started
    return result


def _file_sizes(conn: Connection) -> dict[str, int | None]:
    """Name -> size in bytes (None when Kaggle does not say) of every file of the competition."""
    sizes, token = {}, None
    while True:

        def list_page(token=token):
            with client_output():
                return conn.api.competition_list_files(conn.competition, token)

        page = retrying(conn, f"listing the files of competition {conn.competition!r}", list_page)
        sizes.update({f.name: f.total_bytes or None for f in page.files})
        token = page.next_page_token
        if not token:
            return sizes


def _download(conn: Connection, name: str, final: Path, size: int | None) -> None:
    def open_download(kaggle):
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFileRequest

        request = ApiDownloadDataFileRequest()
        request.competition_name, request.file_name = conn.competition, name
        return kaggle.competitions.competition_api_client.download_data_file(request)

    _fetch(conn, name, final, size, open_download)


def _unzip(zip_path: Path, name: str, out: Path) -> None:
    """Copy member `name` of Kaggle's zip wrapper to `out` (our own path: member paths are never used)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            member = next((m for m in zf.infolist() if Path(m.filename).name == name and not m.is_dir()), None)
            if member is None:
                raise Transient(f"{zip_path.name} from Kaggle has no {name}")
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise Transient(f"{zip_path.name} from Kaggle is not a valid zip ({exc})") from None
    finally:
        _discard(zip_path)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _discard(path: Path) -> None:
    """Drop a partial download and the client's resume marker, so nothing is resumed onto bad bytes."""
    Path(path).unlink(missing_ok=True)
    Path(f"{path}.kaggle-partial").unlink(missing_ok=True)


# ---- Kaggle datasets ----------------------------------------------------------------------------------

MAX_SEPARATE_FILES = 32  # a dataset with more files than this (an image folder) comes as Kaggle's one zip of it
DATASET_RECORD = ".kagglecifar-dataset.json"  # written once a dataset's zip is unpacked: what it held
DATASET_PAGE_SIZE = 200
_DATASET_REF = re.compile(
    r"(?:https?://(?:www\.)?kaggle\.com/datasets/)?([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)"
    r"(?:/(?:versions/)?(\d+))?/?"
)


def download_dataset(dataset: str, dest_dir: Path, force: bool = False) -> DownloadSummary:
    """Download Kaggle dataset OWNER/NAME (or OWNER/NAME/VERSION) into dest_dir, keeping its folders.

    Up to MAX_SEPARATE_FILES files come one by one, each resumable and checked against the size in the
    dataset's file list, as competition files are; a dataset with more comes as Kaggle's zip of it (resumable),
    unpacked with every member's CRC checked and no member path or link leaving dest_dir. Files already
    complete are skipped unless force.
    """

    started = time.perf_counter()
    owner, slug, version = _dataset_parts(dataset)
    ref = f"{owner}/{slug}" + (f"/{version}" if version else "")
    dest_dir = Path(dest_dir)
    conn = connect(ref)
    sizes, complete_list = _dataset_files(conn, owner, slug, version)
    if not sizes:
        raise KaggleCifarError(f"dataset {ref!r} has no files")

    def request(file_name: str | None):
        def call(kaggle):
            from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

            r = ApiDownloadDatasetRequest()
            r.owner_slug, r.dataset_slug, r.dataset_version_number, r.file_name = owner, slug, version, file_name
            return kaggle.datasets.dataset_api_client.download_dataset(r)

        return _dataset_errors(conn, ref, f"downloading {file_name or ref}", call)

    result = DownloadSummary()
    if complete_list:
        for name, size in sizes.items():
            final = dest_dir / name
            if not force and final.is_file() and size in (None, final.stat().st_size):
                result.skipped.append(name)
                continue
            _fetch(conn, name, final, size, request(name))
            result.downloaded.append(name)
            result.bytes += final.stat().st_size
    else:
        record = dest_dir / DATASET_RECORD
        held = None if force else _unpacked_files(record, ref, dest_dir)
        if held is not None:
            result.skipped = held
        else:
            archive = dest_dir / f".{slug}.zip"  # hidden: never taken for the dataset's own data
            if force or not archive.is_file():
                _fetch(conn, f"{slug}.zip", archive, None, request(None))
            result.bytes = archive.stat().st_size
            files = _unpack_dataset_zip(archive, dest_dir)
            write_text_atomic(record, json.dumps({"dataset": ref, "files": files}, indent=1) + "\n")
            archive.unlink()
            result.downloaded = sorted(files)
    result.seconds = time.perf_counter() - started
    return result


def dataset_folder(dataset: str) -> Path:
    """OWNER/NAME (OWNER/NAME/VERSION for a pinned version): where a dataset's files go under a downloads folder."""
    owner, slug, version = _dataset_parts(dataset)
    return Path(owner, slug, *([str(version)] if version else []))


def _dataset_parts(dataset: str) -> tuple[str, str, int | None]:
    match = _DATASET_REF.fullmatch(dataset.strip())
    if not match:
        raise KaggleCifarError(
            f"--dataset {dataset!r}: expected OWNER/NAME, as in "
            "https://www.kaggle.com/datasets/OWNER/NAME (optionally OWNER/NAME/VERSION)"
        )
    owner, slug, version = match.groups()
    return owner, slug, int(version) if version else None


def _dataset_errors(conn: Connection, ref: str, what: str, call):
    """call, with the 403 and 404 of a dataset explained (the answers _retrying gives are about competitions)."""
    import requests

    def translated(*args):
        try:
            return call(*args)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            page = "https://www.kaggle.com/datasets/" + "/".join(ref.split("/")[:2])
            if status == 403:
                raise KaggleCifarError(
                    f"{what}: Kaggle refused ({reason(exc)}); open {page} signed in with the "
                    f"account of {conn.credentials} and accept the dataset's terms"
                ) from None
            if status == 404:
                raise KaggleCifarError(
                    f"{what}: not found ({reason(exc)}); is --dataset {ref!r} right? (OWNER/NAME "
                    "as in https://www.kaggle.com/datasets/OWNER/NAME; a private dataset needs "
                    "its owner's credentials)"
                ) from None
            raise

    return translated


def _dataset_files(conn: Connection, owner: str, slug: str, version: int | None) -> tuple[dict, bool]:
    """({name: size or None}, whether that is all of them): listing stops past MAX_SEPARATE_FILES files."""
    from kagglesdk.datasets.types.dataset_api_service import ApiListDatasetFilesRequest

    ref, sizes, token = conn.competition, {}, None
    while True:

        def list_page(kaggle_token=token):
            r = ApiListDatasetFilesRequest()
            r.owner_slug, r.dataset_slug, r.dataset_version_number = owner, slug, version
            r.page_size, r.page_token = DATASET_PAGE_SIZE, kaggle_token
            with client_output(), conn.api.build_kaggle_client() as kaggle:
                return kaggle.datasets.dataset_api_client.list_dataset_files(r)

        what = f"listing the files of dataset {ref!r}"
        page = retrying(conn, what, _dataset_errors(conn, ref, what, list_page))
        if page.error_message:
            raise KaggleCifarError(f"{what}: Kaggle answered {page.error_message}")
        for f in page.files:
            if not f.name or escapes_folder(f.name):
                raise KaggleCifarError(f"{what}: file name {f.name!r} would land outside the download folder")
            sizes[f.name] = f.total_bytes or None
        token = page.next_page_token
        if len(sizes) > MAX_SEPARATE_FILES or not token:
            return sizes, len(sizes) <= MAX_SEPARATE_FILES


def _fetch(conn: Connection, name: str, final: Path, size: int | None, open_download) -> None:
    """Download `name` into final via NAME.part (resumable), unwrapping Kaggle's zip, checking the size.

    open_download(kaggle_client) makes the download request and returns its (redirected, streaming) response.
    """
    part = final.with_name(final.name + ".part")
    if part.is_file() and part.stat().st_size:
        note(f"{part}: {_size(part.stat().st_size)} there from an earlier run; resuming if the server allows")
    note(f"downloading {name}" + (f" ({_size(size)})" if size else ""))
    final.parent.mkdir(parents=True, exist_ok=True)

    def attempt():
        with client_output(), conn.api.build_kaggle_client() as kaggle:
            response = open_download(kaggle)
            # Kaggle may hand out a file inside a .zip of its own (NAME.zip): unwrap it below.
            zipped = urlsplit(response.url).path.endswith(".zip") and not name.endswith(".zip")
            target = final.with_name(final.name + ".zip.part") if zipped else part
            try:
                conn.api.download_file(
                    response,
                    str(target),
                    kaggle.http_client(),
                    quiet=not interactive(),
                    resume=True,
                    chunk_size=CHUNK_BYTES,
                    max_retries=0,
                )
            except ValueError as exc:  # the client's size check failed: these bytes are not the file, start over
                _discard(target)
                raise Transient(str(exc)) from None
            finally:
                response.close()
        if zipped:
            _unzip(target, Path(name).name, part)
        got = part.stat().st_size
        if size is not None and got != size:  # the same bytes would come again: no point in retrying
            _discard(part)
            raise KaggleCifarError(
                f"downloading {name}: got {got:,} bytes, the file list says {size:,}; "
                "run `kagglecifar fetch` again later"
            )

    try:
        retrying(conn, f"downloading {name}", attempt)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, final)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise KaggleCifarError(
                f"{part}: disk full while downloading {name}"
                + (f" ({_size(size)})" if size else "")
                + "; free some space and run `kagglecifar fetch` again (it resumes)"
            ) from None
        raise KaggleCifarError(f"{part}: cannot write the download ({exc.strerror or exc})") from None


def _unpack_dataset_zip(archive: Path, dest_dir: Path) -> dict[str, int]:
    """Unpack a dataset's zip into dest_dir; return {member name: size}.

    Each member is written aside and renamed, so a file under its final name is complete; one sync at the end
    (not one per file: image folders have tens of thousands) comes before the caller records the unpacking.
    zipfile checks each member's CRC as it is read to the end.
    """

    files = {}
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:
                is_link = stat.S_ISLNK(m.external_attr >> 16)
                if escapes_folder(m.filename) or is_link:
                    raise KaggleCifarError(
                        f"{archive}: member {m.filename!r} is a link or points outside {dest_dir}; refusing the archive"
                    )
            for m in members:
                out = dest_dir / m.filename
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
                try:
                    with zf.open(m) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
                    os.replace(tmp, out)
                finally:
                    tmp.unlink(missing_ok=True)
                files[m.filename] = m.file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        _discard(archive)
        raise KaggleCifarError(
            f"{archive}: the dataset's zip from Kaggle is damaged ({exc}); run `kagglecifar "
            "fetch` again to download it anew"
        ) from None
    except OSError as exc:
        raise KaggleCifarError(
            f"{exc.filename or dest_dir}: cannot unpack the dataset ({exc.strerror or exc})"
        ) from None
    os.sync()
    return files


def _unpacked_files(record: Path, ref: str, dest_dir: Path) -> list[str] | None:
    """The files a complete earlier unpacking of dataset ref left (all still there, same sizes), else None."""
    try:
        doc = json.loads(record.read_text())
        files = doc["files"] if doc.get("dataset") == ref else None
        if files and all(
            (dest_dir / name).is_file() and (dest_dir / name).stat().st_size == size for name, size in files.items()
        ):
            return sorted(files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None
