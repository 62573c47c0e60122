"""Reading the small files kagglecifar writes itself, and recipe files, without trusting them.

    run.json, result.json, evaluation.json      run folders (rundir.py, inference/evaluate.py)
    config.yaml, recipe files                   YAML (or JSON): size-capped, aliases expanded at most MAX_NODES
    metrics.csv                                 one row per epoch, numbers only
    NAME.sources.json, NAME.submitted.json      beside a submission (provenance.py)

A record can be damaged (a disk filled up before atomic writes existed, an editor, a copy cut short, a hostile
hand). Its readers here check the shape, not just the syntax: a damaged record is either one warning line
naming the file, after which the caller does without it (`warn_damaged`), or one KaggleCifarError line
(`Damaged`), never a traceback and never a rewrite of the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

from kagglecifar.errors import KaggleCifarError, excerpt

MAX_RECORD_BYTES = 16 << 20  # our records are kilobytes; metrics.csv of 10,000 epochs is under 1 MB
MAX_NODES = 100_000  # values in a YAML document once its aliases are expanded
_warned: set[str] = set()


class Damaged(KaggleCifarError):
    """One of our own records is not what kagglecifar writes; the message names the file and the problem."""

    def __init__(self, path, problem: str, kind: str = "record"):
        super().__init__(f"{path}: damaged {kind} ({problem})")
        self.problem = problem


def reset_warnings() -> None:
    """Each command warns once per damaged file (the CLI calls this as it starts)."""
    _warned.clear()


def warn_damaged(exc: KaggleCifarError) -> None:
    from kagglecifar.console import note

    line = str(exc)
    if line not in _warned:
        _warned.add(line)
        note(f"kagglecifar: warning: {line}; skipped")


def read_capped(path: Path, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The file's bytes; Damaged when larger than `limit` (checked before reading) or unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Damaged(path, f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise Damaged(path, f"larger than {limit >> 20} MiB, which no file of this kind is")
    return data


def read_text(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    data = read_capped(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Damaged(path, f"not UTF-8 text, byte {exc.start}") from None


# ---- YAML ------------------------------------------------------------------------------------------------


def load_yaml(text: str, where: str):
    """yaml.safe_load, refusing a document whose aliases expand beyond MAX_NODES values (a "billion laughs"
    file of a few hundred bytes) or that refers to itself."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise KaggleCifarError(f"{where}: YAML nested too deeply") from None
    expanded_size(data, where)
    return data


def expanded_size(data, where: str) -> int:
    """How many values `data` holds with shared (aliased) parts counted each time they appear."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(value) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise KaggleCifarError(f"{where}: a YAML value that contains itself (a recursive alias)")
        open_ids.add(key)
        children = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        total = 1
        for k, v in children:
            total += size(k) + size(v) if k is not None else size(v)
            if total > MAX_NODES:
                raise KaggleCifarError(
                    f"{where}: more than {MAX_NODES:,} values once its YAML aliases are expanded; refusing it"
                )
        open_ids.discard(key)
        sizes[key] = total
        return total

    try:
        return size(data)
    except RecursionError:
        raise KaggleCifarError(f"{where}: nested too deeply") from None


def read_yaml_or_json(path: Path, where: str, what: str):
    """The data of a YAML file (JSON when it ends in .json), or one line naming `where` and the problem."""
    import yaml

    try:
        text = read_text(path)
        return json.loads(text) if Path(path).suffix.lower() == ".json" else load_yaml(text, where)
    except FileNotFoundError:
        raise KaggleCifarError(f"{where}: no such {what} file") from None
    except Damaged as exc:
        raise KaggleCifarError(f"{where}: not a readable {what} file ({exc.problem})") from None
    except (OSError, ValueError, yaml.YAMLError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KaggleCifarError(f"{where}: not a readable YAML/JSON {what} ({excerpt(first, 120)[1:-1]})") from None


# ---- JSON records ---------------------------------------------------------------------------------------


def read_json_record(path: Path, check: Callable[[dict], str | None] | None = None) -> dict:
    """A JSON object written by kagglecifar; {} when the file is absent; Damaged when it is not JSON, not an
    object, or check(data) names a problem."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise Damaged(path, f"not JSON{', empty' if not text.strip() else ''}") from None
    if not isinstance(data, dict):
        raise Damaged(path, f"a JSON {type(data).__name__}, not an object")
    problem = check(data) if check else None
    if problem:
        raise Damaged(path, problem)
    return data


def read_json_or_warn(path: Path, check: Callable[[dict], str | None] | None = None) -> dict:
    """read_json_record, but a damaged record is one warning line and {}."""
    try:
        return read_json_record(path, check)
    except Damaged as exc:
        warn_damaged(exc)
        return {}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def field_problem(data: dict, types: dict[str, Callable[[object], bool]]) -> str | None:
    """The first key of `types` present in data whose value fails its predicate (None values pass)."""
    for key, ok in types.items():
        if data.get(key) is not None and not ok(data[key]):
            return f"{key!r} is {excerpt(data[key], 40)}"
    return None


# ---- metrics.csv ---------------------------------------------------------------------------------------


def read_metrics_csv(path: Path, columns: list[str]) -> list[dict]:
    """metrics.csv rows with numbers as floats (None where empty); [] when there is none; Damaged when a
    header, a row's length or a cell is not what training writes."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        return []
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise Damaged(path, str(exc), "metrics") from None
    if not lines:
        return []
    header = lines[0]
    if not header or any(name not in columns for name in header) or "epoch" not in header:
        raise Damaged(path, f"header {excerpt(','.join(header), 60)}", "metrics")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise Damaged(path, f"line {number} has {len(cells)} cells, the header {len(header)}", "metrics")
        row = {}
        for name, cell in zip(header, cells):
            try:
                value = float(cell) if cell != "" else None
            except ValueError:
                raise Damaged(path, f"line {number}, {name} {excerpt(cell, 30)}", "metrics") from None
            row[name] = value
        if row["epoch"] is None:
            raise Damaged(path, f"line {number} has no epoch", "metrics")
        rows.append({name: row.get(name) for name in columns})
    return rows
