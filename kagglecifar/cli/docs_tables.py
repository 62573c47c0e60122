"""The docs' tables of the extension points, generated from their declarations:

    augment-table   data/augment.py PRESETS                     docs/training.md
    presets-table   presets/*.yaml (description and values)     docs/training.md
    tta-table       inference/tta.py TTA_MODES                  docs/predict-evaluate-submit.md

Each table sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in its file.

    python -m kagglecifar.cli.docs_tables           # rewrite the tables in docs/
    python -m kagglecifar.cli.docs_tables --check   # exit 1 naming each table that differs (a test runs it)
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
PRESET_COLUMNS = ("model", "width", "epochs", "batch_size", "lr", "optimizer", "schedule", "augment")


def markdown(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def augment_table() -> str:
    from kagglecifar.data.augment import PRESETS

    return markdown(("preset", "what"), [(f"`{name}`", what) for name, what in PRESETS.items()])


def tta_table() -> str:
    from kagglecifar.inference.tta import TTA_MODES

    return markdown(("mode", "views", "what"), [(f"`{m}`", len(views), what) for m, (what, views) in TTA_MODES.items()])


def presets_table() -> str:
    from kagglecifar import config

    defaults = asdict(config.Recipe())
    rows = []
    for name, what in config.preset_descriptions().items():
        values = {**defaults, **config.preset_values(name)}
        shown = [
            "default"
            if values.get(key) is None
            else f"{values[key]:g}"
            if isinstance(values[key], float)
            else values[key]
            for key in PRESET_COLUMNS
        ]
        rows.append((f"`{name}`", what, *shown))
    return markdown(("preset", "what", *PRESET_COLUMNS), rows)


TABLES = {  # name -> (docs file, generator)
    "augment-table": ("training.md", augment_table),
    "presets-table": ("training.md", presets_table),
    "tta-table": ("predict-evaluate-submit.md", tta_table),
}


def update(check: bool, docs: Path = DOCS) -> list[str]:
    """Rewrite (or with check, only compare) every table; returns the names of those that differed."""
    differ = []
    for name, (file, generate) in TABLES.items():
        path = docs / file
        text = path.read_text(encoding="utf-8")
        pattern = re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(<!-- {name}:end -->)", re.S)
        found = pattern.search(text)
        if not found:
            raise SystemExit(f"{path}: no <!-- {name}:begin --> ... <!-- {name}:end --> markers")
        new = text[: found.start(2)] + generate() + "\n" + text[found.end(2) :]
        if new != text:
            differ.append(f"{name} in {path}")
            if not check:
                path.write_text(new, encoding="utf-8")
    return differ


def main(argv: list[str]) -> int:
    check = "--check" in argv
    differ = update(check)
    for what in differ:
        print(f"{'differs' if check else 'rewritten'}: {what}")
    return 1 if check and differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
