"""Which runs a submission came from, and what Kaggle scored it: small JSON files beside the CSV.

    submissions/NAME.csv
    submissions/NAME.sources.json     predict: the run folders (and checkpoints, saved probabilities) behind it
    submissions/NAME.submitted.json   submit (and `run`): Kaggle's answer, with those run folders

`compare` reads the .submitted.json records of a submissions folder to show each run's public score.
Run folders are recorded as absolute paths.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from kagglecifar import records, rundir
from kagglecifar.files import write_text_atomic


def sources_path(csv_path: Path) -> Path:
    return Path(csv_path).with_name(Path(csv_path).stem + ".sources.json")


def record_path(csv_path: Path) -> Path:
    return Path(csv_path).with_name(Path(csv_path).stem + ".submitted.json")


def run_of(source: Path) -> Path | None:
    """The run folder a prediction source belongs to: the folder itself, or the folder of a checkpoint in it."""
    source = Path(source)
    for candidate in (source, source.parent):
        if rundir.is_run(candidate):
            return candidate.resolve()
    return None


def write_sources(csv_path: Path, sources: list[Path], tta: str, weights: list[float] | None) -> Path:
    runs = [str(run) for run in dict.fromkeys(run_of(s) for s in sources) if run is not None]
    record = {
        "csv": Path(csv_path).name,
        "runs": runs,
        "sources": [str(Path(s).resolve()) for s in sources],
        "tta": tta,
        "weights": weights,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return write_text_atomic(sources_path(csv_path), json.dumps(record, indent=2) + "\n")


def _record_problem(data: dict) -> str | None:
    return records.field_problem(
        data,
        {
            "runs": records.is_str_list,
            "run": lambda v: isinstance(v, str),
            "sources": records.is_str_list,
            "public_score": records.is_number,
            "status": lambda v: isinstance(v, str),
            "csv": lambda v: isinstance(v, str),
        },
    )


def read_record(path: Path) -> dict:
    """A NAME.sources.json or NAME.submitted.json: {} when absent; records.Damaged (one line naming the file)
    when it is not what predict and submit write."""
    return records.read_json_record(path, _record_problem)


def read_json(path: Path) -> dict:
    """read_record, but a damaged record is one warning line and {}."""
    return records.read_json_or_warn(path, _record_problem)


def record_submission(csv_path: Path, result, message: str, competition: str, runs: list[Path] | None = None) -> Path:
    """NAME.submitted.json: Kaggle's answer (a kaggle_io.SubmissionResult) and the runs behind the CSV
    (given, else from predict's NAME.sources.json)."""
    if runs is None:
        runs = read_json(sources_path(csv_path)).get("runs", [])
    record = {
        **asdict(result),
        "message": message,
        "competition": competition,
        "runs": [str(Path(r).resolve()) for r in runs],
        "csv": str(Path(csv_path).resolve()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return write_text_atomic(record_path(csv_path), json.dumps(record, indent=2) + "\n")


def submissions_by_run(folder: Path) -> dict[Path, list[dict]]:
    """Resolved run folder -> the submission records (oldest first) that name it, from folder/*.submitted.json."""
    found: dict[Path, list[dict]] = {}
    for path in sorted(Path(folder).glob("*.submitted.json"), key=lambda p: p.stat().st_mtime):
        record = read_json(path)
        runs = record.get("runs") or ([record["run"]] if record.get("run") else [])  # `run` wrote one before
        for run in runs:
            found.setdefault(Path(run).resolve(), []).append({**record, "ensemble": len(runs) > 1})
    return found
