"""Run folders: RUNS_DIR/NAME/ and everything written into it.

    run.json            marker and environment (with the kagglecifar version and, from a git checkout, the
                        commit and whether the tree had uncommitted changes): written first, proves
                        kagglecifar created the folder
    config.yaml         the full TrainConfig; `kagglecifar train --config` takes it back
    metrics.csv         one row per epoch
    last.pt, best.pt    checkpoints (kagglecifar/checkpoint.py)
    curves.png          loss and accuracy per epoch
    confusion_matrix.png  best.pt on the validation split (kagglecifar/evaluate.py)
    result.json         how the last session ended (TrainResult)

Only folders with run.json are ever removed, and only when no checkpoint was written yet.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
from pathlib import Path

import kagglecifar
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_path, write_text_atomic

MARKER = "run.json"
CONFIG = "config.yaml"
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "images_per_s",
    "train_seconds",  # the steps alone
    "seconds",  # with validation and checkpoints
]
WRITTEN = (MARKER, CONFIG, "metrics.csv", "curves.png", "confusion_matrix.png", "result.json")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_run_name(name: str, option: str = "--name") -> str:
    """A plain folder name: letters, digits, '.', '_', '+', '-', not starting with a dot (so never '.' or '..')."""
    if not NAME_PATTERN.fullmatch(name):
        raise KaggleCifarError(
            f"{option} {name!r}: a run name is one plain folder name (letters, digits, "
            "'.', '_', '+', '-'; no '/' and not starting with '.')"
        )
    return name


def check_new_run(runs_dir: Path, name: str) -> None:
    check_run_name(name)
    path = Path(runs_dir) / name
    if path.exists():
        raise KaggleCifarError(f"{path}: run already exists; continue it with --resume {name} or choose another --name")


def code_version(root: Path | None = None) -> dict:
    """{"kagglecifar": version, "git_commit": sha, "git_dirty": bool}: which code runs. The git fields are None
    unless `root` (default: the folder holding the kagglecifar package) is the top of a git checkout and git
    runs; git_dirty is True when tracked files differ from the commit. Never an error."""
    root = Path(root or Path(kagglecifar.__file__).resolve().parent.parent)
    info: dict = {"kagglecifar": kagglecifar.__version__, "git_commit": None, "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):  # no git, or it hangs
            return None
        return done.stdout if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel", "HEAD")
    lines = (top or "").splitlines()
    # An installed package inside some other checkout (a venv in a project folder) is not that checkout's code.
    if len(lines) == 2 and Path(lines[0]).resolve() == root.resolve():
        status = git("status", "--porcelain", "--untracked-files=no")
        info["git_commit"], info["git_dirty"] = lines[1], None if status is None else bool(status.strip())
    return info


def create_run(runs_dir: Path, name: str, model: str, environment: dict) -> Path:
    """A new run folder (NAME, or MODEL-DATE-TIME[-N]) holding the marker; never an existing folder.
    The marker's environment also records code_version()."""
    environment = {**environment, **code_version()}
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name:
        check_run_name(name)
        candidates = [runs_dir / name]
    else:
        base = f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        candidates = [runs_dir / base] + [runs_dir / f"{base}-{n}" for n in range(2, 1000)]
    for path in candidates:
        try:
            path.mkdir()
        except FileExistsError:
            continue
        write_text_atomic(
            path / MARKER, json.dumps({"created_by": "kagglecifar", "environment": environment}, indent=2) + "\n"
        )
        return path
    raise KaggleCifarError(
        f"{candidates[0]}: run already exists; continue it with --resume {name} or choose another --name"
    )


def is_run(path: Path) -> bool:
    try:
        return json.loads((Path(path) / MARKER).read_text()).get("created_by") == "kagglecifar"
    except (OSError, ValueError, AttributeError):
        return False


def find_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run folder given as a path or as a name under runs_dir, that has a last.pt to resume from."""
    for candidate in (Path(run), Path(runs_dir) / run):
        if (candidate / "last.pt").is_file():
            return candidate
        if candidate.is_dir() and (candidate / CONFIG).is_file():
            raise KaggleCifarError(f"{candidate}: run has no last.pt to resume from")
    raise KaggleCifarError(f"--resume {run}: no such run (looked for {Path(runs_dir) / run}/last.pt)")


def remove_unstarted(run_dir: Path) -> bool:
    """Remove a run folder that kagglecifar created and that holds no checkpoint yet (a run killed before its
    first epoch ended): only the files this module writes, then the folder if that left it empty."""
    run_dir = Path(run_dir)
    if not is_run(run_dir) or any(run_dir.glob("*.pt")):
        return False
    for name in WRITTEN:
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        return False  # something else is in it: leave it
    return True


def read_config(run_dir: Path) -> dict:
    import yaml

    path = Path(run_dir) / CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KaggleCifarError(f"{path}: unreadable run config ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "recipe" not in data:
        raise KaggleCifarError(f"{path}: not a kagglecifar run config (no recipe section)")
    return data


def read_environment(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / MARKER).read_text()).get("environment", {})
    except (OSError, ValueError, AttributeError):
        return {}


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row[k] is None else row[k] for k in METRIC_COLUMNS} for row in rows)
    write_text_atomic(Path(run_dir) / "metrics.csv", out.getvalue())


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.csv rows with numbers as floats (None where empty); [] when there is none."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_figure(path: Path, draw) -> Path:
    """draw(temporary path) writes a figure; it appears under `path` only once complete."""
    with atomic_path(path) as tmp:
        draw(tmp)
    return Path(path)


def write_curves(run_dir: Path, rows: list[dict]) -> None:
    from kagglecifar.reports import plots

    if rows:
        write_figure(Path(run_dir) / "curves.png", lambda p: plots.plot_curves(rows, p, title=Path(run_dir).name))


def write_result(run_dir: Path, result: dict) -> None:
    write_text_atomic(Path(run_dir) / "result.json", json.dumps(result, indent=2, default=str) + "\n")


def read_result(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return {}


def finished(run_dir: Path) -> bool:
    """Whether a run ended for good (all epochs, or early stopping) rather than being stopped to resume."""
    return read_result(run_dir).get("stopped_reason") in ("completed", "early_stopping")


def newest_finished_run(runs_dir: Path) -> Path | None:
    """The run in runs_dir that finished for good (all epochs, or early stopping) with a best.pt, most recently;
    None when there is none. A diverged or stopped run is never taken."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    finished_runs = [p for p in runs_dir.iterdir() if is_run(p) and finished(p) and (p / "best.pt").is_file()]
    return max(finished_runs, key=lambda p: ((p / "result.json").stat().st_mtime, p.name), default=None)


def divergence(run_dir: Path) -> str | None:
    """'diverged at epoch E, step S (learning rate X)' for a run that stopped on a non-finite loss, else None."""
    result = read_result(run_dir)
    if result.get("stopped_reason") != "diverged":
        return None
    where = result.get("diverged", {})
    kept = result.get("epochs_run") or 0
    return (
        f"training diverged at epoch {where.get('epoch', '?')}, step {where.get('step', '?')} (learning rate "
        f"{where.get('lr', float('nan')):.4g}); "
        + (f"its checkpoints are epoch {kept}'s, the last good one" if kept else "it wrote no checkpoint")
    )
