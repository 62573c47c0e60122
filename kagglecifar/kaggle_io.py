"""Everything that talks to Kaggle, through the official client's KaggleApi (nothing else imports `kaggle`).

Credentials, in the client's order: KAGGLE_API_TOKEN (or ~/.kaggle/access_token), KAGGLE_USERNAME +
KAGGLE_KEY, kaggle.json in KAGGLE_CONFIG_DIR (default ~/.kaggle), `kaggle auth login`. The key only ever
goes to the client: we never print it, log it, put it in an error message or write it anywhere.

kaggle 2.2 never retries a 429 or a 5xx, so every call here goes through `_retrying`: ATTEMPTS tries,
the server's Retry-After when it sends one, else exponential backoff with a cap.

A data file is fetched by the client's own resumable `download_file` into NAME.part (its ".kaggle-partial"
marker lets a later run continue it with a Range request), checked against the size in the competition's
file list, and only then renamed to NAME: a file under its final name is always complete.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import stat
import sys
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from kagglecifar import cache, competition, provenance, submission
from kagglecifar.errors import KaggleCifarError

REQUIRED_FILES = ("train.7z", "test.7z", "trainLabels.csv", "sampleSubmission.csv")
TOKEN_PAGE = "https://www.kaggle.com/settings"

# Plain values so that tests (and impatient users) can change them.
ATTEMPTS = 5  # tries per call, the first one included
BACKOFF_SECONDS = 2.0  # wait before the second try; doubles with each further try
MAX_BACKOFF_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 600.0  # a longer Retry-After is cut to this
POLL_SECONDS = 5.0  # between checks of a new submission's status
CHUNK_BYTES = 1 << 20  # download read size; a broken connection loses at most this much of the partial file
LEADERBOARD_PAGES = 200  # of 50 teams each, the page size Kaggle uses for lists


@dataclass
class DownloadSummary:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete
    bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        if not self.downloaded:
            return f"all {len(self.skipped)} files already downloaded"
        return (f"{len(self.downloaded)} files downloaded ({_size(self.bytes)}), "
                f"{len(self.skipped)} already complete")


@dataclass
class SubmissionResult:
    ref: int
    file_name: str
    status: str  # "complete", or "pending" when not scored yet (--no-wait, timeout)
    public_score: float | None = None
    seconds: float = 0.0


@dataclass
class SubmissionInfo:
    ref: int
    date: datetime | None
    file_name: str
    description: str
    status: str  # "pending", "complete" or "error"
    public_score: float | None
    private_score: float | None
    error: str
    team_name: str


@dataclass
class LeaderboardEntry:
    rank: int
    team_name: str
    score: float | None
    date: datetime | None


@dataclass
class Leaderboard:
    top: list[LeaderboardEntry]
    teams: int
    team_name: str  # whom we looked for: your team name from your submissions, else your username
    you: LeaderboardEntry | None  # your row, when you are on the leaderboard
    best_score: float | None  # your best public score among your submissions
    would_rank: int | None  # where best_score would place (the leaderboard of a closed competition stays frozen)


@dataclass
class _Connection:
    api: object  # kaggle's KaggleApi, authenticated
    competition: str
    credentials: str  # where the credentials came from (a path or variable names, never the key)
    username: str = ""


class _Transient(Exception):
    """A failure worth another try that is not an HTTP error (a download that does not add up, a failed upload)."""


# ---- connecting ----------------------------------------------------------------------------------


def _config_dir() -> Path:
    """Where kaggle.json belongs: KAGGLE_CONFIG_DIR, else ~/.kaggle (or ~/.config/kaggle when only that has one)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return xdg if not home.exists() and (xdg / "kaggle.json").is_file() else home


