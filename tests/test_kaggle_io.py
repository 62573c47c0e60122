"""kaggle_io through the real kaggle client against the loopback fake: credentials, retries, downloads, boards."""

import os
import time
from email.utils import formatdate

import pytest
from fake_kaggle import make_competition, serving

from kagglecifar import kaggle_io
from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io import listings as reports
from kagglecifar.kaggle_io import submission_csv as submission


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("competition")
    return folder, make_competition(folder)


@pytest.fixture
def fake(files, tmp_path, monkeypatch):
    with serving(monkeypatch, tmp_path / "home", files[0], solution=files[1]) as fake:
        yield fake


def test_retry_delay_honours_retry_after_and_otherwise_backs_off_with_a_cap(monkeypatch):
    monkeypatch.setattr(kaggle_io.client, "BACKOFF_SECONDS", 2.0)
    monkeypatch.setattr(kaggle_io.client, "MAX_BACKOFF_SECONDS", 10.0)
    monkeypatch.setattr(kaggle_io.client, "MAX_RETRY_AFTER_SECONDS", 100.0)
    assert [kaggle_io.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert kaggle_io.retry_delay(1, "7") == 7.0
    assert kaggle_io.retry_delay(1, "7000") == 100.0
    assert 25 < kaggle_io.retry_delay(1, formatdate(time.time() + 30, usegmt=True)) <= 30
    assert kaggle_io.retry_delay(3, "soon") == 8.0


def test_download_cut_midway_is_resumed_with_a_range_request(fake, files, tmp_path):
    size = (files[0] / "train.7z").stat().st_size
    fake.cut("train.7z", size // 2)
    summary = kaggle_io.download_competition("cifar-10", tmp_path / "data")
    assert sorted(summary.downloaded) == sorted(kaggle_io.REQUIRED_FILES)
    for name in kaggle_io.REQUIRED_FILES:
        assert (tmp_path / "data" / name).read_bytes() == (files[0] / name).read_bytes()
    ranges = [r.headers.get("Range") for r in fake.called("blob") if r.path.endswith("train.7z")]
    assert any(r and r.startswith("bytes=") and int(r[6:].rstrip("-")) > 0 for r in ranges)
    assert sorted(os.listdir(tmp_path / "data")) == sorted(kaggle_io.REQUIRED_FILES)  # no .part or marker left


def test_a_file_served_inside_kaggles_zip_wrapper_is_unwrapped(fake, files, tmp_path):
    fake.zipped = {"trainLabels.csv"}
    kaggle_io.download_competition("cifar-10", tmp_path / "data")
    assert any(r.path.endswith("trainLabels.csv.zip") for r in fake.called("blob"))
    assert (tmp_path / "data" / "trainLabels.csv").read_bytes() == (files[0] / "trainLabels.csv").read_bytes()


def test_full_disk_names_the_file_and_leaves_nothing_under_the_final_name(fake, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.7z.part").symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(KaggleCifarError, match=r"test\.7z\.part: disk full while downloading test\.7z"):
        kaggle_io.download_competition("cifar-10", data)
    assert not (data / "test.7z").exists()


def test_rate_limit_is_retried_after_retry_after_then_succeeds(fake, tmp_path, capsys):
    fake.fail("ListDataFiles", 429, times=2, retry_after="0")
    kaggle_io.download_competition("cifar-10", tmp_path / "data")
    assert len(fake.called("ListDataFiles")) == 3
    assert "429 injected failure 429; trying again" in capsys.readouterr().err


def test_persistent_server_error_gives_up_with_the_servers_reason(fake, tmp_path):
    fake.fail("DownloadDataFile", 503, times=99)
    with pytest.raises(
        KaggleCifarError,
        match=r"downloading train\.7z: Kaggle server error \(503 injected "
        r"failure 503\) after 3 tries",
    ):
        kaggle_io.download_competition("cifar-10", tmp_path / "data")
    assert len(fake.called("DownloadDataFile")) == 3


def test_world_readable_kaggle_json_works_with_a_warning(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    token = tmp_path / "home" / ".kaggle" / "kaggle.json"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(f'{{"username": "{fake.username}", "key": "{fake.key}"}}')
    token.chmod(0o644)
    assert kaggle_io.list_submissions("cifar-10") == []
    err = capsys.readouterr().err
    assert f"{token} can be read by other users; run: chmod 600 {token}" in err
    assert fake.key not in err


def test_broken_kaggle_json_is_named(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_KEY")
    token = tmp_path / "home" / ".kaggle" / "kaggle.json"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text('{"username": "alice"}')
    with pytest.raises(KaggleCifarError, match=f"{token}: not a Kaggle API token file"):
        kaggle_io.list_submissions("cifar-10")


def test_access_token_is_checked_with_the_server(fake, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    fake.tokens["good-token"] = fake.username
    monkeypatch.setenv("KAGGLE_API_TOKEN", "good-token")
    assert kaggle_io.list_submissions("cifar-10") == []
    monkeypatch.setenv("KAGGLE_API_TOKEN", "revoked-token")
    with pytest.raises(KaggleCifarError, match="KAGGLE_API_TOKEN: Kaggle did not accept these credentials"):
        kaggle_io.list_submissions("cifar-10")


def test_leaderboard_shows_the_top_and_where_you_stand(fake, files, tmp_path):
    fake.others = [(f"team {i}", 1.0 - i / 10) for i in range(1, 8)]  # 0.9 ... 0.3
    good = tmp_path / "mine.csv"
    good.write_text("id,label\n" + "".join(f"{i},{label}\n" for i, label in files[1].items()))
    result = submission.submit(good, "all right", "cifar-10", data_dir=files[0])
    assert (result.status, result.public_score) == ("complete", 1.0)
    board = kaggle_io.leaderboard("cifar-10", top=3)
    assert [e.team_name for e in board.top] == [fake.team_name, "team 1", "team 2"]
    assert (board.you.rank, board.teams, board.best_score) == (1, 8, 1.0)
    assert "are ranked 1 of 8" in reports.standing(board)


def test_closed_leaderboard_tells_where_your_best_score_would_rank(fake, files, tmp_path):
    fake.others = [(f"team {i}", 1.0 - i / 10) for i in range(1, 8)]
    fake.leaderboard_open = False
    half = tmp_path / "half.csv"
    ids = sorted(files[1])
    wrong = {"cat": "dog", "dog": "frog", "frog": "cat"}
    rows = [f"{i},{files[1][i] if n % 2 else wrong[files[1][i]]}\n" for n, i in enumerate(ids)]
    half.write_text("id,label\n" + "".join(rows))
    score = submission.submit(half, "half right", "cifar-10", data_dir=files[0]).public_score
    assert score == pytest.approx(sum(n % 2 for n in range(len(ids))) / len(ids))
    board = kaggle_io.leaderboard("cifar-10", top=20)
    assert board.you is None and board.teams == 7
    assert board.would_rank == 1 + sum(s > score for _, s in fake.others)
    assert f"would rank {board.would_rank} of 8" in reports.standing(board)


def test_download_that_disagrees_with_the_file_list_is_not_kept(fake, tmp_path):
    fake.listed_sizes = {"sampleSubmission.csv": 5}
    with pytest.raises(
        KaggleCifarError,
        match=r"downloading sampleSubmission\.csv: got [\d,]+ bytes, the "
        r"file list says 5",
    ):
        kaggle_io.download_competition("cifar-10", tmp_path / "data")
    assert not (tmp_path / "data" / "sampleSubmission.csv").exists()
    assert not (tmp_path / "data" / "sampleSubmission.csv.part").exists()
