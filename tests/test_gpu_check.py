"""benchmarks/gpu_check.py has never had a GPU to run on; its rehearsal on the CPU keeps the script working."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kagglecifar.cache import write_split
from kagglecifar.competition import CIFAR10_CLASSES as CLASSES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_acceptance_script_runs_end_to_end_as_a_cpu_rehearsal(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    write_split(
        data,
        "train",
        rng.integers(0, 256, (60, 32, 32, 3), np.uint8),
        np.arange(1, 61),
        CLASSES,
        labels=np.arange(60) % 10,
    )
    test_ids = np.arange(1, 9)
    write_split(data, "test", rng.integers(0, 256, (8, 32, 32, 3), np.uint8), test_ids, CLASSES)
    (data / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in test_ids))
    out = tmp_path / "check.json"

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--rehearse",
            "--data-dir",
            str(data),
            "--presets",
            "fast,gpu",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["rehearsal"] is True
    assert {"bf16_channels_last", "batched_standard", "batched_cutout", "batched_strong"} <= set(report["checks"])
    assert all(check["ok"] for check in report["checks"].values()), report["checks"]
    assert report["checks"]["batched_standard"]["mismatched_pixels"] == 0
    assert "Affine" in report["checks"]["batched_strong"]["not_batched"]
    assert list(report["presets"]) == ["fast", "gpu"]
    for preset in report["presets"].values():
        (run,) = preset["runs"]
        assert set(run["val_accuracy"]) == {"none", "flip", "translate"}
        assert all(0 <= value <= 1 for value in run["val_accuracy"].values())
        assert run["train_seconds"] > 0
    assert list(report["predict_seconds"]) == ["none", "flip", "translate", "shift"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script measures")
def test_without_cuda_it_refuses_and_points_at_the_rehearsal(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1
    assert "no CUDA device here" in done.stderr and "--rehearse" in done.stderr