def _find_credentials(folder: Path) -> str:
    """Name where the credentials are (without reading out the key), or explain where to put them."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    path = folder / "kaggle.json"
    if path.is_file():
        if os.name != "nt" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            _note(f"warning: {path} can be read by other users; run: chmod 600 {path}")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            doc = None
        if not (isinstance(doc, dict) and doc.get("username") and doc.get("key")):
            raise KaggleCifarError(f"{path}: not a Kaggle API token file (needs \"username\" and \"key\"); "
                                   f"download a new one at {TOKEN_PAGE} (API -> Create New Token)")
        return str(path)
    for token_file in (Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"):
        if token_file.is_file():
            return str(token_file)
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return "`kaggle auth login` credentials"
    raise KaggleCifarError(f"no Kaggle credentials: save your API token file (from {TOKEN_PAGE}, API -> Create New "
                           f"Token) as {path} and chmod 600 it, or set KAGGLE_USERNAME and KAGGLE_KEY "
                           f"(or KAGGLE_API_TOKEN)")


def _connect(competition: str) -> _Connection:
    folder = _config_dir()
    conn = _Connection(None, competition, _find_credentials(folder))
    with _client_output():  # importing kaggle signs in once already and prints help when it cannot
        from kaggle.api.kaggle_api_extended import KaggleApi
    conn.api = api = KaggleApi()
    # KaggleApi reads these once, when kaggle is imported: take them from the environment as it is now.
    # Never "--verbose": the client would print request headers, the key among them.
    api.config_dir, api.config = str(folder), str(folder / "kaggle.json")
    api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []

    def sign_in():
        with _client_output():
            api.authenticate()

    try:
        _retrying(conn, "signing in to Kaggle", sign_in)
    except SystemExit:  # the client gave up on every kind of credentials
        raise KaggleCifarError(f"{conn.credentials}: Kaggle did not accept these credentials (expired or revoked "
                               f"token?); create a new API token at {TOKEN_PAGE}") from None
    conn.username = api.config_values.get("username") or ""
    return conn


@contextlib.contextmanager
def _client_output():
    """The client prints notes, auth help and errors on stdout: keep them out of our output, but at hand."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def _note(message: str) -> None:
    print(f"kagglecifar: {message}", file=sys.stderr, flush=True)


# ---- retries and errors --------------------------------------------------------------------------


def retry_delay(attempt: int, retry_after: str | None = None) -> float:
    """Seconds to wait after failed try number `attempt`: the server's Retry-After if any, else backoff."""
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(retry_after) - datetime.now(timezone.utc)).total_seconds()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
    return min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def _retrying(conn: _Connection, what: str, call):
    """call(), tried again on 429, 5xx and network trouble; any other failure becomes one KaggleCifarError."""
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error

    attempts = max(1, ATTEMPTS)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (requests.RequestException, Urllib3Error, _Transient) as exc:
            response = getattr(exc, "response", None)
            status = response.status_code if response is not None else None
            if (status is not None and status != 429 and status < 500) or attempt == attempts:
                raise _error(conn, what, exc, status, attempt) from None
            delay = retry_delay(attempt, response.headers.get("Retry-After") if response is not None else None)
            _note(f"{what}: {_reason(exc)}; trying again in {delay:.0f} s ({attempt + 1}/{attempts})")
            time.sleep(delay)


