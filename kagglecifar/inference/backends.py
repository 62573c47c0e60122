"""What runs the net at prediction time: PyTorch itself (`eager`) or ONNX Runtime (`onnx`, CPU only, the optional extra
`pip install 'kagglecifar[onnx]'`: onnxruntime, and onnx for the export). `auto`, the default, is PyTorch: in bf16
on a CPU with bf16 arithmetic, 1.6x the images a second of ONNX Runtime's fp32 on a 2-core EPYC; in fp32 elsewhere,
where since prediction keeps its freed memory (device.freed_memory_kept) ONNX Runtime measured no faster: the same
images a second on 2 EPYC cores of two generations, and the whole `predict` over 300,000 ids in fp32 took 36.5 s
with PyTorch against 47.6 s (53.2 s against 67.2 s with every view on every image), the same CSV
(benchmarks/results/tta_gate_full_fp32_*.json). Before that change ONNX Runtime ran 3.4-5x PyTorch's fp32 on a Xeon,
which page-faulted every batch. torch.compile is not offered: on two CPU cores its first compilation took minutes
(benchmarks/README.md), longer than predicting the competition's whole test set. Nor is OpenVINO: beside them it ran
1.17x PyTorch's bf16 and 1.14x ONNX Runtime's fp32 after a 1.2-1.4 s conversion, about 3 s of a 35 s `predict`
(benchmarks/results/predict_backends_openvino.json). Nor int8: ONNX Runtime's static quantisation ran at 0.97x its
fp32 there, each GELU's erf between the int8 convolutions in float (benchmarks/results/predict_backends_int8.json).

The ONNX model is exported from the loaded checkpoint in memory each time (about a second), with a variable
batch size; it returns the same logits as the PyTorch model up to float rounding.
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from kagglecifar.errors import KaggleCifarError

BACKENDS = ("auto", "eager", "onnx")
ONNX_PACKAGES = ("onnxruntime", "onnx")
ONNX_EXTRA = "pip install 'kagglecifar[onnx]'"
ONNX_OPSET = 17


def onnx_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def resolve_backend(backend: str, device: torch.device) -> str:
    """`eager` or `onnx` for what was asked (`auto`: eager); one line when impossible."""
    if backend not in BACKENDS:
        raise KaggleCifarError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "eager"
    if backend == "onnx":
        if device.type != "cpu":
            raise KaggleCifarError(f"--backend onnx: runs on the CPU, not {device.type}; add --device cpu")
        if not onnx_installed():
            missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
            raise KaggleCifarError(f"--backend onnx: {' and '.join(missing)} not installed; {ONNX_EXTRA}")
    return backend


def export_onnx(model: nn.Module, image_shape: tuple[int, int, int] = (3, 32, 32)) -> bytes:
    """The model as an ONNX graph (float NCHW `images` in, `logits` out, any batch size); one line if it cannot be."""
    exported = io.BytesIO()
    example = torch.zeros(2, *image_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        try:
            torch.onnx.export(
                model.eval(),
                (example,),
                exported,  # type: ignore[arg-type]  # a file object works, as documented
                dynamo=False,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        except Exception as exc:  # an operator without an ONNX form, an exporter change: say which
            raise KaggleCifarError(
                f"--backend onnx: could not export {type(model).__name__} to ONNX ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); use --backend eager"
            ) from None
    return exported.getvalue()


class OnnxModel:
    """An ONNX graph (export_onnx's, or a module exported here) run by ONNX Runtime on the CPU, called like the
    module: a float NCHW batch (any memory format) in, logits out, as torch tensors."""

    def __init__(self, model: nn.Module | bytes, image_shape: tuple[int, int, int] = (3, 32, 32)):
        import onnxruntime

        graph = model if isinstance(model, bytes) else export_onnx(model, image_shape)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what PyTorch was told to use
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"images": batch})[0])


def prepare(model: nn.Module, backend: str):
    """The callable predict_images runs for a loaded model and a resolved backend."""
    return OnnxModel(model) if backend == "onnx" else model
