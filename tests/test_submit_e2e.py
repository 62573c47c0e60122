"""`kagglecifar submit / submissions / leaderboard` end to end through the real kaggle client and the loopback fake."""

import os

import pytest
from fake_kaggle import make_competition, serving

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    folder = tmp_path_factory.mktemp("competition")
    return folder, make_competition(folder, n_train=6, n_test=40, classes=CLASSES)


@pytest.fixture
def fake(competition, tmp_path, monkeypatch):
    with serving(monkeypatch, tmp_path / "home", competition[0], solution=competition[1]) as fake:
        yield fake


def write_predictions(path, solution, right_every=1):
    """A valid submission that gets every `right_every`-th id right; returns the accuracy it must score."""
    other = {c: CLASSES[(CLASSES.index(c) + 1) % len(CLASSES)] for c in CLASSES}
    ordered = sorted(solution.items())
    rows = [(i, label if n % right_every == 0 else other[label]) for n, (i, label) in enumerate(ordered)]
    path.write_text("id,label\n" + "".join(f"{i},{label}\n" for i, label in rows))
    return sum(label == solution[i] for i, label in rows) / len(rows)


def submit(run_cli, fake, competition, *args):
    code, out, err = run_cli("submit", *args, "--data-dir", competition[0])
    assert fake.key not in out + err
    return code, out, err


def test_good_file_is_uploaded_scored_and_the_score_printed(run_cli, fake, competition, tmp_path):
    expected = write_predictions(tmp_path / "pred.csv", competition[1], right_every=4)
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "quarter right")
    assert code == 0, err
    assert f"scored {expected:.5f} (public) on cifar-10" in out
    assert "\r" not in out + err  # off a terminal: no upload-bar frames in a log file
    (upload,) = fake.called("upload")
    assert upload.body == (tmp_path / "pred.csv").read_bytes()
    assert fake.submissions[0].description == "quarter right"

    code, out, err = run_cli("submissions")
    assert code == 0, err
    assert "pred.csv  quarter right  complete" in out and f"best public score {expected:.5f}" in out


def test_malformed_file_is_refused_locally_and_never_reaches_the_server(run_cli, fake, competition, tmp_path):
    write_predictions(tmp_path / "pred.csv", competition[1])
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",zebra"
    (tmp_path / "pred.csv").write_text("\n".join(lines[:-1]) + "\n")  # and one row short
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "broken")
    assert code == 1
    assert f"{tmp_path / 'pred.csv'}: not a valid submission" in err and "line 4: unknown label 'zebra'" in err
    assert fake.requests == []


def test_newest_csv_in_submissions_is_the_default(run_cli, fake, competition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "submissions").mkdir()
    write_predictions(tmp_path / "submissions" / "old.csv", competition[1], right_every=2)
    expected = write_predictions(tmp_path / "submissions" / "new.csv", competition[1], right_every=1)
    os.utime(tmp_path / "submissions" / "old.csv", (1, 1))
    code, out, err = submit(run_cli, fake, competition)  # `kagglecifar submit` bare: no -m needed
    assert code == 0, err
    assert f"submissions/new.csv scored {expected:.5f}" in out
    assert fake.submissions[0].file_name == "new.csv"
    assert fake.submissions[0].description == "kagglecifar new.csv"


def test_rate_limit_and_server_errors_are_retried_then_succeed(run_cli, fake, competition, tmp_path):
    expected = write_predictions(tmp_path / "pred.csv", competition[1], right_every=2)
    fake.fail("StartSubmissionUpload", 429, times=1, retry_after="1")
    fake.fail("CreateSubmission", 500, times=1)
    fake.fail("ListSubmissions", 503, times=1)
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "retry me")
    assert code == 0, err
    assert f"scored {expected:.5f}" in out
    assert "429 injected failure 429; trying again" in err and "500 injected failure 500; trying again" in err
    assert len(fake.submissions) == 1  # the failed CreateSubmission made none


def test_no_wait_or_timeout_returns_before_scoring(run_cli, fake, competition, tmp_path):
    write_predictions(tmp_path / "pred.csv", competition[1])
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "later", "--no-wait")
    assert code == 0, err
    assert "uploaded to cifar-10 as submission 1, not scored yet (--no-wait)" in out
    assert fake.called("ListSubmissions") == []

    fake.polls_until_scored = 1000
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "slow", "--timeout", 0)
    assert code == 0, err
    assert "as submission 2, not scored yet; see `kagglecifar submissions`" in out
    assert len(fake.called("ListSubmissions")) == 1


def test_submission_kaggle_cannot_score_is_an_error(run_cli, fake, competition, tmp_path):
    write_predictions(tmp_path / "pred.csv", competition[1])
    fake.solution = {**competition[1], 999: "cat"}  # the server expects an id we do not have
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "x")
    assert code == 1 and "Kaggle could not score it: Submission must have 41 rows" in err


def test_wrong_key_is_a_clear_error(run_cli, fake, competition, tmp_path, monkeypatch):
    write_predictions(tmp_path / "pred.csv", competition[1])
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key")
    code, out, err = submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "x")
    assert code == 1 and "Kaggle rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY" in err
    assert "wrong-key" not in out + err and fake.called("upload") == []


def test_leaderboard_shows_the_top_and_your_place(run_cli, fake, competition, tmp_path):
    fake.others = [("first", 0.99), ("second", 0.2)]
    expected = write_predictions(tmp_path / "pred.csv", competition[1], right_every=2)
    assert submit(run_cli, fake, competition, tmp_path / "pred.csv", "-m", "x")[0] == 0
    code, out, err = run_cli("leaderboard", "--top", 1)
    assert code == 0, err
    assert "first" in out and "second" not in out
    assert f"you ({fake.team_name}) are ranked 2 of 3, score {expected:.5f}" in out
    assert fake.key not in out + err
