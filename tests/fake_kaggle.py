"""A loopback fake of the Kaggle API that the real `kaggle` client talks to, for tests.

    solution = make_competition(files_dir)             # a tiny competition download, and its test labels
    with serving(monkeypatch, tmp_path, files_dir, solution=solution) as fake:
        ...                      # kagglecifar / KaggleApi calls now reach the fake (HOME is tmp_path)
        fake.called("CreateSubmission")

(`FakeKaggle(...)` as a context manager plus `fake.client_env(home)` does the same without pytest.)

How the client gets here: KAGGLE_API_ENVIRONMENT=LOCALHOST makes kagglesdk call http://localhost/api/v1/...,
and HTTP_PROXY points requests at this server (127.0.0.1, a free port), so it sees every request in
absolute form. It speaks the JSON shapes of kagglesdk's CompetitionApiService (ListDataFiles,
DownloadDataFile -> 302 to /blobs/NAME, StartSubmissionUpload -> PUT /upload/TOKEN, CreateSubmission,
ListSubmissions, GetLeaderboard), of DatasetApiService (ListDatasetFiles, DownloadDataset of one file or of the
whole dataset as a zip -> 302 to /blobs/datasets/OWNER/NAME/...) and OAuthService/IntrospectToken.

Knobs: `fail(endpoint, status, times, retry_after)` answers errors; `cut(name, at_byte, times)` drops the
connection midway through a download; `rules_accepted = False` gives 403s; `zipped` serves a file inside a
.zip wrapper as Kaggle does for some files; `listed_sizes` makes the file list lie; `polls_until_scored` keeps
a submission pending for a few list calls; `others` and `leaderboard_open` shape the leaderboard.
`datasets` maps "OWNER/NAME" to a folder whose files (subfolders included) are that dataset; `rules_accepted`
and `zipped` (by file name) apply to them too; the whole-dataset zip is the blob "datasets/OWNER/NAME/archive.zip".
Every request is recorded in `requests` (method, path, endpoint, headers, body).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import socket
import threading
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import cv2
import numpy as np
import py7zr

API = "/api/v1/"
RULES_MESSAGE = "You must accept this competition's rules before you'll be able to download files."


@dataclass
class Recorded:
    method: str
    path: str
    endpoint: str  # the RPC name (e.g. "ListDataFiles"), "blob", "upload" or ""
    headers: dict
    body: bytes


@dataclass
class Failure:
    endpoint: str
    status: int
    times: int
    retry_after: str | None = None


@dataclass
class Submission:
    ref: int
    file_name: str
    description: str
    date: str
    status: str = "PENDING"
    final_status: str = "COMPLETE"
    public_score: str | None = None
    error: str | None = None
    polls_left: int = 0

    def as_json(self, team: str) -> dict:
        doc = {
            "ref": self.ref,
            "date": self.date,
            "description": self.description,
            "fileName": self.file_name,
            "status": self.status,
            "teamName": team,
            "submittedBy": team,
        }
        if self.status == "COMPLETE":
            doc["publicScore"] = self.public_score
        if self.status == "ERROR":
            doc["errorDescription"] = self.error
        return doc


@dataclass
class FakeKaggle:
    files_dir: Path | None = None
    solution: dict = field(default_factory=dict)  # test id -> true label, for scoring
    test_ids: set | None = None  # every id a submission must have, when only some are scored (default: solution's)
    competition: str = "cifar-10"
    username: str = "alice"
    key: str = "fake-secret-key-0123456789"
    team_name: str = "Alice Team"
    others: list = field(default_factory=list)  # [(team name, score)] already on the leaderboard
    rules_accepted: bool = True
    leaderboard_open: bool = True  # False: like a finished competition, scores do not join the leaderboard
    zipped: set = field(default_factory=set)
    polls_until_scored: int = 1
    listed_sizes: dict = field(default_factory=dict)  # name -> size the file list claims instead of the real one
    tokens: dict = field(default_factory=dict)  # access token -> username
    datasets: dict = field(default_factory=dict)  # "OWNER/NAME" -> folder holding the dataset's files

    def __post_init__(self):
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.cuts: dict[str, list[int]] = {}
        self.uploads: dict[str, dict] = {}
        self.submissions: list[Submission] = []
        self.lock = threading.Lock()

    # ---- control -------------------------------------------------------------------------------

    def fail(self, endpoint: str, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` requests to `endpoint` (an RPC name, "blob" or "upload") with `status`."""
        self.failures.append(Failure(endpoint, status, times, retry_after))

    def cut(self, name: str, at: int, times: int = 1) -> None:
        """Drop the connection after byte `at` of data file `name`, for the next `times` downloads crossing it."""
        self.cuts[name] = [at, times]

    def called(self, endpoint: str) -> list[Recorded]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def client_env(self, home: Path) -> dict:
        """Environment that points the real client here, with HOME and the Kaggle config under `home`."""
        return {
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(Path(home) / ".kaggle"),
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "NO_PROXY": "",
            "no_proxy": "",
            "KAGGLE_USERNAME": self.username,
            "KAGGLE_KEY": self.key,
        }

    def __enter__(self) -> FakeKaggle:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- serving -------------------------------------------------------------------------------

    def handle(self, req: _Handler) -> None:
        path = unquote(urlsplit(req.path).path)
        body = _read_body(req)
        endpoint = (
            path[len(API) :].rsplit("/", 1)[-1]
            if path.startswith(API)
            else "blob"
            if path.startswith("/blobs/")
            else "upload"
            if path.startswith("/upload/")
            else ""
        )
        with self.lock:
            self.requests.append(Recorded(req.command, path, endpoint, dict(req.headers), body))
            failure = next((f for f in self.failures if f.endpoint == endpoint and f.times > 0), None)
            if failure:
                failure.times -= 1
        if failure:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return _error(req, failure.status, f"injected failure {failure.status}", headers)
        if endpoint == "blob":
            return self._blob(req, path[len("/blobs/") :])
        if endpoint == "upload":
            with self.lock:
                self.uploads.setdefault(path[len("/upload/") :], {})["data"] = body
            return _send(req, 200, b"")
        if not path.startswith(API):
            return _error(req, 404, "no such page")
        request = json.loads(body or b"{}")
        if endpoint == "IntrospectToken":
            user = self.tokens.get(request.get("token"))
            return _json(req, {"active": bool(user), "username": user or ""})
        if not self._authorized(req.headers.get("Authorization", "")):
            return _error(req, 401, "Unauthenticated")
        if request.get("competitionName", self.competition) != self.competition:
            return _error(req, 404, "Competition not found")
        handler = getattr(self, f"_rpc_{endpoint}", None)
        if handler is None:
            return _error(req, 404, f"fake Kaggle has no {endpoint}")
        return handler(req, request)

    def _authorized(self, header: str) -> bool:
        kind, _, value = header.partition(" ")
        if kind == "Bearer":
            return value in self.tokens
        if kind == "Basic":
            user, _, key = base64.b64decode(value).decode().partition(":")
            return user == self.username and key == self.key
        return False

    def _rpc_ListDataFiles(self, req, request):
        files = sorted(p for p in Path(self.files_dir).iterdir() if p.is_file())
        return _json(
            req,
            {
                "files": [
                    {
                        "ref": p.name,
                        "name": p.name,
                        "totalBytes": self.listed_sizes.get(p.name, p.stat().st_size),
                        "creationDate": "2014-10-21T00:00:00.000Z",
                    }
                    for p in files
                ]
            },
        )

    def _rpc_DownloadDataFile(self, req, request):
        if not self.rules_accepted:
            return _error(req, 403, RULES_MESSAGE)
        name = request.get("fileName", "")
        if not (Path(self.files_dir) / name).is_file():
            return _error(req, 404, f"file {name} not found")
        blob = name + (".zip" if name in self.zipped else "")
        req.send_response(302)
        req.send_header("Location", f"http://localhost/blobs/{quote(blob)}")
        req.send_header("Content-Length", "0")
        req.end_headers()

    def _blob(self, req, blob: str) -> None:
        data, source = self._dataset_blob(blob) if blob.startswith("datasets/") else self._competition_blob(blob)
        mtime = source.stat().st_mtime
        etag = f'"{source.stat().st_mtime_ns:x}-{len(data):x}"'
        start, status = 0, 200
        ranged = req.headers.get("Range", "")
        if ranged.startswith("bytes=") and req.headers.get("If-Range", etag) == etag:
            start = int(ranged[len("bytes=") :].split("-")[0])
            if start >= len(data):
                return _error(req, 416, "range not satisfiable")
            status = 206
        end = len(data)
        with self.lock:
            cut = self.cuts.get(blob)
            if cut and cut[1] > 0 and start < cut[0] < end:
                cut[1] -= 1
                end = cut[0]
            else:
                cut = None
        req.send_response(status)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Content-Length", str(len(data) - start))
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("ETag", etag)
        req.send_header("Last-Modified", formatdate(mtime, usegmt=True))
        if status == 206:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        req.end_headers()
        try:
            req.wfile.write(data[start:end])
            req.wfile.flush()
            if cut:  # promised more bytes than we send: the client sees a broken download
                req.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client went away (e.g. it never read a response it replaced with a ranged one)
        req.close_connection = True

    def _competition_blob(self, blob: str) -> tuple[bytes, Path]:
        source = Path(self.files_dir) / blob.removesuffix(".zip")
        return (_zip_of(source.parent, [source]) if blob.endswith(".zip") else source.read_bytes()), source

    # ---- datasets ------------------------------------------------------------------------------

    def _dataset_folder(self, request) -> Path | None:
        folder = self.datasets.get(f"{request.get('ownerSlug')}/{request.get('datasetSlug')}")
        return Path(folder) if folder else None

    def _rpc_ListDatasetFiles(self, req, request):
        folder = self._dataset_folder(request)
        if folder is None:
            return _error(req, 404, "Dataset not found")
        files = _files_in(folder)
        start, size = int(request.get("pageToken") or 0), int(request.get("pageSize") or 20)
        page = [
            {
                "ref": name,
                "name": name,
                "totalBytes": self.listed_sizes.get(name, (folder / name).stat().st_size),
                "creationDate": "2020-01-01T00:00:00.000Z",
            }
            for name in files[start : start + size]
        ]
        more = str(start + size) if start + size < len(files) else ""
        return _json(req, {"datasetFiles": page, "nextPageToken": more})

    def _rpc_DownloadDataset(self, req, request):
        folder = self._dataset_folder(request)
        if folder is None:
            return _error(req, 404, "Dataset not found")
        if not self.rules_accepted:
            return _error(req, 403, "You must accept this dataset's terms before downloading it.")
        name = request.get("fileName")
        base = f"datasets/{request['ownerSlug']}/{request['datasetSlug']}"
        if name is None:
            blob = f"{base}/archive.zip"
        elif name in _files_in(folder):
            blob = f"{base}/files/{name}" + (".zip" if name in self.zipped else "")
        else:
            return _error(req, 404, f"file {name} not found")
        req.send_response(302)
        req.send_header("Location", f"http://localhost/blobs/{quote(blob)}")
        req.send_header("Content-Length", "0")
        req.end_headers()

    def _dataset_blob(self, blob: str) -> tuple[bytes, Path]:
        _, owner, slug, what = blob.split("/", 3)
        folder = Path(self.datasets[f"{owner}/{slug}"])
        if what == "archive.zip":
            return _zip_of(folder, [folder / name for name in _files_in(folder)]), folder
        name = what.removeprefix("files/")
        if name.removesuffix(".zip") in self.zipped and blob.endswith(".zip"):
            name = name.removesuffix(".zip")
            return _zip_of((folder / name).parent, [folder / name]), folder / name
        return (folder / name).read_bytes(), folder / name

    # ---- submissions ---------------------------------------------------------------------------

    def _rpc_StartSubmissionUpload(self, req, request):
        if not self.rules_accepted:
            return _error(req, 403, "You must accept this competition's rules before you can submit.")
        token = uuid.uuid4().hex
        with self.lock:
            self.uploads[token] = {"fileName": request.get("fileName", "")}
        return _json(req, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def _rpc_CreateSubmission(self, req, request):
        upload = self.uploads.get(request.get("blobFileTokens", ""))
        if not upload or "data" not in upload:
            return _error(req, 400, "no uploaded file for this token")
        submission = Submission(
            len(self.submissions) + 1,
            upload["fileName"],
            request.get("submissionDescription", ""),
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            polls_left=self.polls_until_scored,
        )
        try:
            submission.public_score = f"{self.score(upload['data']):.5f}"
        except ValueError as exc:
            submission.final_status, submission.error = "ERROR", str(exc)
        with self.lock:
            self.submissions.append(submission)
        return _json(
            req, {"message": "Successfully submitted to CIFAR-10 - Object Recognition in Images", "ref": submission.ref}
        )

    def score(self, data: bytes) -> float:
        """Accuracy on `solution`'s ids (like Kaggle, which scores the real images among the junk); ValueError for
        a file Kaggle would not score."""
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        if not rows or rows[0] != ["id", "label"]:
            raise ValueError("Submission must have the header id,label")
        predicted = {int(row[0]): row[1] for row in rows[1:] if row}
        expected = set(self.solution) if self.test_ids is None else self.test_ids
        if set(predicted) != expected:
            raise ValueError(f"Submission must have {len(expected)} rows, one per test id")
        return sum(predicted[i] == label for i, label in self.solution.items()) / len(self.solution)

    def _rpc_ListSubmissions(self, req, request):
        with self.lock:
            for s in self.submissions:
                if s.status == "PENDING":
                    if s.polls_left > 0:
                        s.polls_left -= 1
                    else:
                        s.status = s.final_status
            docs = [s.as_json(self.team_name) for s in reversed(self.submissions)]
        return _json(req, {"submissions": docs})

    def _rpc_GetLeaderboard(self, req, request):
        scores = [float(s.public_score) for s in self.submissions if s.status == "COMPLETE"]
        board = list(self.others) + ([(self.team_name, max(scores))] if scores and self.leaderboard_open else [])
        board.sort(key=lambda entry: -entry[1])
        start = int(request.get("pageToken") or 0)
        size = int(request.get("pageSize") or 20)
        page = [
            {
                "teamId": 100 + start + i,
                "teamName": team,
                "score": f"{score:.5f}",
                "submissionDate": "2024-01-01T00:00:00.000Z",
            }
            for i, (team, score) in enumerate(board[start : start + size])
        ]
        more = str(start + size) if start + size < len(board) else ""
        return _json(req, {"submissions": page, "nextPageToken": more})


@contextmanager
def serving(monkeypatch, home: Path, files_dir: Path, **options):
    """A running FakeKaggle with the client pointed at it, HOME under `home`, and kagglecifar's retries made fast."""
    from kagglecifar import kaggle_io

    fast = {
        kaggle_io.client: {"ATTEMPTS": 3, "BACKOFF_SECONDS": 0.01, "MAX_RETRY_AFTER_SECONDS": 0.05},
        kaggle_io.submissions: {"POLL_SECONDS": 0.01},
        kaggle_io.downloads: {"CHUNK_BYTES": 4096},
    }
    for module, values in fast.items():
        for name, value in values.items():
            monkeypatch.setattr(module, name, value)
    with FakeKaggle(files_dir, **options) as fake:
        for name, value in fake.client_env(home).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
        yield fake


def make_competition(
    folder: Path, n_train: int = 24, n_test: int = 30, classes=("cat", "dog", "frog"), seed: int = 0
) -> dict:
    """Write a tiny competition download (noise PNGs, so archives are not tiny); return the test solution."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("test", n_test)):
        with py7zr.SevenZipFile(folder / f"{split}.7z", "w") as archive:
            for i in range(1, count + 1):
                ok, png = cv2.imencode(".png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                archive.writestr(png.tobytes(), f"{split}/{i}.png")
    train_rows = "".join(f"{i},{classes[i % len(classes)]}\n" for i in range(1, n_train + 1))
    (folder / "trainLabels.csv").write_text("id,label\n" + train_rows)
    (folder / "sampleSubmission.csv").write_text(
        "id,label\n" + "".join(f"{i},{classes[0]}\n" for i in range(1, n_test + 1))
    )
    return {i: classes[int(rng.integers(len(classes)))] for i in range(1, n_test + 1)}


def _files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())


def _zip_of(folder: Path, files: list[Path]) -> bytes:
    """A zip of files, named relative to folder (deterministic: the same bytes for every request, so ranges work)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.fake.handle(self)

    do_POST = do_PUT = do_GET

    def log_message(self, *args):
        pass


def _read_body(req: BaseHTTPRequestHandler) -> bytes:
    if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(req.rfile.readline().split(b";")[0], 16)
            chunks.append(req.rfile.read(size))
            req.rfile.readline()
            if size == 0:
                return b"".join(chunks)
    return req.rfile.read(int(req.headers.get("Content-Length") or 0))


def _send(
    req, status: int, payload: bytes, content_type: str = "application/json", headers: dict | None = None
) -> None:
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    req.end_headers()
    req.wfile.write(payload)


def _json(req, doc: dict) -> None:
    _send(req, 200, json.dumps(doc).encode())


def _error(req, status: int, message: str, headers: dict | None = None) -> None:
    """Kaggle's error shape: the client raises HTTPError(message) from it."""
    _send(req, status, json.dumps({"code": status, "message": message}).encode(), headers=headers)
