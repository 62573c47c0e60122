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
    data_dir: Path = DATA_DIR,
    submissions_dir: Path = SUBMISSIONS_DIR,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle to score it and print the score."),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="Seconds to wait for the score."),
) -> None:
    """Check a submission CSV locally, upload it to Kaggle and print its public score."""
    from kagglecifar.kaggle_io import submission_csv as submission

    csv_path = csv_path or submission.newest_submission(submissions_dir)
    message = message or f"kagglecifar {Path(csv_path).name}"
    result = submission.submit(csv_path, message, competition, data_dir=data_dir, wait=wait, timeout=timeout)
    if result.status == "complete":
        summary(
            f"submit: {csv_path} scored {result.public_score:.5f} (public) on {competition}, "
            f"submission {result.ref}, {result.seconds:.1f} s"
        )
    else:
        summary(
            f"submit: {csv_path} uploaded to {competition} as submission {result.ref}, not scored yet"
            f"{'' if wait else ' (--no-wait)'}; see `kagglecifar submissions`"
        )


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
