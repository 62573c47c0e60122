"""train --processes N: the command launches its own DDP workers (elastic launcher, spawn), N gloo processes on
the CPU; a stop reaches every worker and leaves nothing running."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from test_train import make_cache

import kagglecifar
from kagglecifar.checkpoint import load_checkpoint
from kagglecifar.recipes import make_config
from kagglecifar.training import launch


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("data"))


def spawned_workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def test_two_processes_from_the_python_api_train_in_sync(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = kagglecifar.train(
        "mlp",
        preset="cpu",
        epochs=2,
        batch_size=32,
        lr=0.05,
        workers=0,
        device="cpu",
        processes=2,
        data_dir=data_dir,
        runs_dir=tmp_path,
        name="two",
    )
    # Each rank compares its weights with the other's at the end (runtime.check_in_sync) and fails otherwise.
    assert result.stopped_reason == "completed" and result.epochs_run == 2 and result.best_val_accuracy is not None
    assert result.run_dir == tmp_path / "two" and [p.name for p in tmp_path.iterdir()] == ["two"]
    assert json.loads((result.run_dir / "run.json").read_text())["environment"]["world_size"] == 2
    last = load_checkpoint(result.run_dir / "last.pt")
    assert last["train_state"]["world_size"] == 2
    assert last["train_state"]["progress"]["step"] == 10  # 178 images, 16 per rank per step: 5 steps an epoch
    assert spawned_workers() == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the launcher's handlers are gone
    assert "TORCHELASTIC_SIGNALS_TO_HANDLE" not in os.environ


def test_ctrl_c_stops_every_worker_and_leaves_no_process(data_dir, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the command stops, each worker stops at a step
    boundary, and nothing it started is left running."""
    command = [sys.executable, "-m", "kagglecifar", "train", "mlp", "--preset", "cpu", "--epochs", "500"]
    command += ["--batch-size", "32", "--workers", "0", "--device", "cpu", "--processes", "2", "--name", "stop"]
    command += ["--data-dir", str(data_dir), "--runs-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "stop" / "metrics.csv").is_file():  # an epoch done: every worker is training
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no epoch finished in 180 s"
            time.sleep(0.5)
        started = psutil.Process(process.pid).children(recursive=True)
        workers = [p for p in started if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err[-3000:]
    summary = out.decode().strip().splitlines()[-1]
    assert summary.startswith("train: ") and f"interrupted: {tmp_path / 'stop'}  (continue with --resume" in summary
    assert err.decode().count("stopping after this step and saving last.pt") == 2  # each worker stopped itself
    assert "leaked semaphore" not in err.decode()  # the stopped workers left nothing to the resource tracker
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == []
    last = load_checkpoint(tmp_path / "stop" / "last.pt")
    assert last["train_state"]["world_size"] == 2 and last["train_state"]["progress"]["step"] >= 5


def test_default_is_one_process_per_gpu_when_there_are_several(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launch.default_processes("auto") == 2 and launch.default_processes("cuda") == 2
    assert launch.default_processes("cpu") == 1 and launch.default_processes("cuda:1") == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert launch.default_processes("auto") == 1


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(processes=3, batch_size=32), "--batch-size 32: must divide evenly over 3 processes"),
        (dict(processes=0), "--processes 0: must be at least 1"),
    ],
)
def test_bad_process_counts_are_one_line(data_dir, tmp_path, options, message):
    with pytest.raises(kagglecifar.KaggleCifarError) as error:
        kagglecifar.train("mlp", device="cpu", data_dir=data_dir, runs_dir=tmp_path, **options)
    assert str(error.value) == message
    assert list(tmp_path.iterdir()) == []


def test_a_worker_started_for_a_cuda_index_is_refused(tmp_path):
    config = make_config("mlp", "cpu", device="cpu", runs_dir=str(tmp_path))
    config.session.device = "cuda:0"
    with pytest.raises(kagglecifar.KaggleCifarError, match="every process would use that one GPU"):
        launch.check_processes(config, 2)
