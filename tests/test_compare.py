"""`kagglecifar compare`: three runs of different models, one evaluated with TTA and one submitted (predict's
sidecar, submit's record, through the loopback fake Kaggle); the table, plots and reports."""

import base64
import csv
import json

import pytest
import torch
from fake_kaggle import make_competition, serving

from kagglecifar import pipeline
from kagglecifar.recipes import make_config
from kagglecifar.training.train import train

CLASSES = ("cat", "dog", "frog")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny competition, its cache, and two-epoch runs of three models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("compare")
    competition = root / "competition"
    solution = make_competition(competition, n_train=90, n_test=30, classes=CLASSES)
    pipeline.fetch("cifar-10", root / "data", from_dir=competition)
    runs = root / "runs"
    common = dict(epochs=2, batch_size=16, workers=0, device="cpu", data_dir=str(root / "data"), runs_dir=str(runs))
    for name, model, options in (
        ("mlp-run", "mlp", {}),
        ("cnn-run", "simplecnn", {"lr": 0.02}),
        ("resnet-run", "resnet18", {"width": 0.125}),
    ):
        train(make_config(model, "cpu", name=name, **common, **options))
    yield root, competition, solution, runs
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_compare_three_models_with_tta_and_a_public_score(setup, run_cli, monkeypatch):
    root, competition, solution, runs = setup
    data = root / "data"
    code, _, err = run_cli("evaluate", runs / "cnn-run", "--tta", "flip", "--data-dir", data, "--device", "cpu")
    assert code == 0, err
    evaluation = json.loads((runs / "cnn-run" / "evaluation.json").read_text())
    assert set(evaluation["accuracy"]) == {"none", "flip"} and evaluation["confusion"]["tta"] == "flip"

    csv_path = root / "submissions" / "mlp.csv"
    code, _, err = run_cli(
        "predict", runs / "mlp-run", "--tta", "none", "--out", csv_path, "--data-dir", data, "--device", "cpu"
    )
    assert code == 0, err
    assert json.loads(csv_path.with_name("mlp.sources.json").read_text())["runs"] == [str((runs / "mlp-run").resolve())]
    with serving(monkeypatch, root / "home", competition, solution=solution):
        code, out, err = run_cli("submit", csv_path, "-m", "mlp", "--data-dir", data)
    assert code == 0, err
    record = json.loads(csv_path.with_name("mlp.submitted.json").read_text())
    assert record["runs"] == [str((runs / "mlp-run").resolve())] and record["public_score"] is not None

    out_file = root / "report.html"
    code, out, err = run_cli(
        "compare",
        runs / "mlp-run",
        runs / "cnn-run",
        runs / "resnet-run",
        "--out",
        out_file,
        "--submissions-dir",
        root / "submissions",
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["run", "model", "params", "recipe"] and "TTA flip" in lines[0]
    assert "public score" in lines[0]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert rows["mlp-run"].split()[1:3] == ["mlp", "0.20M"]
    assert rows["mlp-run"].endswith(f"{record['public_score']:.5f}")
    assert rows["cnn-run"].split()[1] == "simplecnn" and f"{evaluation['accuracy']['flip']:.2%}" in rows["cnn-run"]
    assert "width=0.125" in rows["resnet-run"] and "lr=0.02" in rows["cnn-run"]  # the options that differ
    assert lines[-1].startswith("compare: 3 runs, best val accuracy") and str(out_file) in lines[-1]

    text = out_file.read_text()
    assert text.count("data:image/png;base64,") == 2 and "<table>" in text and "resnet-run" in text
    embedded = text.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(embedded)[:8] == PNG
    for name in ("report-curves.png", "report-confusion.png"):
        assert (root / name).read_bytes()[:8] == PNG
    with open(root / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["mlp", "simplecnn", "resnet18"]
    assert float(table[0]["public_score"]) == pytest.approx(record["public_score"])
    assert float(table[1]["tta_flip"]) == pytest.approx(evaluation["accuracy"]["flip"])

    code, _, err = run_cli("compare", runs, "--out", out_file, "--submissions-dir", root / "submissions")
    assert code == 1 and "already exists; pass --force" in err  # a finished report is not overwritten silently


@pytest.mark.slow
def test_a_folder_of_runs_stands_for_its_runs_and_markdown_reports(setup, run_cli):
    root, _, _, runs = setup
    (runs / "notes").mkdir()  # not a run: ignored inside a folder of runs
    code, out, err = run_cli("compare", runs, "--out", root / "md" / "report.md")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["cnn-run", "mlp-run", "resnet-run"]
    text = (root / "md" / "report.md").read_text()
    assert "| run | model | params |" in text and "![curves](report-curves.png)" in text
    assert (root / "md" / "report-confusion.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "target,message",
    [
        ("nothing-here", "not a run folder (no run.json written by kagglecifar) and holds none"),
        ("report.txt", "--out"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_give_one_clear_line(setup, tmp_path, run_cli, target, message):
    root, _, _, runs = setup
    args = [tmp_path / target] if target == "nothing-here" else [runs / "mlp-run", "--out", tmp_path / target]
    code, _, err = run_cli("compare", *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
