"""`kagglecifar submit`, `submissions` and `leaderboard`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    COMPETITION,
    DATA_DIR,
    SUBMISSIONS_DIR,
    app,
    examples,
    summary,
)


@app.command(
    epilog=examples(
        "kagglecifar submit                          # the newest CSV in submissions/",
        'kagglecifar submit -m "resnet18, flip TTA"',
        'kagglecifar submit submissions/resnet18-gpu-flip.csv -m "first try" --no-wait',
    )
)
def submit(
    csv_path: Optional[Path] = typer.Argument(
        None, metavar="CSV", help="Submission file (default: the newest CSV in SUBMISSIONS_DIR)."
    ),
    message: Optional[str] = typer.Option(
        None,
        "-m",
        "--message",
        help="Description shown with the submission on Kaggle (default: 'kagglecifar CSV_NAME').",
    ),
    competition: str = COMPETITION,
    data_dir: Optional[Path] = DATA_DIR,
    submissions_dir: Optional[Path] = SUBMISSIONS_DIR,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle to score it and print the score."),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="Seconds to wait for the score."),
) -> None:
    """Check a submission CSV locally, upload it to Kaggle and print its public score."""
    from kagglecifar import api

    result = api.submit(
        csv_path,
        message=message,
        competition=competition,
        data_dir=data_dir,
        submissions_dir=submissions_dir,
        wait=wait,
        timeout=timeout,
    )
    summary(f"submit: {result.line()}")


@app.command(epilog=examples("kagglecifar submissions"))
def submissions(competition: str = COMPETITION) -> None:
    """Your submissions to the competition: date, file, message, status, public score."""
    from kagglecifar import kaggle_io
    from kagglecifar.kaggle_io import listings as reports

    items = kaggle_io.list_submissions(competition)
    if not items:
        return summary(f"submissions: none yet to {competition}; make one with `kagglecifar submit`")
    for line in reports.submissions_table(items):
        typer.echo(line)
    scores = [s.public_score for s in items if s.public_score is not None]
    best = f", best public score {max(scores):.5f}" if scores else ""
    summary(f"submissions: {len(items)} latest to {competition}{best}")


@app.command(epilog=examples("kagglecifar leaderboard --top 10"))
def leaderboard(
    competition: str = COMPETITION,
    top: int = typer.Option(20, "--top", min=1, help="How many of the leading teams to show."),
) -> None:
    """The top of the public leaderboard and where you stand."""
    from kagglecifar import kaggle_io
    from kagglecifar.kaggle_io import listings as reports

    board = kaggle_io.leaderboard(competition, top=top)
    for line in reports.leaderboard_table(board):
        typer.echo(line)
    summary(f"leaderboard {competition}: {reports.standing(board)}")
