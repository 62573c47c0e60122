"""`kagglecifar run` end to end (real kaggle client, loopback fake Kaggle), and its CPU advice."""

import json
import time

import pandas as pd
import pytest
from fake_kaggle import make_competition, serving

from kagglecifar import pipeline
from kagglecifar.errors import KaggleCifarError
from kagglecifar.recipes import preset_values

CLASSES = ("cat", "dog", "frog")


@pytest.mark.slow
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
        model = preset_values("cpu")["model"]
        csv = tmp_path / "submissions" / f"{model}-cpu-flip.csv"
        rows = pd.read_csv(csv)
        assert list(rows.columns) == ["id", "label"] and rows["id"].tolist() == list(range(1, 41))
        assert set(rows["label"]) <= set(CLASSES)
        (upload,) = fake.called("upload")
        assert upload.body == csv.read_bytes()
        record = json.loads(csv.with_name(f"{model}-cpu-flip.submitted.json").read_text())
        expected = sum(label == solution[i] for i, label in zip(rows["id"], rows["label"])) / 40
        assert record["public_score"] == pytest.approx(expected, abs=1e-5)
        assert record["runs"] == [str((tmp_path / "runs" / f"{model}-cpu").resolve())]  # what `compare` reads
        assert (tmp_path / "runs" / f"{model}-cpu" / "best.pt").is_file()

        code, out, err = run_cli("run", "--preset", "cpu")
        assert code == 0, err
        assert sum(" skipped " in line for line in out.splitlines()) == 4, out
        assert "0 of 4 stages ran" in out
        assert len(fake.called("upload")) == 1

        # A damaged submission record is one line naming it: nothing uploaded again, nothing rewritten.
        record_path = csv.with_name(f"{model}-cpu-flip.submitted.json")
        good = record_path.read_bytes()
        for damaged in (b"", good[: len(good) // 2], b"[]", b"\x00\xff" * 40, b'{"public_score": "high"}'):
            record_path.write_bytes(damaged)
            code, out, err = run_cli("run", "--preset", "cpu")
            assert code == 1 and err.strip().splitlines()[-1].startswith("kagglecifar: error: "), err
            assert "submitted.json: damaged record" in err and "Traceback" not in err, err
            assert record_path.read_bytes() == damaged and len(fake.called("upload")) == 1
        record_path.write_bytes(good)

        # Without a GPU and without --preset, a finished run is found before any question or speed test.
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
        monkeypatch.setattr(pipeline, "_estimate", lambda *a: pytest.fail("measured training speed again"))
        code, out, err = run_cli("run")
        assert code == 0 and "0 of 4 stages ran" in out, err

        # Another recipe for the same run folder is refused, not skipped as "already trained"...
        code, out, err = run_cli("run", "--preset", "cpu", "--set", "epochs=2")
        cpu_epochs = preset_values("cpu")["epochs"]
        assert (
            code == 1 and f"{model}-cpu: was trained with another recipe (epochs {cpu_epochs} there, 2 now)" in err
        ), err
        # ...and trains under another name, from --config and --set like `train` (e.g. tune's best.yaml).
        (tmp_path / "best.yaml").write_text("recipe:\n  epochs: 1\n  lr: 0.5\n")
        code, out, err = run_cli(
            "run", "--preset", "cpu", "--config", "best.yaml", "--set", "epochs=2", "--name", "tuned", "--no-submit"
        )
        assert code == 0, err
        saved = (tmp_path / "runs" / "tuned" / "config.yaml").read_text()
        assert "epochs: 2" in saved and "lr: 0.5" in saved
        assert (tmp_path / "submissions" / "tuned-flip.csv").is_file() and len(fake.called("upload")) == 1


@pytest.mark.slow
def test_without_a_gpu_run_says_what_to_expect_and_offers_the_cpu_preset(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    said = []
    assert pipeline.choose_preset("simplecnn", None, confirm=None, echo=said.append) == ("cpu", None)
    # simplecnn with its own recipe (the baseline preset's), measured; the cpu preset is its own model
    assert "No CUDA GPU" in said[0] and "images/s measured" in said[0] and "about 95%" not in said[0]
    assert f"simplecnn, {preset_values('baseline')['epochs']} epochs" in said[0] and "per epoch" in said[0]
    cpu = preset_values("cpu")
    assert f"The cpu preset ({cpu['model']} at width {cpu['width']:g}, {cpu['epochs']} epochs;" in said[1]
    assert "in place of simplecnn" in said[2]
    with pytest.raises(KaggleCifarError, match="kagglecifar run simplecnn --preset gpu"):
        pipeline.choose_preset("simplecnn", None, confirm=lambda question: False, echo=said.append)
    assert pipeline.choose_preset("simplecnn", "gpu", confirm=None, echo=said.append) == ("gpu", "simplecnn")


def test_the_cpu_estimate_times_the_training_step_of_the_model_asked_for(monkeypatch):
    """run resnet18 on a CPU: ResNet-18 with its own recipe is what gets timed, through training_step."""
    from kagglecifar.training import step

    timed = []

    def counting_step(model, optimizer, images, labels, label_smoothing=0.0, autocast=None, hardest=1.0):
        timed.append((type(model).__name__, sum(p.numel() for p in model.parameters()), label_smoothing, hardest))
        time.sleep(0.01)  # ResNet-18's real steps take seconds here; what is timed is the point

    monkeypatch.setattr(step, "training_step", counting_step)
    estimate = pipeline._estimate("resnet18", "cpu")
    assert estimate.model == "resnet18" and estimate.what == f"resnet18, {preset_values('gpu')['epochs']} epochs"
    assert len(timed) == 3 and timed[0][1] > 11_000_000 and timed[0][2] == preset_values("gpu")["label_smoothing"]
    assert timed[0][3] == 1.0  # the step as the recipe trains it: every image of the batch


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


@pytest.mark.parametrize("name", [".", "..", "../other", "/tmp/elsewhere", "a/b", ""])
def test_run_refuses_names_that_are_not_plain_folder_names_before_touching_anything(run_cli, tmp_path, name):
    runs = tmp_path / "runs"
    earlier = runs / "earlier-run"
    earlier.mkdir(parents=True)
    (earlier / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run_cli(
        "run",
        "mlp",
        "--preset",
        "cpu",
        "--name",
        name,
        "--runs-dir",
        runs,
        "--data-dir",
        tmp_path / "data",
        "--no-submit",
    )
    assert code == 1 and "a run name is one plain folder name" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_run_never_takes_over_a_folder_it_did_not_create(run_cli, tmp_path):
    mine = tmp_path / "runs" / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    code, _, err = run_cli(
        "run",
        "mlp",
        "--preset",
        "cpu",
        "--name",
        "mine",
        "--runs-dir",
        tmp_path / "runs",
        "--data-dir",
        tmp_path / "data",
        "--no-submit",
    )
    assert code == 1 and "exists and is not a kagglecifar run" in err
    assert (mine / "notes.txt").read_text() == "keep me"


def test_only_unstarted_runs_that_kagglecifar_created_are_removed(tmp_path):
    from kagglecifar import rundir

    created = rundir.create_run(tmp_path, "killed-early", "mlp", {})
    assert rundir.remove_unstarted(created) and not created.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert not rundir.remove_unstarted(foreign) and foreign.exists()
    started = rundir.create_run(tmp_path, "started", "mlp", {})
    (started / "last.pt").write_bytes(b"x")
    assert not rundir.remove_unstarted(started) and (started / "last.pt").exists()
    extra = rundir.create_run(tmp_path, "with-user-file", "mlp", {})
    (extra / "mine.txt").write_text("keep")
    assert not rundir.remove_unstarted(extra) and (extra / "mine.txt").read_text() == "keep"
