"""`kagglecifar run` end to end (real kaggle client, loopback fake Kaggle), and its CPU advice."""
import json

import pandas as pd
import pytest

from fake_kaggle import make_competition, serving
from kagglecifar import pipeline
from kagglecifar.errors import KaggleCifarError

CLASSES = ("cat", "dog", "frog")


def test_run_goes_through_every_stage_then_skips_them_all(run_cli, tmp_path, monkeypatch):
    competition = tmp_path / "competition"
    solution = make_competition(competition, n_train=60, n_test=40, classes=CLASSES)
    monkeypatch.chdir(tmp_path)
    with serving(monkeypatch, tmp_path / "home", competition, solution=solution) as fake:
        code, out, err = run_cli("run", "--preset", "cpu", "-m", "first")
        assert code == 0, err
        assert fake.key not in out + err
        for stage in ("fetch", "train", "predict", "submit"):
            assert any(line.startswith(f"{stage} ") and " done " in line for line in out.splitlines()), out
        csv = tmp_path / "submissions" / "simplecnn-cpu-flip.csv"
        rows = pd.read_csv(csv)
        assert list(rows.columns) == ["id", "label"] and rows["id"].tolist() == list(range(1, 41))
        assert set(rows["label"]) <= set(CLASSES)
        (upload,) = fake.called("upload")
        assert upload.body == csv.read_bytes()
        record = json.loads(csv.with_name("simplecnn-cpu-flip.submitted.json").read_text())
        expected = sum(label == solution[i] for i, label in zip(rows["id"], rows["label"])) / 40
        assert record["public_score"] == pytest.approx(expected, abs=1e-5)
        assert record["runs"] == [str((tmp_path / "runs" / "simplecnn-cpu").resolve())]  # what `compare` reads
        assert (tmp_path / "runs" / "simplecnn-cpu" / "best.pt").is_file()

        code, out, err = run_cli("run", "--preset", "cpu")
        assert code == 0, err
        assert sum(" skipped " in line for line in out.splitlines()) == 4, out
        assert "0 of 4 stages ran" in out
        assert len(fake.called("upload")) == 1


def test_without_a_gpu_run_says_what_to_expect_and_offers_the_cpu_preset(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    said = []
    assert pipeline.choose_preset("simplecnn", None, confirm=None, echo=said.append) == "cpu"
    assert "No CUDA GPU" in said[0] and "images/s measured" in said[0] and "6 epochs" in said[1]
    with pytest.raises(KaggleCifarError, match="--preset cpu"):
        pipeline.choose_preset("simplecnn", None, confirm=lambda question: False, echo=said.append)
    assert pipeline.choose_preset("simplecnn", "gpu", confirm=None, echo=said.append) == "gpu"


def test_from_dir_copies_the_csvs_that_predict_and_submit_read(tmp_path):
    competition = tmp_path / "competition"
    make_competition(competition, n_train=9, n_test=5, classes=CLASSES)
    line, did_work = pipeline.fetch("cifar-10", tmp_path / "data", from_dir=competition)
    assert did_work and "train 9, test 5 images" in line
    for name in ("trainLabels.csv", "sampleSubmission.csv"):
        assert (tmp_path / "data" / name).read_bytes() == (competition / name).read_bytes()
    assert not (tmp_path / "data" / "train.7z").exists()  # archives are read in place
    line, did_work = pipeline.fetch("cifar-10", tmp_path / "data", from_dir=competition)
    assert not did_work and "(up to date)" in line
