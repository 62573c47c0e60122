"""Text renderings of what Kaggle answers (submissions, leaderboard) for the CLI."""

from __future__ import annotations

from kagglecifar.console import table
from kagglecifar.kaggle_io import Leaderboard, SubmissionInfo


def submissions_table(items: list[SubmissionInfo]) -> list[str]:
    rows = [
        (
            f"{s.date:%Y-%m-%d %H:%M}" if s.date else "",
            s.file_name,
            s.description[:40],
            s.status,
            _shown(s.public_score) if s.status != "error" else s.error[:40],
        )
        for s in items
    ]
    return table(("date (UTC)", "file", "message", "status", "public score"), rows)


def leaderboard_table(board: Leaderboard) -> list[str]:
    rows = [
        (
            str(e.rank),
            e.team_name + ("  <- you" if board.you and e.rank == board.you.rank else ""),
            _shown(e.score),
            f"{e.date:%Y-%m-%d}" if e.date else "",
        )
        for e in board.top
    ]
    return table(("rank", "team", "public score", "date"), rows)


def standing(board: Leaderboard) -> str:
    """One line: where you stand."""
    if board.you:
        you = board.you
        return f"you ({you.team_name}) are ranked {you.rank} of {board.teams}, score {_shown(you.score)}"
    if board.best_score is None:
        return f"you ({board.team_name}) have no scored submission yet; {board.teams} teams on the leaderboard"
    return (
        f"you ({board.team_name}) are not on the leaderboard (late submissions are scored, not ranked); "
        f"your best public score {_shown(board.best_score)} would rank {board.would_rank} of {board.teams + 1}"
    )


def _shown(score: float | None) -> str:
    return "" if score is None else f"{score:.5f}"
