"""`kagglecifar fetch`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    COMPETITION,
    DATA_DIR,
    DATASET,
    FORMAT,
    FROM_DIR_HELP,
    LABELS,
    app,
    examples,
    summary,
)


@app.command(
    epilog=examples(
        "kagglecifar fetch",
        "kagglecifar fetch --from-dir ~/Downloads/cifar-10",
        "kagglecifar fetch --from-dir ~/Downloads/cifar-100-python.tar.gz --labels coarse",
        "kagglecifar fetch --dataset OWNER/NAME --format image-folder",
    )
)
def fetch(
    competition: str = COMPETITION,
    data_dir: Optional[Path] = DATA_DIR,
    from_dir: Optional[Path] = typer.Option(
        None, "--from-dir", metavar="PATH", help="Build the cache from " + FROM_DIR_HELP
    ),
    dataset: Optional[str] = DATASET,
    fmt: Optional[str] = FORMAT,
    labels: Optional[str] = LABELS,
    force: bool = typer.Option(False, "--force", help="Download again and rebuild the cache even when up to date."),
    keep_png: bool = typer.Option(
        False, "--keep-png", help="Also write the PNG files to DATA_DIR/train/ and test/ (competition files only)."
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=0,
        help="PNG-decoding threads beside the decompressing ones (competition files); "
        "0: the decompressing threads decode too (default: one per core).",
    ),
) -> None:
    """Download the competition files from Kaggle (resumable), or take another CIFAR source, and build the uint8
    image cache from it. In a Kaggle notebook the competition's files attached under /kaggle/input are read there."""
    from kagglecifar import api

    result = api.fetch(
        competition,
        data_dir,
        from_dir=from_dir,
        dataset=dataset,
        format=fmt,
        labels=labels,
        force=force,
        keep_png=keep_png,
        workers=workers,
    )
    summary(f"fetch: {result.line()}")
