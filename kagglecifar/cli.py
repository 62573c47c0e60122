"""The `kagglecifar` command line: parses options and calls the stage modules, nothing more.

Each command ends with a one-line summary; a KaggleCifarError becomes one line on stderr and exit 1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from kagglecifar.errors import KaggleCifarError

app = typer.Typer(
    help="From nothing to a scored submission in Kaggle's CIFAR-10 competition.\n\n"
    "Typical session:  fetch  ->  train resnet18  ->  predict --tta  ->  submit   (or all at once: run)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_DIR = typer.Option(Path("data"), "--data-dir", help="Where downloads and the image cache live.")
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help="Where training runs are written.")
SUBMISSIONS_DIR = Path("submissions")
COMPETITION = typer.Option("cifar-10", "--competition", help="Kaggle competition slug.")


def summary(line: str) -> None:
    """The one-line summary every command ends with."""
    typer.echo(line)


# ---- fetch ------------------------------------------------------------------------------------

# ---- end fetch --------------------------------------------------------------------------------

# ---- models, train ----------------------------------------------------------------------------

# ---- end models, train ------------------------------------------------------------------------

# ---- predict, evaluate ------------------------------------------------------------------------

# ---- end predict, evaluate --------------------------------------------------------------------

# ---- submit, submissions, leaderboard ---------------------------------------------------------

# ---- end submit, submissions, leaderboard -----------------------------------------------------

# ---- run ----------------------------------------------------------------------------------------

# ---- end run ------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: one-line errors, non-zero exit, no traceback for user mistakes."""
    try:
        app(args=argv, prog_name="kagglecifar")
    except KaggleCifarError as exc:
        typer.echo(f"kagglecifar: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("kagglecifar: interrupted", err=True)
        sys.exit(130)
