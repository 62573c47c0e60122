"""The database of a `tune` study: opening it safely for several workers, and trials whose process died.

A trial whose process died (Ctrl-C twice, kill, power cut) stays RUNNING in the study. One that ran on this
machine is seen at once (host and pid are trial attributes); one elsewhere by its missing heartbeat after
GRACE_SECONDS. Either is marked failed and queued again with the same parameters and its run folder, which
the retry resumes from last.pt.

SQLite: pysqlite begins a transaction (deferred) only before a write, so Optuna's check-then-set of a queued
trial's state is not atomic and two workers can both take it (one then fails on telling its result). Every
transaction here takes the write lock up front (BEGIN IMMEDIATE) and waits up to 60 s for it instead.
"""

from __future__ import annotations

import os
import re
import socket
import time
import warnings

from kagglecifar.errors import KaggleCifarError

HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 600  # a trial elsewhere is taken for dead after 10 minutes unheard
MAX_RETRIES = 3  # a trial whose process keeps dying (e.g. killed for memory) is not queued forever
HOST = socket.gethostname()


SECRET_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig", re.IGNORECASE)  # values always hidden
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _parts(url: str) -> tuple[str, str, str, str]:
    """(scheme, userinfo, host and path, query) of a database URL, cut where a password can hide least well:
    the userinfo runs to the last '@', so an '@', '/' or '?' inside a password stays inside the userinfo."""
    scheme, sep, rest = url.partition("://")
    if not sep or not SCHEME.fullmatch(scheme):
        scheme, rest = "", url
    userinfo, at, location = rest.rpartition("@")
    if not at:
        userinfo, location = "", rest
    location, _, query = location.partition("?")
    return scheme, userinfo, location, query


def shown_url(url: str) -> str:
    """The storage URL for messages: no user name or password, no query value (`sslpassword=`, `password=`,
    a token... any of them may be secret). A URL without a scheme is shown without its user part as well."""
    scheme, userinfo, location, query = _parts(str(url))
    keys = [part.partition("=")[0] for part in re.split(r"[&;]", query) if part]
    shown_query = "&".join(f"{excerpt_key(k)}=***" for k in keys)
    user, colon, _ = userinfo.partition(":")
    shown_user = f"{user}:***@" if colon and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", user) else "***@"
    text = (f"{scheme}://" if scheme else "") + (shown_user if userinfo else "") + location
    return text[:200] + (f"?{shown_query}" if shown_query else "")


def excerpt_key(key: str) -> str:
    """A query parameter's name as shown: plain names only (a password pasted without '=' is no name)."""
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,40}", key) else "***"


def secrets_of(url: str) -> list[str]:
    """Every piece of the URL that may be secret, longest first, raw and %-decoded: the userinfo and its
    password, and every query value."""
    from urllib.parse import unquote, unquote_plus

    _, userinfo, _, query = _parts(str(url))
    pieces = [userinfo, userinfo.partition(":")[2]] if ":" in userinfo or len(userinfo) >= 4 else []
    at = 0
    for part in re.split(r"[&;]", query):
        key, _, value = part.partition("=")
        if SECRET_KEYS.search(key):  # the value, and all after it: an unescaped '&' may belong to the password
            pieces += [value, query[at + len(key) + 1 :]]
        elif len(value) >= 4 or not value:  # short plain values (a port, "me") may stay
            pieces += [value, part] if value else [key]
        at += len(part) + 1
    found = {p for piece in pieces if piece for p in (piece, unquote(piece), unquote_plus(piece)) if p}
    return sorted(found, key=len, reverse=True)


def redacted(text: str, url: str) -> str:
    """text (an exception's message, which may quote the URL) with every secret piece of `url` replaced."""
    text = str(text).replace(str(url), shown_url(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def _check_scheme(url: str) -> None:
    scheme = _parts(url)[0]
    if not scheme:
        raise KaggleCifarError(
            f"--storage {shown_url(url)}: not a database URL (no scheme); write e.g. sqlite:///tune.db or "
            "postgresql://USER:PASSWORD@HOST/DB"
        )


def open_storage(url: str):
    """Optuna's RDBStorage with a heartbeat; SQLite also gets a lock timeout and BEGIN IMMEDIATE."""
    import optuna
    import sqlalchemy

    _check_scheme(url)
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=lambda study, trial: requeue(
                        study, trial.number, trial.params, trial.user_attrs
                    ),
                )
            break
        except ImportError as exc:
            raise KaggleCifarError(
                f"--storage {shown_url(url)}: no driver for this database "
                f"({redacted(str(exc.__cause__ or exc).strip(), url)[:200]}); "
                "install it, e.g. pip install psycopg2-binary (PostgreSQL) or pymysql "
                "(mysql+pymysql://...)"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ValueError) as exc:
            # Two processes creating one new SQLite file race on its tables; the loser finds them next time.
            if not sqlite or attempt == 4 or isinstance(exc, sqlalchemy.exc.ArgumentError):
                first = redacted((str(exc).strip().splitlines() or [type(exc).__name__])[0], url)[:200]
                raise KaggleCifarError(
                    f"--storage {shown_url(url)}: cannot open the study database ({first})"
                ) from None
            time.sleep(0.5 * (attempt + 1))
        except Exception as exc:  # noqa: BLE001 - drivers raise their own types; their text may quote the URL
            first = redacted((str(exc).strip().splitlines() or [""])[0], url)[:200]
            raise KaggleCifarError(
                f"--storage {shown_url(url)}: cannot open the study database ({type(exc).__name__}: {first})"
            ) from None
    if sqlite:
        _begin_immediate(storage.engine)
    return storage


def _begin_immediate(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # pysqlite would BEGIN (deferred) only before writes

    @event.listens_for(engine, "begin")
    def begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks are dropped


def requeue(study, number: int, params: dict, user_attrs: dict) -> None:
    """Queue a stopped or dead trial again with its parameters; the retry resumes the same run folder."""
    retries = user_attrs.get("retries", 0) + 1
    if retries > MAX_RETRIES:
        return
    keep = {k: user_attrs[k] for k in ("preset_values", "run") if k in user_attrs}
    study.enqueue_trial(params, user_attrs={**keep, "retry_of": user_attrs.get("retry_of", number), "retries": retries})


def recover_dead_trials(study, echo) -> None:
    """Fail and queue again the RUNNING trials whose process on this machine is gone."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != HOST or _alive(worker.get("pid")):
            continue
        try:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        requeue(study, trial.number, trial.params, trial.user_attrs)
        echo(
            f"trial {trial.number}: its process {worker['pid']} is gone; queued again, it resumes "
            f"{trial.user_attrs.get('run', 'its run folder')}"
        )


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():  # our own pid: a previous life of this container
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
