"""Signing in to Kaggle through the official client, retries and one-line errors: what every Kaggle call shares.

Credentials, in the client's order: KAGGLE_API_TOKEN (or ~/.kaggle/access_token), KAGGLE_USERNAME +
KAGGLE_KEY, kaggle.json in KAGGLE_CONFIG_DIR (default ~/.kaggle), `kaggle auth login`. The key only ever
goes to the client: we never print it, log it, put it in an error message or write it anywhere.

kaggle 2.2 never retries a 429 or a 5xx, so every call goes through `retrying`: ATTEMPTS tries,
the server's Retry-After when it sends one, else exponential backoff with a cap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from kagglecifar.errors import KaggleCifarError

TOKEN_PAGE = "https://www.kaggle.com/settings"

# Plain values so that tests (and impatient users) can change them.
ATTEMPTS = 5  # tries per call, the first one included
BACKOFF_SECONDS = 2.0  # wait before the second try; doubles with each further try
MAX_BACKOFF_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 600.0  # a longer Retry-After is cut to this


@dataclass
class Connection:
    api: Any  # kaggle's KaggleApi (untyped), authenticated
    competition: str
    credentials: str  # where the credentials came from (a path or variable names, never the key)
    username: str = ""


class Transient(Exception):
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
            note(f"warning: {path} can be read by other users; run: chmod 600 {path}")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            doc = None
        if not (isinstance(doc, dict) and doc.get("username") and doc.get("key")):
            raise KaggleCifarError(
                f'{path}: not a Kaggle API token file (needs "username" and "key"); '
                f"download a new one at {TOKEN_PAGE} (API -> Create New Token)"
            )
        return str(path)
    for token_file in (Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"):
        if token_file.is_file():
            return str(token_file)
    if (Path.home() / ".kaggle" / "credentials.json").is_file():
        return "`kaggle auth login` credentials"
    raise KaggleCifarError(
        f"no Kaggle credentials: save your API token file (from {TOKEN_PAGE}, API -> Create New "
        f"Token) as {path} and chmod 600 it, or set KAGGLE_USERNAME and KAGGLE_KEY "
        f"(or KAGGLE_API_TOKEN)"
    )


def credentials_source() -> tuple[bool, str]:
    """(found, where they are or what is wrong), never the key: for `kagglecifar doctor`."""
    try:
        return True, _find_credentials(_config_dir())
    except KaggleCifarError as exc:
        return False, str(exc)


def connect(competition: str) -> Connection:
    folder = _config_dir()
    conn = Connection(None, competition, _find_credentials(folder))
    with client_output():  # importing kaggle signs in once already and prints help when it cannot
        from kaggle.api.kaggle_api_extended import KaggleApi
    conn.api = api = KaggleApi()
    # KaggleApi reads these once, when kaggle is imported: take them from the environment as it is now.
    # Never "--verbose": the client would print request headers, the key among them.
    api.config_dir, api.config = str(folder), str(folder / "kaggle.json")
    api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []

    def sign_in():
        with client_output():
            api.authenticate()

    try:
        retrying(conn, "signing in to Kaggle", sign_in)
    except SystemExit:  # the client gave up on every kind of credentials
        raise KaggleCifarError(
            f"{conn.credentials}: Kaggle did not accept these credentials (expired or revoked "
            f"token?); create a new API token at {TOKEN_PAGE}"
        ) from None
    conn.username = api.config_values.get("username") or ""
    return conn


@contextlib.contextmanager
def client_output():
    """The client prints notes, auth help and errors on stdout: keep them out of our output, but at hand."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def note(message: str) -> None:
    print(f"kagglecifar: {message}", file=sys.stderr, flush=True)


# ---- retries and errors --------------------------------------------------------------------------


def retry_delay(attempt: int, retry_after: str | None = None) -> float:
    """Seconds to wait after failed try number `attempt`: the server's Retry-After if any, else backoff."""
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(retry_after) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
    return min(BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def retrying(conn: Connection, what: str, call):
    """call(), tried again on 429, 5xx and network trouble; any other failure becomes one KaggleCifarError."""
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error

    attempts = max(1, ATTEMPTS)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except (requests.RequestException, Urllib3Error, Transient) as exc:
            response = getattr(exc, "response", None)
            status = response.status_code if response is not None else None
            if (status is not None and status != 429 and status < 500) or attempt == attempts:
                raise _error(conn, what, exc, status, attempt) from None
            delay = retry_delay(attempt, response.headers.get("Retry-After") if response is not None else None)
            note(f"{what}: {reason(exc)}; trying again in {delay:.0f} s ({attempt + 1}/{attempts})")
            time.sleep(delay)


def reason(exc: Exception) -> str:
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


def _error(conn: Connection, what: str, exc: Exception, status: int | None, attempts: int) -> KaggleCifarError:
    why, tries = reason(exc), f" after {attempts} tries" if attempts > 1 else ""
    page = f"https://www.kaggle.com/competitions/{conn.competition}"
    if status == 401:
        return KaggleCifarError(
            f"{what}: Kaggle rejected the credentials from {conn.credentials} ({why}); check "
            f"the username and key, or create a new API token at {TOKEN_PAGE}"
        )
    if status == 403:
        return KaggleCifarError(
            f"{what}: Kaggle refused ({why}); accept the competition's rules at {page}/rules "
            f"with the account of {conn.credentials}"
        )
    if status == 404:
        return KaggleCifarError(
            f"{what}: not found ({why}); is --competition {conn.competition!r} right? "
            f"(the SLUG in https://www.kaggle.com/competitions/SLUG)"
        )
    if status == 429:
        return KaggleCifarError(f"{what}: Kaggle keeps rate-limiting us ({why}){tries}; wait a few minutes")
    if status is not None and status >= 500:
        return KaggleCifarError(f"{what}: Kaggle server error ({why}){tries}; try again later")
    if status is not None:
        return KaggleCifarError(f"{what}: Kaggle answered {why}")
    if isinstance(exc, Transient):
        return KaggleCifarError(f"{what}: {why}{tries}")
    return KaggleCifarError(f"{what}: cannot reach Kaggle ({why}){tries}; check the internet connection")
