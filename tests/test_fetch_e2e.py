"""`kagglecifar fetch` end to end: the real kaggle client downloads a tiny competition from the loopback fake."""

import pytest
from fake_kaggle import make_competition, serving

from kagglecifar import cache, kaggle_io

N_TRAIN, N_TEST = 24, 30


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("competition")
    make_competition(folder, N_TRAIN, N_TEST)
    return folder


@pytest.fixture
def fake(files, tmp_path, monkeypatch):
    with serving(monkeypatch, tmp_path / "home", files) as fake:
        yield fake


def fetch(run_cli, fake, data, *args):
    code, out, err = run_cli("fetch", "--data-dir", data, "--workers", 1, *args)
    assert fake.key not in out + err
    return code, out, err


def test_fetch_downloads_and_builds_the_cache_then_skips_everything_on_a_second_run(run_cli, fake, files, tmp_path):
    data = tmp_path / "data"
    code, out, err = fetch(run_cli, fake, data)
    assert code == 0, err
    assert "4 files downloaded" in out and f"train {N_TRAIN}, test {N_TEST} images" in out
    assert "\r" not in out + err  # off a terminal: no progress-bar frames (downloads, cache) in a log file
    assert len(cache.load_split(data, "train")) == N_TRAIN and len(cache.load_split(data, "test")) == N_TEST
    for name in kaggle_io.REQUIRED_FILES:
        assert (data / name).read_bytes() == (files / name).read_bytes()

    downloads = len(fake.called("blob"))
    code, out, err = fetch(run_cli, fake, data)
    assert code == 0, err
    assert "all 4 files already downloaded" in out and "(up to date)" in out
    assert len(fake.called("blob")) == downloads


def test_download_cut_midway_leaves_only_a_part_file_and_the_next_run_resumes_it(
    run_cli, fake, files, tmp_path, monkeypatch
):
    monkeypatch.setattr(kaggle_io.client, "ATTEMPTS", 1)
    data = tmp_path / "data"
    size = (files / "test.7z").stat().st_size
    fake.cut("test.7z", size // 2)
    code, out, err = fetch(run_cli, fake, data)
    assert code == 1 and "downloading test.7z: cannot reach Kaggle" in err and "IncompleteRead" in err
    assert not (data / "test.7z").exists() and not cache.is_complete(data, "test")
    kept = (data / "test.7z.part").stat().st_size
    assert 0 < kept < size

    code, out, err = fetch(run_cli, fake, data)
    assert code == 0, err
    assert f"bytes={kept}-" in [r.headers.get("Range") for r in fake.called("blob")]
    assert (data / "test.7z").read_bytes() == (files / "test.7z").read_bytes()
    assert not (data / "test.7z.part").exists()
    assert len(cache.load_split(data, "test")) == N_TEST


def test_wrong_key_is_a_clear_error(run_cli, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key")
    code, out, err = fetch(run_cli, fake, tmp_path / "data")
    assert code == 1
    assert "Kaggle rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY (401 Unauthenticated)" in err
    assert "not-the-key" not in out + err


def test_rules_not_accepted_points_at_the_rules_page(run_cli, fake, tmp_path):
    fake.rules_accepted = False
    code, out, err = fetch(run_cli, fake, tmp_path / "data")
    assert code == 1
    assert "accept the competition's rules at https://www.kaggle.com/competitions/cifar-10/rules" in err
    assert "(403 You must accept this competition's rules" in err
    assert not (tmp_path / "data" / "train.7z").exists()


def test_unknown_competition_is_named(run_cli, fake, tmp_path):
    code, out, err = fetch(run_cli, fake, tmp_path / "data", "--competition", "cifar-11")
    assert code == 1 and "(404 Competition not found); is --competition 'cifar-11' right?" in err


def test_no_credentials_says_where_to_put_them(run_cli, fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    code, out, err = fetch(run_cli, fake, tmp_path / "data")
    assert code == 1
    assert "no Kaggle credentials: save your API token file" in err
    assert f"as {tmp_path / 'home' / '.kaggle' / 'kaggle.json'} and chmod 600 it" in err
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in err and fake.requests == []


def test_from_dir_needs_no_server_and_no_credentials(run_cli, files, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "home" / ".kaggle"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # anything that tried the network would fail
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    code, out, err = run_cli("fetch", "--data-dir", data, "--from-dir", files, "--workers", 1)
    assert code == 0, err
    assert f"read in place from {files}" in out and f"train {N_TRAIN}, test {N_TEST} images" in out
    assert not (data / "train.7z").exists()
    assert len(cache.load_split(data, "test")) == N_TEST