def _reason(exc: Exception) -> str:
    """The server's own words when it gave any, else the gist of the network error."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            message = response.json().get("message")
        except Exception:  # not JSON, or no body
            message = None
        return f"{response.status_code} {message or response.reason or ''}".strip()
    errno_text = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    if errno_text:
        return errno_text.group(0)
    while isinstance(exc, BaseException) and exc.args:  # requests wraps urllib3 errors in their first argument
        exc = exc.args[0]
    return str(exc)[:200]


def _error(conn: _Connection, what: str, exc: Exception, status: int | None, attempts: int) -> KaggleCifarError:
    reason, tries = _reason(exc), f" after {attempts} tries" if attempts > 1 else ""
    page = f"https://www.kaggle.com/competitions/{conn.competition}"
    if status == 401:
        return KaggleCifarError(f"{what}: Kaggle rejected the credentials from {conn.credentials} ({reason}); check "
                                f"the username and key, or create a new API token at {TOKEN_PAGE}")
    if status == 403:
        return KaggleCifarError(f"{what}: Kaggle refused ({reason}); accept the competition's rules at {page}/rules "
                                f"with the account of {conn.credentials}")
    if status == 404:
        return KaggleCifarError(f"{what}: not found ({reason}); is --competition {conn.competition!r} right? "
                                f"(the SLUG in https://www.kaggle.com/competitions/SLUG)")
    if status == 429:
        return KaggleCifarError(f"{what}: Kaggle keeps rate-limiting us ({reason}){tries}; wait a few minutes")
    if status is not None and status >= 500:
        return KaggleCifarError(f"{what}: Kaggle server error ({reason}){tries}; try again later")
    if status is not None:
        return KaggleCifarError(f"{what}: Kaggle answered {reason}")
    if isinstance(exc, _Transient):
        return KaggleCifarError(f"{what}: {reason}{tries}")
    return KaggleCifarError(f"{what}: cannot reach Kaggle ({reason}){tries}; check the internet connection")


# ---- fetch -----------------------------------------------------------------------------------------


def download_competition(competition: str, data_dir: Path, force: bool = False) -> DownloadSummary:
    """Download REQUIRED_FILES into data_dir, skipping files already complete (unless force)."""
    started = time.perf_counter()
    data_dir = Path(data_dir)
    conn = _connect(competition)
    sizes = _file_sizes(conn)
    missing = [name for name in REQUIRED_FILES if name not in sizes]
    if missing:
        raise KaggleCifarError(f"competition {competition!r} has no {', '.join(missing)} (it has: "
                               f"{', '.join(sorted(sizes)) or 'no files'}); is --competition right?")
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


def _file_sizes(conn: _Connection) -> dict[str, int | None]:
    """Name -> size in bytes (None when Kaggle does not say) of every file of the competition."""
    sizes, token = {}, None
    while True:
        def list_page(token=token):
            with _client_output():
                return conn.api.competition_list_files(conn.competition, token)

        page = _retrying(conn, f"listing the files of competition {conn.competition!r}", list_page)
        sizes.update({f.name: f.total_bytes or None for f in page.files})
        token = page.next_page_token
        if not token:
            return sizes


def _download(conn: _Connection, name: str, final: Path, size: int | None) -> None:
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFileRequest

    part = final.with_name(final.name + ".part")
    if part.is_file() and part.stat().st_size:
        _note(f"{part}: {_size(part.stat().st_size)} there from an earlier run; resuming if the server allows")
    _note(f"downloading {name}" + (f" ({_size(size)})" if size else ""))

    def attempt():
        request = ApiDownloadDataFileRequest()
        request.competition_name, request.file_name = conn.competition, name
        with _client_output(), conn.api.build_kaggle_client() as kaggle:
            response = kaggle.competitions.competition_api_client.download_data_file(request)
            # Kaggle may hand out a file inside a .zip of its own (NAME.zip): unwrap it below.
            zipped = urlsplit(response.url).path.endswith(".zip") and not name.endswith(".zip")
            target = final.with_name(final.name + ".zip.part") if zipped else part
            try:
                conn.api.download_file(response, str(target), kaggle.http_client(), quiet=False, resume=True,
                                       chunk_size=CHUNK_BYTES, max_retries=0)
            except ValueError as exc:  # the client's size check failed: these bytes are not the file, start over
                _discard(target)
                raise _Transient(str(exc)) from None
            finally:
                response.close()
        if zipped:
            _unzip(target, name, part)
        got = part.stat().st_size
        if size is not None and got != size:  # the same bytes would come again: no point in retrying
            _discard(part)
            raise KaggleCifarError(f"downloading {name}: got {got:,} bytes, the competition's file list says "
                                   f"{size:,}; run `kagglecifar fetch` again later")

    try:
        _retrying(conn, f"downloading {name}", attempt)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, final)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise KaggleCifarError(f"{part}: disk full while downloading {name}"
                                   + (f" ({_size(size)})" if size else "")
                                   + "; free some space and run `kagglecifar fetch` again (it resumes)") from None
        raise KaggleCifarError(f"{part}: cannot write the download ({exc.strerror or exc})") from None


def _unzip(zip_path: Path, name: str, out: Path) -> None:
    """Copy member `name` of Kaggle's zip wrapper to `out` (our own path: member paths are never used)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            member = next((m for m in zf.infolist() if Path(m.filename).name == name and not m.is_dir()), None)
            if member is None:
                raise _Transient(f"{zip_path.name} from Kaggle has no {name}")
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _Transient(f"{zip_path.name} from Kaggle is not a valid zip ({exc})") from None
    finally:
        _discard(zip_path)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _discard(path: Path) -> None:
    """Drop a partial download and the client's resume marker, so nothing is resumed onto bad bytes."""
    Path(path).unlink(missing_ok=True)
    Path(f"{path}.kaggle-partial").unlink(missing_ok=True)


