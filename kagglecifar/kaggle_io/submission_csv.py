"""The submission file: written in sampleSubmission.csv's id order, checked before anything uploads it
(and, for data other than the competition's, the predictions file: the test ids with their labels).

A valid file is UTF-8 without a byte-order mark, has the header `id,label`, one line ending style,
exactly one row per id of sampleSubmission.csv (ids written exactly as there: Kaggle compares them
as text; no extras, no duplicates) and a class
name in every label cell.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecifar.cache import is_complete, read_manifest
from kagglecifar.competition import CIFAR10_CLASSES, LABELS_FILE, read_labels
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_output

HEADER = ["id", "label"]
SHOWN_PROBLEMS = 5
# How the scorer's ids look: ASCII digits, no sign, no leading zero (int() would also take ' 7', '+7', '0_7' and
# other scripts' digits); the second pattern takes many at once, one a line.
CANONICAL_ID = re.compile("0|[1-9][0-9]*")
CANONICAL_IDS = re.compile(f"(?:(?:{CANONICAL_ID.pattern})\n)*")
OTHER_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # str.splitlines's, not csv's


@dataclass
class Problem:
    """One kind of problem: where it first occurs (1-based line, 0 = the whole file) and how often."""

    line: int
    message: str
    count: int = 1

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        more = f" (and {self.count - 1} more like it)" if self.count > 1 else ""
        return f"{where}{self.message}{more}"


def read_sample_ids(sample_path: Path) -> np.ndarray:
    """The ids of sampleSubmission.csv, in file order; each must be written canonically (digits, no sign or
    leading zero), because Kaggle's scorer compares ids as text."""
    sample_path = Path(sample_path)
    try:
        with open(sample_path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
        plain = _plain_ids(text)
        if plain is not None:
            return plain
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except FileNotFoundError:
        raise KaggleCifarError(f"{sample_path}: not found; run `kagglecifar fetch` first") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KaggleCifarError(
            f"{sample_path}: unreadable sample submission ({type(exc).__name__}: {str(exc)[:100]})"
        ) from None
    if not rows or [c.strip() for c in rows[0][:1]] != ["id"]:
        raise KaggleCifarError(f"{sample_path}: expected a header starting with 'id'")
    texts = [row[0] if row else "" for row in rows[1:]]
    bad = next((n for n, t in enumerate(texts, start=2) if not _canonical_id(t)), None)
    if bad is not None:
        raise KaggleCifarError(f"{sample_path}: line {bad}: id {texts[bad - 2][:30]!r} is not a plain integer")
    return np.array([int(t) for t in texts], np.int64)


def _plain_ids(text: str) -> np.ndarray | None:
    """The ids of a sample file without quoting whose ids are all canonical, read at C speed (300,000 rows: the
    whole read 0.23 s against 0.78 s); None for any other file, which the csv module then reads and names the
    problem."""
    lines = text.splitlines()
    if '"' in text or OTHER_LINE_BREAKS.search(text) or not lines or lines[0].split(",", 1)[0].strip() != "id":
        return None
    ids = [line.split(",", 1)[0] for line in lines[1:]]
    if not _all_canonical(ids):
        return None
    return np.array(list(map(int, ids)), np.int64)


def _canonical_id(text: str) -> bool:
    return CANONICAL_ID.fullmatch(text) is not None


def _all_canonical(ids: list[str]) -> bool:
    """_canonical_id for every one, in one pass of the pattern."""
    return CANONICAL_IDS.fullmatch("".join(f"{i}\n" for i in ids)) is not None


class _Problems:
    """Collects problems grouped by kind: the first occurrence is kept, later ones are counted."""

    def __init__(self):
        self.by_kind: dict[str, Problem] = {}

    def add(self, kind: str, line: int, message: str) -> None:
        if kind in self.by_kind:
            self.by_kind[kind].count += 1
        else:
            self.by_kind[kind] = Problem(line, message)

    def sorted(self) -> list[Problem]:
        return sorted(self.by_kind.values(), key=lambda p: p.line)


def validate_submission(csv_path: Path, sample_path: Path, classes: list[str]) -> list[Problem]:
    """Every problem that would make Kaggle reject or misread the file; an empty list means valid."""
    return _validate(Path(csv_path), read_sample_ids(sample_path), classes)


def _validate(
    csv_path: Path,
    sample_ids: np.ndarray,
    classes: list[str],
    reference: str = "sampleSubmission.csv",
    header: list[str] = HEADER,
) -> list[Problem]:
    """The problems of csv_path against the ids of `reference` (named in the messages); columns: `header`,
    the id first and the label second."""
    try:
        data = csv_path.read_bytes()
    except OSError as exc:
        raise KaggleCifarError(f"{csv_path}: cannot read ({exc.strerror or exc})") from None
    problems = _Problems()
    if data.startswith(b"\xef\xbb\xbf"):
        problems.add("bom", 1, "starts with a UTF-8 byte-order mark; save as plain UTF-8")
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add("encoding", line, f"not UTF-8 (byte {data[exc.start]:#04x})")
        text = data.decode("utf-8", errors="replace")
    _check_line_endings(text, problems)

    lines = text.splitlines()
    if not lines:
        problems.add("empty", 0, "the file is empty")
        return problems.sorted()
    if not problems.by_kind and _plainly_valid(lines, sample_ids, classes, header):
        return []
    if lines[0] != ",".join(header):
        problems.add("header", 1, f"header is {lines[0][:40]!r}, expected {','.join(header)!r}")

    wanted = set(sample_ids.tolist())
    known_labels = set(classes)
    first_line_of: dict[int, int] = {}
    rows = 0
    reader = csv.reader(lines[1:])
    for cells in reader:
        line_no = reader.line_num + 1
        if not cells or cells == [""]:
            problems.add("blank", line_no, "blank line")
            continue
        rows += 1
        if len(cells) != len(header):
            problems.add("fields", line_no, f"{len(cells)} cells, expected {len(header)} ({','.join(header)})")
            continue
        id_text, label = cells[:2]
        if label == "":
            problems.add("empty-cell", line_no, "empty label cell")
        elif label not in known_labels:
            problems.add("label", line_no, f"unknown label {label[:30]!r}; expected one of {', '.join(classes)}")
        if id_text == "":
            problems.add("empty-cell", line_no, "empty id cell")
            continue
        if not _canonical_id(id_text):
            try:
                problems.add(
                    "id-text",
                    line_no,
                    f"id {id_text[:30]!r} is written differently from "
                    f"{reference}'s {str(int(id_text))!r}; Kaggle compares ids as text",
                )
            except ValueError:
                problems.add("id-format", line_no, f"id {id_text[:30]!r} is not an integer")
            continue
        id_ = int(id_text)
        if id_ not in wanted:
            problems.add("id-extra", line_no, f"id {id_} is not in {reference}")
        elif id_ in first_line_of:
            problems.add("id-duplicate", line_no, f"id {id_} again (first on line {first_line_of[id_]})")
        else:
            first_line_of[id_] = line_no

    missing = [i for i in sample_ids.tolist() if i not in first_line_of]
    if missing:
        problems.add(
            "id-missing", 0, f"{reference} ids without a row: {len(missing)}, e.g. {', '.join(map(str, missing[:5]))}"
        )
    if rows != len(sample_ids):
        problems.add("rows", 0, f"{rows} rows, {reference} has {len(sample_ids)}")
    return problems.sorted()


def _plainly_valid(lines: list[str], sample_ids: np.ndarray, classes: list[str], header: list[str]) -> bool:
    """True when the rows are valid without quoting, each a canonical id and known label: what `predict`
    writes, checked at C speed (300,000 rows: 0.2 s against 0.6 s). False sends the file to the row-by-row
    check, which names its problems."""
    body, width = lines[1:], len(header)
    if lines[0] != ",".join(header) or any('"' in line or line.count(",") != width - 1 for line in body):
        return False
    cells = "\n".join(body).replace(",", "\n").split("\n") if body else []
    ids = cells[0::width]
    if not set(cells[1::width]) <= set(classes) or not _all_canonical(ids):
        return False
    numbers = set(map(int, ids))
    return len(ids) == len(numbers) == len(sample_ids) and numbers == set(sample_ids.tolist())


def _check_line_endings(text: str, problems: _Problems) -> None:
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    if crlf and lf:  # point at the first line that breaks with the majority style
        minority_is_crlf = crlf < lf
        ended_lines = text.split("\n")[:-1]
        line_no = next(n for n, line in enumerate(ended_lines, start=1) if line.endswith("\r") == minority_is_crlf)
        problems.add("line-endings", line_no, f"mixed line endings ({crlf} CRLF, {lf} LF)")


def check_submission(csv_path: Path, sample_path: Path, classes: list[str]) -> None:
    """Raise a KaggleCifarError naming the file and its first problems when the file is not valid."""
    problems = validate_submission(csv_path, sample_path, classes)
    if problems:
        shown = "; ".join(str(p) for p in problems[:SHOWN_PROBLEMS])
        more = f"; and {len(problems) - SHOWN_PROBLEMS} more kinds of problem" if len(problems) > SHOWN_PROBLEMS else ""
        raise KaggleCifarError(f"{csv_path}: not a valid submission: {shown}{more}")


def write_submission(
    path: Path,
    ids,
    labels,
    sample_path: Path,
    classes: list[str],
    force: bool = False,
    sample_ids: np.ndarray | None = None,
) -> Path:
    """Write `id,label` rows in sampleSubmission.csv's id order; validated before it appears under `path`.
    `sample_ids`: read_sample_ids(sample_path) when the caller has them already."""
    path, sample_path = Path(path), Path(sample_path)
    ids = np.asarray(ids, np.int64)
    labels = np.asarray(labels, dtype=object)
    sample_ids = read_sample_ids(sample_path) if sample_ids is None else sample_ids
    order = np.argsort(ids, kind="stable")
    slot = np.clip(np.searchsorted(ids[order], sample_ids), 0, max(len(ids) - 1, 0))
    found = ids[order][slot] == sample_ids if len(ids) else np.zeros(len(sample_ids), bool)
    if not found.all():
        missing = sample_ids[~found]
        raise KaggleCifarError(
            f"{sample_path}: ids without a prediction: {len(missing)}, e.g. "
            f"{', '.join(map(str, missing[:5]))}; is the test cache from the same download?"
        )
    rows = labels[order][slot]
    body = "".join(f"{i},{label}\n" for i, label in zip(sample_ids.tolist(), rows.tolist()))
    with atomic_output(path, force) as tmp:
        tmp.write_text("id,label\n" + body, encoding="utf-8", newline="")
        problems = _validate(tmp, sample_ids, classes)
        if problems:
            raise KaggleCifarError(f"{path}: refusing to write an invalid submission: {problems[0]}")
    return path


def write_predictions_csv(
    path: Path, ids, labels, classes: list[str], names: list[str] | None = None, force: bool = False
) -> Path:
    """Predictions for data other than the competition's (no sampleSubmission.csv): `id,label`, plus `file`
    when the test images' file names are known, one row per test id in ascending order; checked like a
    submission, against the test ids, before it appears under `path`."""
    ids = np.asarray(ids, np.int64)
    labels = np.asarray(labels, dtype=object)
    header = HEADER + (["file"] if names is not None else [])
    order = np.argsort(ids, kind="stable")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in order.tolist():
        writer.writerow([int(ids[row]), labels[row], *([names[row]] if names is not None else [])])
    with atomic_output(path, force) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8", newline="")
        problems = _validate(tmp, ids[order], classes, reference="the test cache", header=header)
        if problems:
            raise KaggleCifarError(f"{path}: refusing to write invalid predictions: {problems[0]}")
    return Path(path)


def newest_submission(folder: Path = Path("submissions")) -> Path:
    """The most recently written submission CSV in `folder`."""
    folder = Path(folder)
    files = [p for p in folder.glob("*.csv") if not p.name.startswith(".")] if folder.is_dir() else []
    if not files:
        raise KaggleCifarError(f"{folder}: no submission CSV here; run `kagglecifar predict` first")
    return max(files, key=lambda p: p.stat().st_mtime_ns)


def submit(
    csv_path: Path,
    message: str,
    competition: str,
    *,
    data_dir: Path = Path("data"),
    wait: bool = True,
    timeout: float = 600.0,
):
    """Check csv_path against data_dir's sampleSubmission.csv and class names, then upload it and wait up to
    `timeout` seconds for its public score: an invalid file raises KaggleCifarError before anything is sent."""
    from kagglecifar import kaggle_io, provenance
    from kagglecifar.cache.sources import COMPETITION, cache_format
    from kagglecifar.console import note

    built_from = cache_format(data_dir, "test") or cache_format(data_dir, "train")
    if built_from not in (None, COMPETITION):
        raise KaggleCifarError(
            f"{Path(data_dir) / 'cache'}: holds {built_from} data, not the {competition} "
            f"competition's files; `submit` uploads to a Kaggle competition only, so "
            f"{csv_path} stays here"
        )
    check_submission(csv_path, Path(data_dir) / "sampleSubmission.csv", submission_classes(data_dir))
    result = kaggle_io.upload_submission(csv_path, message, competition, wait=wait, timeout=timeout)
    try:  # CSV.submitted.json: the submission and the runs it came from (`compare` shows their scores)
        provenance.record_submission(csv_path, result, message, competition)
    except KaggleCifarError as exc:
        note(f"submitted, but the record of it could not be written: {exc}")
    return result


def submission_classes(data_dir: Path) -> list[str]:
    """The class names a submission may use: the train cache's when built, else the competition's
    (trainLabels.csv checked: every label must be one of them)."""
    if is_complete(data_dir, "train"):
        return list(read_manifest(data_dir, "train")["classes"])
    read_labels(Path(data_dir) / LABELS_FILE)
    return list(CIFAR10_CLASSES)
