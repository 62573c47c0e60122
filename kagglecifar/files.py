"""Atomic file output, shared by every stage: write aside, fsync, then rename over the final name,
so a file under its final name is always complete."""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path

from kagglecifar.errors import KaggleCifarError


@contextmanager
def atomic_path(path: Path):
    """Yield a private temporary path beside `path`; publish it with a rename only if the block succeeds."""
    path = Path(path)
    # The suffix stays last: matplotlib and numpy pick the format from it.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error(path, exc) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder is unwritable: nothing was created there either


def os_error(path: Path, exc: OSError) -> KaggleCifarError:
    """One line for an OS problem with `path`: what happened and what to do."""
    advice = {
        errno.ENOSPC: "free some space and run again",
        errno.EACCES: "check the folder's permissions",
        errno.EPERM: "check the folder's permissions",
        errno.EROFS: "choose a writable folder",
    }
    reason = exc.strerror or type(exc).__name__
    return KaggleCifarError(f"{exc.filename or path}: {reason}; {advice.get(exc.errno, 'check the path')}")


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def atomic_output(path: Path, force: bool = False, option: str = "--out"):
    """Yield a private temporary path next to `path`; publish it with a rename only if the block succeeds.

    Refuses an existing `path` unless force, so a finished output is never overwritten by accident.
    """
    refuse_existing(path, force, option)
    with atomic_path(path) as tmp:
        yield tmp


def refuse_existing(path: Path, force: bool, option: str = "--out") -> None:
    if Path(path).exists() and not force:
        raise KaggleCifarError(f"{path}: already exists; pass --force to overwrite it or {option} to write elsewhere")


def escapes_folder(name: str) -> bool:
    """True for an archive member name or link target that would land outside the folder it is unpacked in."""
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in parts