def train_classes(data_dir: Path) -> list[str]:
    """The class names (sorted): from the train cache when built, else from trainLabels.csv."""
    if cache.is_complete(data_dir, "train"):
        return list(cache.read_manifest(data_dir, "train")["classes"])
    path = Path(data_dir) / competition.LABELS_FILE
    try:
        return sorted(set(competition.read_labels(path).values()))
    except FileNotFoundError:
        raise KaggleCifarError(f"{path}: not found; run `kagglecifar fetch` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KaggleCifarError(f"{path}: unreadable ({exc})") from None


# ---- submit ----------------------------------------------------------------------------------------


def submit(csv_path: Path, message: str, competition: str, wait: bool = True, timeout: float = 600.0,
           data_dir: Path = Path("data")) -> SubmissionResult:
    """Check csv_path, upload it, and wait up to `timeout` seconds for its public score.

    The check (submission.check_submission against data_dir's sampleSubmission.csv and classes) comes first:
    an invalid file raises KaggleCifarError before anything is sent.
    """
    started = time.perf_counter()
    csv_path = Path(csv_path)
    submission.check_submission(csv_path, Path(data_dir) / "sampleSubmission.csv", train_classes(data_dir))
    conn = _connect(competition)

    def upload():
        with _client_output() as printed:
            created = conn.api.competition_submit(str(csv_path), message, competition, quiet=False)
        if created.message == conn.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            last = [line for line in printed.getvalue().splitlines() if line.strip()][-1:]
            raise _Transient(f"the upload failed ({last[0][:200] if last else 'no reason given'})")
        return created

    created = _retrying(conn, f"submitting {csv_path}", upload)
    result = SubmissionResult(created.ref, csv_path.name, "pending")
    deadline = time.monotonic() + timeout
    if wait:
        _note(f"submitted {csv_path.name}; waiting up to {timeout:.0f} s for Kaggle to score it")
    while wait:
        mine = next((s for s in _submissions(conn) if s.ref == created.ref), None)
        if mine is not None and mine.status == "error":
            raise KaggleCifarError(f"{csv_path}: Kaggle could not score it: {mine.error or 'no reason given'}")
        if mine is not None and mine.status == "complete":
            result.status, result.public_score = "complete", mine.public_score
            break
        if time.monotonic() + POLL_SECONDS > deadline:
            break
        time.sleep(POLL_SECONDS)
    result.seconds = time.perf_counter() - started
    try:  # CSV.submitted.json: the submission and the runs it came from (`compare` shows their scores)
        provenance.record_submission(csv_path, result, message, competition)
    except KaggleCifarError as exc:
        _note(f"submitted, but the record of it could not be written: {exc}")
    return result


def list_submissions(competition: str, count: int = 50) -> list[SubmissionInfo]:
    """Your latest `count` submissions, newest first."""
    return _submissions(_connect(competition), count)


def _submissions(conn: _Connection, count: int = 20) -> list[SubmissionInfo]:
    def fetch():
        with _client_output():
            return conn.api.competition_submissions(conn.competition, page_size=count)

    items = _retrying(conn, f"listing your submissions to {conn.competition!r}", fetch) or []
    return [SubmissionInfo(s.ref, s.date, s.file_name or "", s.description or "", s.status.name.lower(),
                           _score(s.public_score), _score(s.private_score), s.error_description or "",
                           s.team_name or "") for s in items if s is not None]


def leaderboard(competition: str, top: int = 20) -> Leaderboard:
    """The top of the public leaderboard and where you stand on it."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    conn = _connect(competition)
    mine = _submissions(conn)
    team = next((s.team_name for s in mine if s.team_name), "") or conn.username
    rows, token = [], None
    for _ in range(LEADERBOARD_PAGES):
        def get_page(token=token):
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size, request.page_token = competition, 50, token
            with _client_output(), conn.api.build_kaggle_client() as kaggle:
                return kaggle.competitions.competition_api_client.get_leaderboard(request)

        page = _retrying(conn, f"reading the leaderboard of {competition!r}", get_page)
        rows += page.submissions
        token = page.next_page_token
        if not token:
            break
    board = [LeaderboardEntry(rank, r.team_name or "", _score(r.score), r.submission_date)
             for rank, r in enumerate(rows, start=1)]
    you = next((e for e in board if e.team_name.casefold() == team.casefold()), None)
    scores = [s.public_score for s in mine if s.public_score is not None]
    ranked = [e.score for e in board if e.score is not None]
    higher_is_better = len(ranked) < 2 or ranked[0] >= ranked[-1]
    best = (max(scores) if higher_is_better else min(scores)) if scores else None
    would_rank = None
    if best is not None:
        would_rank = 1 + sum(s > best if higher_is_better else s < best for s in ranked)
    return Leaderboard(board[:top], len(board), team, you, best, would_rank)


def _score(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
