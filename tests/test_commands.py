"""The commands as users type them: `predict --tta` (alone, with a mode, with none), no run argument (the newest
finished run), `evaluate` the same, `submit` without -m; the console entry point's exit."""

import gc
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from test_predict import CLASSES, images, make_run

from kagglecifar import cli, rundir
from kagglecifar.cache import write_split
from kagglecifar.cli.app import fill_optional_values


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["predict", "--tta"], ["predict", "--tta", "flip"]),
        (["predict", "--tta", "shift"], ["predict", "--tta", "shift"]),
        (["predict", "--tta", "--batch-size", "64"], ["predict", "--tta", "flip", "--batch-size", "64"]),
        (["predict", "runs/x", "--tta"], ["predict", "runs/x", "--tta", "flip"]),
        (["predict", "--tta=none"], ["predict", "--tta=none"]),
        (["predict", "--tta", "shfit"], ["predict", "--tta", "shfit"]),  # a typo stays a (refused) mode
        (["predict", "--", "--tta"], ["predict", "--", "--tta"]),
        (["evaluate", "--tta", "--tta", "shift"], ["evaluate", "--tta", "flip", "--tta", "shift"]),
    ],
)
def test_tta_without_a_mode_reads_as_the_default_mode(argv, expected):
    assert fill_optional_values(argv) == expected


def test_tta_before_an_existing_run_folder_is_the_default_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert fill_optional_values(["predict", "--tta", "runs/x"]) == ["predict", "--tta", "flip", "runs/x"]
    (tmp_path / "shift").mkdir()  # a folder named like a mode: the mode wins
    assert fill_optional_values(["predict", "--tta", "shift"]) == ["predict", "--tta", "shift"]


def finished_run(runs_dir, name, seed=0, reason="completed", val_ids=()):
    """A run folder as `train` leaves it: run.json, best.pt (a tiny mlp), result.json."""
    run = rundir.create_run(runs_dir, name, "mlp", {})
    make_run(run, seed=seed, val_ids=val_ids)
    rundir.write_result(run, {"stopped_reason": reason, "epochs_run": 1})
    return run


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A folder with data/ (test cache, sampleSubmission.csv) and runs/ holding an older and a newer finished run,
    a newest one that was stopped to resume, and a diverged one; the current directory."""
    ids = np.arange(1, 13)
    write_split(tmp_path / "data", "test", images(12), ids, CLASSES)
    (tmp_path / "data" / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in ids))
    runs = tmp_path / "runs"
    older, newer = finished_run(runs, "older", seed=1), finished_run(runs, "newer", seed=2)
    finished_run(runs, "stopped", reason="time_budget")
    finished_run(runs, "diverged", reason="diverged")
    now = time.time()
    for age, run in enumerate(["stopped", "diverged", "newer", "older"]):
        os.utime(runs / run / "result.json", (now - age * 60, now - age * 60))
    monkeypatch.chdir(tmp_path)
    return tmp_path, older, newer


def test_newest_finished_run_skips_stopped_and_diverged_runs(place):
    tmp_path, older, newer = place
    assert rundir.newest_finished_run(tmp_path / "runs") == newer
    assert rundir.newest_finished_run(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    "args,mode,views",
    [
        (["--tta"], "flip", 2),
        (["--tta", "shift"], "shift", 10),
        ([], "flip", 2),
        (["--no-tta"], "none", 1),
        (["--tta", "--batch-size", "4"], "flip", 2),
    ],
)
def test_bare_predict_takes_the_newest_finished_run_and_says_so(place, run_cli, args, mode, views):
    tmp_path, _, newer = place
    code, out, err = run_cli("predict", *args)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"predict: using {newer.relative_to(tmp_path)}, the newest finished run in runs"
    assert lines[-1].startswith(f"predict: 12 rows, TTA {mode} ({views} view")
    table = pd.read_csv(tmp_path / "submissions" / f"newer-{mode}.csv")
    assert table["id"].tolist() == list(range(1, 13))


def test_predict_given_runs_and_a_bare_tta_in_any_order(place, run_cli):
    tmp_path, older, _ = place
    for args in (["--tta", "runs/older"], ["runs/older", "--tta"]):
        code, out, err = run_cli("predict", *args, "--force")
        assert code == 0, err
        assert "newest" not in out and (tmp_path / "submissions" / "older-flip.csv").is_file()
    code, out, err = run_cli("predict", "runs/older", "--tta", "translate", "--batch-size", "5")
    assert code == 0 and "TTA translate (6 views on the 4 least confident of 12 images" in out, err
    code, _, err = run_cli("predict", "--tta", "shfit")
    assert code == 1 and "--tta shfit: unknown TTA mode" in err and len(err.strip().splitlines()) == 1


def test_a_diverged_run_predicted_says_so(place, run_cli):
    code, out, err = run_cli("predict", "runs/diverged", "--tta")
    assert code == 0, err
    assert out.splitlines()[0].startswith("predict: runs/diverged: training diverged at epoch")


def test_bare_predict_and_evaluate_without_a_finished_run_say_to_train_first(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("predict", "evaluate"):
        code, out, err = run_cli(command, "--tta")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"{command}: no finished training run in runs; train one first (kagglecifar train)" in err


def test_bare_evaluate_takes_the_newest_finished_run(tmp_path, run_cli, monkeypatch):
    pixels = images(20, seed=3)
    train_ids = np.arange(1, 21)
    write_split(tmp_path / "data", "train", pixels, train_ids, CLASSES, labels=np.arange(20) % 10)
    finished_run(tmp_path / "runs", "old", val_ids=[2, 4, 6, 8])
    run = finished_run(tmp_path / "runs", "new", val_ids=[2, 4, 6, 8])
    past = time.time() - 600
    os.utime(tmp_path / "runs" / "old" / "result.json", (past, past))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("evaluate", "--tta")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "evaluate: using runs/new, the newest finished run in runs"
    assert lines[-1].startswith("evaluate: 4 validation images, accuracy none ") and "flip" in lines[-1]
    assert "shift" not in lines[-1]  # --tta alone: flip only, not every mode
    code, out, err = run_cli("evaluate", "--no-tta")
    assert code == 0 and "flip" not in out.strip().splitlines()[-1], err
    # a diverged run shows as diverged
    rundir.write_result(run, {"stopped_reason": "diverged", "epochs_run": 1, "diverged": {"epoch": 2, "step": 3}})
    code, out, err = run_cli("evaluate", "runs/new", "--tta", "flip")
    assert code == 0, err
    assert out.splitlines()[0].startswith("evaluate: runs/new: training diverged at epoch 2, step 3")
    assert torch.load(run / "best.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["predict", "--batch-size", "0"], 2)])
def test_the_console_entry_point_exempts_every_object_from_collection_as_the_command_ends(monkeypatch, argv, code):
    """argv None: the process's own command line, which ends with the command (its exit then skips the last
    garbage collections), whether the command succeeded or not."""
    monkeypatch.setattr(sys, "argv", ["kagglecifar", *argv])
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.main()
        assert stopped.value.code == code
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_an_explicit_argv_leaves_garbage_collection_alone(run_cli):
    """A caller that lives on after the command (the tests, a notebook) keeps collecting as before."""
    code, out, err = run_cli("--help")
    assert code == 0 and "predict" in out, err
    code, _, err = run_cli("predict", "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    assert gc.get_freeze_count() == 0
