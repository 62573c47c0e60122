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
    out = tmp_path / "check"

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--rehearse",
            "--data-dir",
            str(data),
            "--runs",
            "fast=3,nosuchpreset,gpu",  # a rehearsal trains each preset once; one of them fails
            "--mission",
            "120",
            "--fp16",
            "--test-images",
            "30",  # predict is timed over 30 train images made a test split
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "failed steps: train nosuchpreset seed 0" in done.stderr

    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert report["rehearsal"] is True
    assert steps["plan"]["ok"] and steps["plan"]["plan"]["precision"] == "fp32"
    checks = steps["device_paths"]["checks"]
    assert {"channels_last", "batched_standard", "batched_cutout", "batched_strong"} <= set(checks)
    assert checks["batched_standard"]["mismatched_pixels"] == 0
    assert "Affine" in checks["batched_strong"]["not_batched"]
    assert list(steps) == [
        "plan",
        "device_paths",
        "training_numerics",
        "mission",
        "train fast seed 0",
        "fp16 path",
        "train nosuchpreset seed 0",
        "train gpu seed 0",
        "precision",
        "predict",
    ]
    probes = steps["training_numerics"]["probes"]
    assert probes and all(p["ok"] and len(p["losses"]) == 3 for p in probes)
    mission = steps["mission"]
    assert mission["ok"] and mission["train_command"] == "kagglecifar train resnet18"
    assert mission["predict_command"] == "kagglecifar predict --tta" and mission["epochs_run"] == 1
    assert steps["fp16 path"]["ok"] and steps["fp16 path"]["stopped_reason"] == "completed"
    failed = steps["train nosuchpreset seed 0"]
    assert not failed["ok"] and "unknown preset" in failed["error"]  # recorded, and the later runs still ran
    for name in ("train fast seed 0", "train gpu seed 0"):
        run = steps[name]
        assert run["ok"] and set(run["val_accuracy"]) == {"none", "flip", "translate"}
        assert all(0 <= value <= 1 for value in run["val_accuracy"].values())
        assert run["train_seconds"] > 0 and run["plan_line"].startswith("device cpu (CPU): fp32")
    assert set(report["summary"]) == {"fast", "gpu"}
    assert steps["precision"]["label_agreement"] == 1.0  # fp32 both ways on a CPU
    predict = steps["predict"]
    assert list(predict["predict_seconds"]) == ["none", "flip", "flip-every", "translate", "translate-every",
                                                "shift-every"]  # fmt: skip
    assert predict["test_images"] == 30
    assert (out / "logs" / "train-fast-seed0.log").is_file()


def test_a_failing_step_keeps_what_earlier_steps_wrote(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    path = tmp_path / "gpu_check.json"
    report = gpu_check.Report(path, {"rehearsal": True})
    report.step("first", lambda: {"value": 1})
    assert json.loads(path.read_text())["steps"]["first"] == {"ok": True, "seconds": 0.0, "value": 1}

    def broken():
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    assert report.step("second", broken) is None
    report.step("third", lambda: {"value": 3})
    steps = json.loads(path.read_text())["steps"]
    assert steps["first"]["value"] == 1 and steps["third"]["value"] == 3
    assert not steps["second"]["ok"] and "no kernel image" in steps["second"]["error"]
    assert report.failed() == ["second"]


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
