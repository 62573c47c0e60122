"""Prediction backends (inference/backends.py): which one runs, the missing-extra error, ONNX Runtime's agreement
with PyTorch (skipped when the optional extra is not installed)."""

import importlib.util

import numpy as np
import pytest
import torch
from test_predict import CLASSES, images, make_run

from kagglecifar.cache import write_split
from kagglecifar.errors import KaggleCifarError
from kagglecifar.inference import backends
from kagglecifar.inference.predict import predict, predict_images
from kagglecifar.models import create_model

CPU = torch.device("cpu")


def without_onnxruntime(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))


def test_auto_is_pytorch_even_where_onnx_runtime_is_installed(monkeypatch):
    monkeypatch.setattr(backends, "onnx_installed", lambda: True)
    for bf16 in ("0", "1"):  # a CPU without bf16 arithmetic, where auto once took ONNX Runtime, and one with it
        monkeypatch.setenv("KAGGLECIFAR_CPU_BF16", bf16)
        assert backends.resolve_backend("auto", CPU) == "eager"
        assert backends.resolve_backend("onnx", CPU) == "onnx"
    assert backends.resolve_backend("auto", torch.device("cuda")) == "eager"
    assert backends.resolve_backend("eager", CPU) == "eager"
    with pytest.raises(KaggleCifarError, match=r"^--backend tensorrt: choose one of auto, eager, onnx$"):
        backends.resolve_backend("tensorrt", CPU)


def test_asking_for_onnx_without_the_extra_is_one_clear_line(monkeypatch, tmp_path, run_cli):
    without_onnxruntime(monkeypatch)
    assert not backends.onnx_installed()
    with pytest.raises(
        KaggleCifarError, match=r"^--backend onnx: onnxruntime not installed; pip install 'kagglecifar\[onnx\]'$"
    ):
        backends.resolve_backend("onnx", CPU)
    with pytest.raises(KaggleCifarError, match="runs on the CPU, not cuda; add --device cpu"):
        backends.resolve_backend("onnx", torch.device("cuda"))

    ids = np.arange(1, 5)
    write_split(tmp_path / "data", "test", images(4), ids, CLASSES)
    (tmp_path / "data" / "sampleSubmission.csv").write_text("id,label\n" + "".join(f"{i},cat\n" for i in ids))
    run, _ = make_run(tmp_path / "run")
    code, _, err = run_cli(
        "predict", run, "--data-dir", tmp_path / "data", "--out", tmp_path / "s.csv", "--backend", "onnx"
    )
    assert code == 1 and err.strip() == (
        "kagglecifar: error: --backend onnx: onnxruntime not installed; pip install 'kagglecifar[onnx]'"
    )
    assert not (tmp_path / "s.csv").exists()
    code, out, err = run_cli("predict", run, "--data-dir", tmp_path / "data", "--out", tmp_path / "s.csv")
    assert code == 0 and "images/s (eager)" in out, err  # auto: PyTorch


def test_onnxruntime_agrees_with_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    net = create_model("airbench94", num_classes=10, width=0.125).eval()
    batch = images(24, seed=4)
    eager = predict_images([(net, 1.0)], batch, ["none", "flip"], 10, batch_size=10)
    onnx = predict_images([(backends.OnnxModel(net), 1.0)], batch, ["none", "flip"], 10, batch_size=10)
    for mode in ("none", "flip"):
        np.testing.assert_allclose(onnx[mode], eager[mode], atol=1e-5)
        assert (onnx[mode].argmax(1) == eager[mode].argmax(1)).all()

    ids = np.arange(1, 25)
    write_split(tmp_path / "data", "test", batch, ids, CLASSES)
    run, _ = make_run(tmp_path / "run")
    with_onnx = predict([run], tmp_path / "data", tta="flip", backend="onnx", tta_fraction=1)
    with_eager = predict([run], tmp_path / "data", tta="flip", backend="eager", tta_fraction=1)
    assert with_onnx.backend == "onnx" and with_eager.backend == "eager"
    np.testing.assert_allclose(with_onnx.probs, with_eager.probs, atol=1e-5)
