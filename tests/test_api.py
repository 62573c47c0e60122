"""The Python API (kagglecifar.fetch/train/predict/evaluate/submit/run) in-process, as a Kaggle notebook would call
it: the competition's files attached under a fake /kaggle/input, outputs in a fake /kaggle/working."""

import os
import subprocess
import sys

import pandas as pd
import pytest
from fake_kaggle import make_competition, serving

import kagglecifar
from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference import gating
from kagglecifar.kaggle_io import kaggle_env

CLASSES = ("cat", "dog", "frog")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def kaggle_notebook(tmp_path, monkeypatch):
    """A Kaggle notebook's folders: the competition attached read-only under INPUT/cifar-10, WORKING writable."""
    attached = tmp_path / "input" / "cifar-10"
    solution = make_competition(attached, n_train=60, n_test=40, classes=CLASSES)
    os.chmod(attached, 0o555)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("KAGGLECIFAR_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLECIFAR_KAGGLE_WORKING", str(tmp_path / "working"))
    monkeypatch.chdir(tmp_path)
    yield attached, solution
    os.chmod(attached, 0o755)


def test_every_command_as_a_function_in_a_kaggle_notebook(kaggle_notebook, tmp_path, monkeypatch):
    attached, solution = kaggle_notebook
    working = tmp_path / "working"
    before = {p.name: p.stat().st_mtime_ns for p in attached.iterdir()}

    fetched = kagglecifar.fetch()
    assert fetched.data_dir == working / "data" and fetched.changed
    assert f"archives read in place from {attached}" in fetched.line()
    assert (working / "data" / "cache").is_dir()
    assert {p.name: p.stat().st_mtime_ns for p in attached.iterdir()} == before  # nothing written there
    assert not (working / "data" / "train.7z").exists()  # the archives are not copied
    assert kagglecifar.fetch().changed is False

    result = kagglecifar.train("mlp", preset="cpu", epochs=1, batch_size=16, lr=0.05, workers=0, device="cpu")
    assert result.run_dir.parent == working / "runs" and result.stopped_reason == "completed"
    assert 0 <= result.best_val_accuracy <= 1 and result.best_epoch == 1
    assert result.line().startswith("best val accuracy")

    report = kagglecifar.evaluate(result.run_dir, tta="flip", device="cpu")
    gated = f"flip@{gating.DEFAULT_FRACTION:g}"
    assert set(report.overall) == {"none", "flip", gated} and "validation images" in report.line()

    predicted = kagglecifar.predict(result.run_dir, tta="flip", device="cpu")
    assert predicted.csv_path.parent == working / "submissions" and predicted.rows == 40
    assert pd.read_csv(predicted.csv_path)["id"].tolist() == list(range(1, 41))

    with serving(monkeypatch, tmp_path / "home", attached, solution=solution) as fake:
        submitted = kagglecifar.submit(message="from a notebook")
        assert submitted.csv_path == predicted.csv_path and submitted.status == "complete"
        assert submitted.public_score is not None and "scored" in submitted.line()
        assert len(fake.called("upload")) == 1

    lines = []
    ran = kagglecifar.run(
        preset="cpu",
        set={"epochs": 1, "val_fraction": 0.1},
        name="whole",
        submit=False,
        device="cpu",
        echo=lines.append,
    )
    assert [stage.name for stage in ran.stages] == ["fetch", "train", "predict", "submit"]
    assert [stage.skipped for stage in ran.stages] == [True, False, False, True]
    assert len(lines) == 4 and (working / "runs" / "whole" / "best.pt").is_file()
    assert "2 of 4 stages ran (train, predict)" in ran.line()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: kagglecifar.fetch(data_dirr="x"), "fetch: unknown option 'data_dirr'; did you mean data_dir?"),
        (lambda: kagglecifar.fetch(format="png"), "--format png: choose from"),
        (lambda: kagglecifar.train("mlp", epoch=3), "train: unknown option 'epoch'; did you mean epochs?"),
        (lambda: kagglecifar.train("mlp", epochs="x"), "--epochs: expected an integer, got 'x'"),
        (lambda: kagglecifar.train("mlp", device="cpu"), "no train cache here; run `kagglecifar fetch` first"),
        (lambda: kagglecifar.train(log="tensorbord", device="cpu"), "--log tensorbord: choose tensorboard"),
        (lambda: kagglecifar.predict("runs/x", tta="flp"), "--tta flp: unknown TTA mode"),
        (lambda: kagglecifar.predict("no/such/run", device="cpu"), "sampleSubmission.csv: not found"),
        (lambda: kagglecifar.evaluate("no/such/run", device="cpu"), "no/such/run"),
        (lambda: kagglecifar.submit("missing.csv", message="m"), "trainLabels.csv: not found; run `kagglecifar fetch`"),
        (lambda: kagglecifar.run(tta="shfit"), "--tta shfit: unknown TTA mode"),
        (lambda: kagglecifar.run(preset="cpu", name="../up"), "../up"),
    ],
)
def test_bad_input_is_the_commands_one_line_error(tmp_path, monkeypatch, call, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KaggleCifarError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_import_stays_light_and_names_the_api():
    code = "import sys, kagglecifar; print('torch' in sys.modules, kagglecifar.train.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "kagglecifar.api"], done.stderr
    with pytest.raises(AttributeError):
        kagglecifar.trian  # noqa: B018


def test_competition_files_are_found_under_the_input_root(tmp_path, monkeypatch):
    root = tmp_path / "input"
    monkeypatch.setenv("KAGGLECIFAR_KAGGLE_INPUT", str(root))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert kaggle_env.on_kaggle() is False and kaggle_env.competition_input("cifar-10") is None
    assert kaggle_env.default_dir("runs") == type(tmp_path)("runs")
    nested = root / "some-user" / "cifar10-copy"
    for name in kaggle_env.COMPETITION_FILES:
        nested.mkdir(parents=True, exist_ok=True)
        (nested / name).write_bytes(b"")
    (root / "cifar-10").mkdir()
    (root / "cifar-10" / "train.7z").write_bytes(b"")  # incomplete: not taken
    assert kaggle_env.on_kaggle() is True
    assert kaggle_env.competition_input("cifar-10") == nested
    for name in kaggle_env.COMPETITION_FILES:
        (root / "cifar-10" / name).write_bytes(b"")
    assert kaggle_env.competition_input("cifar-10") == root / "cifar-10"  # the competition's own first


def test_in_a_notebook_kernel_the_bars_are_live_notebook_bars(monkeypatch):
    """pytest's stderr is no terminal: bars are off, as in a log file; in a Jupyter kernel they are notebook bars."""
    import types

    from tqdm import notebook, tqdm

    from kagglecifar import console

    assert console.progress_bar(10, "epoch 1/1", "batch").disable is True
    made = []

    class NotebookBar(tqdm):  # stands in for tqdm.notebook.tqdm, which needs ipywidgets and a front end
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setattr(notebook, "tqdm", NotebookBar)
    assert console.interactive() is True
    bar = console.progress_bar(10, "epoch 1/1", "batch")
    assert isinstance(bar, NotebookBar) and bar.disable is False and made[0]["desc"] == "epoch 1/1"
    bar.close()
    assert console.progress_bar(10, "epoch 1/1", "batch", enabled=False).disable is True  # e.g. rank 1

    def no_widgets(*args, **kwargs):
        raise ImportError("IProgress not found. Please update jupyter and ipywidgets.")

    monkeypatch.setattr(notebook, "tqdm", no_widgets)
    bar = console.progress_bar(10, "predict", "img")
    assert type(bar) is tqdm and bar.disable is False  # the text bar, still live
    bar.close()
    shell.kernel = None  # a terminal IPython: not a notebook
    assert console.in_notebook() is False
