"""Submitting a CSV, listing submissions, reading the leaderboard."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kagglecifar.console import interactive
from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io.client import Connection, Transient, client_output, connect, note, retrying

POLL_SECONDS = 5.0  # between checks of a new submission's status
LEADERBOARD_PAGES = 200  # of 50 teams each, the page size Kaggle uses for lists


@dataclass
class SubmissionResult:
    ref: int
    file_name: str
    status: str  # "complete", or "pending" when not scored yet (--no-wait, timeout)
    public_score: float | None = None
    seconds: float = 0.0


@dataclass
class SubmissionInfo:
    ref: int
    date: datetime | None
    file_name: str
    description: str
    status: str  # "pending", "complete" or "error"
    public_score: float | None
    private_score: float | None
    error: str
    team_name: str


@dataclass
class LeaderboardEntry:
    rank: int
    team_name: str
    score: float | None
    date: datetime | None


@dataclass
class Leaderboard:
    top: list[LeaderboardEntry]
    teams: int
    team_name: str  # whom we looked for: your team name from your submissions, else your username
    you: LeaderboardEntry | None  # your row, when you are on the leaderboard
    best_score: float | None  # your best public score among your submissions
    would_rank: int | None  # where best_score would place (the leaderboard of a closed competition stays frozen)


def upload_submission(
    csv_path: Path, message: str, competition: str, wait: bool = True, timeout: float = 600.0
) -> SubmissionResult:
    """Upload csv_path as it is and wait up to `timeout` seconds for its public score.

    Call submission.submit instead: it checks the file first, so nothing invalid is ever uploaded.
    """
    started = time.perf_counter()
    csv_path = Path(csv_path)
    conn = connect(competition)

    def upload():
        with client_output() as printed:
            created = conn.api.competition_submit(str(csv_path), message, competition, quiet=not interactive())
        if created.message == conn.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            last = [line for line in printed.getvalue().splitlines() if line.strip()][-1:]
            raise Transient(f"the upload failed ({last[0][:200] if last else 'no reason given'})")
        return created

    created = retrying(conn, f"submitting {csv_path}", upload)
    result = SubmissionResult(created.ref, csv_path.name, "pending")
    deadline = time.monotonic() + timeout
    if wait:
        note(f"submitted {csv_path.name}; waiting up to {timeout:.0f} s for Kaggle to score it")
    while wait:
        mine = next((s for s in _submissions(conn) if s.ref == created.ref), None)
        if mine is not None and mine.status == "error":
            raise KaggleCifarError(f"{csv_path}: Kaggle could not score it: {mine.error or 'no reason given'}")
        if mine is not None and mine.status == "complete":
            result.status, result.public_score = "complete", mine.public_score
            break
        if time.monotonic() + POLL_SECONDS > deadline:
            break
        time.sleep(POLL_SECONDS)
    result.seconds = time.perf_counter() - started
    return result


def list_submissions(competition: str, count: int = 50) -> list[SubmissionInfo]:
    """Your latest `count` submissions, newest first."""
    return _submissions(connect(competition), count)


def _submissions(conn: Connection, count: int = 20) -> list[SubmissionInfo]:
    def fetch():
        with client_output():
            return conn.api.competition_submissions(conn.competition, page_size=count)

    items = retrying(conn, f"listing your submissions to {conn.competition!r}", fetch) or []
    return [
        SubmissionInfo(
            s.ref,
            s.date,
            s.file_name or "",
            s.description or "",
            s.status.name.lower(),
            _score(s.public_score),
            _score(s.private_score),
            s.error_description or "",
            s.team_name or "",
        )
        for s in items
        if s is not None
    ]


def leaderboard(competition: str, top: int = 20) -> Leaderboard:
    """The top of the public leaderboard and where you stand on it."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    conn = connect(competition)
    mine = _submissions(conn)
    team = next((s.team_name for s in mine if s.team_name), "") or conn.username
    rows, token = [], None
    for _ in range(LEADERBOARD_PAGES):

        def get_page(token=token):
            request = ApiGetLeaderboardRequest()
            request.competition_name, request.page_size, request.page_token = competition, 50, token
            with client_output(), conn.api.build_kaggle_client() as kaggle:
                return kaggle.competitions.competition_api_client.get_leaderboard(request)

        page = retrying(conn, f"reading the leaderboard of {competition!r}", get_page)
        rows += page.submissions
        token = page.next_page_token
        if not token:
            break
    board = [
        LeaderboardEntry(rank, r.team_name or "", _score(r.score), r.submission_date)
        for rank, r in enumerate(rows, start=1)
    ]
    you = next((e for e in board if e.team_name.casefold() == team.casefold()), None)
    scores = [s.public_score for s in mine if s.public_score is not None]
    ranked = [e.score for e in board if e.score is not None]
    higher_is_better = len(ranked) < 2 or ranked[0] >= ranked[-1]
    best = (max(scores) if higher_is_better else min(scores)) if scores else None
    would_rank = None
    if best is not None:
        would_rank = 1 + sum(s > best if higher_is_better else s < best for s in ranked)
    return Leaderboard(board[:top], len(board), team, you, best, would_rank)


def _score(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
