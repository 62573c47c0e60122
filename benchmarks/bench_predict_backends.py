"""CPU inference side by side: PyTorch eager (as predict runs it, and with channels_last weights, at several
batch sizes), ONNX Runtime (the optional extra), and optionally torch.compile (Inductor, freezing on) and
OpenVINO (not a kagglecifar extra: `pip install openvino` to measure it).

    python benchmarks/bench_predict_backends.py --checkpoint runs/airbench94-cpu --data-dir data --limit 20000
    python benchmarks/bench_predict_backends.py ... --compile     # adds torch.compile (minutes to compile here)
    python benchmarks/bench_predict_backends.py ... --openvino    # adds OpenVINO in bf16 (where the CPU has it) and f32
    python benchmarks/bench_predict_backends.py ... --int8 --replica bench-data/held-out   # adds int8, scores all

Each variant predicts the same first --limit test images of the cache without TTA through predict_images
(uint8 memory map -> float -> net -> softmax), in turns, --repeats times; the median counts. Setup (ONNX export,
compilation, quantisation) is timed apart. Agreement: the share of images whose predicted class equals eager's,
and the largest difference of a probability.

--int8 adds ONNX Runtime's static int8 quantisation (per-channel int8 weights, uint8 activations whose ranges
come from 1,024 training images of the same cache), once with every layer quantised and once with the whitening
stem and the head left in float. --replica (the held-out replica whose test set the cache holds) also scores
every variant on the replica's hidden labels: quantisation's accuracy cost, measured on real images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def openvino_model(model):
    import openvino
    import torch

    converted = openvino.convert_model(model.eval(), example_input=torch.zeros(2, 3, 32, 32))
    converted.reshape([-1, 3, 32, 32])  # any batch size
    return converted


def int8_graph(graph: bytes, calibration, float_stem_and_head: bool) -> bytes:
    """ONNX Runtime's static quantisation of an exported graph; calibration: uint8 NHWC training images."""
    import tempfile

    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter([{"images": np.ascontiguousarray(b.transpose(0, 3, 1, 2), np.float32) / 255}
                    for b in np.array_split(calibration, 8)])  # fmt: skip

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    with tempfile.TemporaryDirectory() as scratch:
        plain, prepared, quantised = (Path(scratch) / n for n in ("plain.onnx", "prepared.onnx", "int8.onnx"))
        plain.write_bytes(graph)
        quant_pre_process(str(plain), str(prepared))
        nodes = onnx.load(str(prepared)).graph.node
        convs = [n.name for n in nodes if n.op_type == "Conv"]
        heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
        quantize_static(
            str(prepared), str(quantised), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=convs[:1] + heads if float_stem_and_head else [],
        )  # fmt: skip
        return quantised.read_bytes()


class OpenVinoModel:
    """The converted model compiled for the CPU in one precision, called like the module (NCHW in, logits out)."""

    def __init__(self, converted, precision: str):
        import openvino
        import torch

        options = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(torch.get_num_threads())}
        self.request = openvino.Core().compile_model(converted, "CPU", options).create_infer_request()

    def __call__(self, x):
        import numpy as np
        import torch

        return torch.from_numpy(self.request.infer([np.ascontiguousarray(x.numpy(), np.float32)])[0].copy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="run folder or checkpoint (default: an untrained cpu-preset net)")
    p.add_argument("--data-dir", type=Path, required=True, help="a data folder with a test cache")
    p.add_argument("--limit", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="256,512,1024")
    p.add_argument("--compile", action="store_true", help="also torch.compile (Inductor, freezing)")
    p.add_argument("--openvino", action="store_true", help="also OpenVINO (pip install openvino), bf16 and f32")
    p.add_argument("--int8", action="store_true", help="also ONNX Runtime's static int8 quantisation")
    p.add_argument("--replica", type=Path, help="the held-out replica of the cache: score on its hidden labels")
    p.add_argument("--result", default="predict_backends", help="results/NAME.json (default: %(default)s)")
    args = p.parse_args()
    if args.replica and not args.checkpoint:
        p.error("--replica scores a trained net: give --checkpoint")
    import os

    load_before = os.getloadavg()

    import numpy as np
    import torch

    from kagglecifar.cache import load_split
    from kagglecifar.checkpoint import load_model
    from kagglecifar.inference.backends import OnnxModel, export_onnx
    from kagglecifar.inference.predict import predict_images
    from kagglecifar.models import create_model

    cpu = torch.device("cpu")
    if args.checkpoint:
        model, ckpt = load_model(args.checkpoint, cpu)
        classes, name = len(ckpt["classes"]), f"{ckpt['model']} {ckpt.get('model_kwargs', {})}"
    else:
        torch.manual_seed(0)
        model, classes, name = create_model("airbench94", num_classes=10, width=0.25).eval(), 10, "airbench94 x0.25"
    test = load_split(args.data_dir, "test")
    images = np.asarray(test.images[: args.limit])
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    setup = {}
    variants = {f"eager, batch {b}": (model, b) for b in batch_sizes}
    last = torch.nn.Module.to(__import__("copy").deepcopy(model), memory_format=torch.channels_last)
    variants.update({f"eager channels_last weights, batch {b}": (last, b) for b in batch_sizes})
    started = time.perf_counter()
    graph = export_onnx(model)
    onnx = OnnxModel(graph)
    setup["onnx export + session"] = round(time.perf_counter() - started, 2)
    variants.update({f"onnxruntime, batch {b}": (onnx, b) for b in batch_sizes})
    if args.int8:
        calibration = np.asarray(load_split(args.data_dir, "train").images[:1024])
        for name, float_ends in (("every layer", False), ("stem and head in float", True)):
            started = time.perf_counter()
            quantised = OnnxModel(int8_graph(graph, calibration, float_ends))
            setup[f"onnxruntime int8 ({name}): quantise + session"] = round(time.perf_counter() - started, 2)
            variants.update({f"onnxruntime int8 ({name}), batch {b}": (quantised, b) for b in batch_sizes})
    if args.compile:
        import torch._inductor.config as inductor

        inductor.freezing = True
        compiled = torch.compile(last, dynamic=False)
        started = time.perf_counter()
        with torch.inference_mode():
            for b in sorted({256, len(images) % 256 or 256}):  # the batch shapes predict will meet
                compiled(torch.zeros(b, 3, 32, 32).contiguous(memory_format=torch.channels_last))
        setup["torch.compile (Inductor, freezing), first calls"] = round(time.perf_counter() - started, 2)
        variants["torch.compile, batch 256"] = (compiled, 256)

    if args.openvino:
        started = time.perf_counter()
        converted = openvino_model(model)
        setup["openvino convert"] = round(time.perf_counter() - started, 2)
        for precision in ("bf16", "f32"):
            variants.update(
                {f"openvino {precision}, batch {b}": (OpenVinoModel(converted, precision), b) for b in batch_sizes}
            )

    seconds = {key: [] for key in variants}
    probs = {}
    predict_images([(model, 1.0)], images[:512], ["none"], classes, 256, cpu, progress=False)  # warm-up
    for _ in range(args.repeats):
        for key, (net, batch) in variants.items():
            started = time.perf_counter()
            probs[key] = predict_images([(net, 1.0)], images, ["none"], classes, batch, cpu, progress=False)["none"]
            seconds[key].append(round(time.perf_counter() - started, 2))
    baseline = f"eager, batch {256 if 256 in batch_sizes else batch_sizes[0]}"
    reference = probs[baseline]
    result = {
        key: {
            "seconds": times,
            "images_per_s": round(len(images) / statistics.median(times), 1),
            "speed_vs_eager_256": round(statistics.median(seconds[baseline]) / statistics.median(times), 3),
            "argmax_agreement": round(float((probs[key].argmax(1) == reference.argmax(1)).mean()), 6),
            "max_prob_difference": float(np.abs(probs[key] - reference).max()),
        }
        for key, times in seconds.items()
    }
    if args.replica:  # every variant at its largest batch size on the real images among the junk
        from bench_gate_full import hidden_key, hidden_rows

        rows, truth = hidden_rows(test.ids, hidden_key(args.replica), list(ckpt["classes"]))
        for key_name, (net, batch) in variants.items():
            if batch == max(batch_sizes):
                scored = predict_images([(net, 1.0)], test.images[rows], ["none"], classes, batch, cpu, progress=False)
                result[key_name]["hidden_key_accuracy"] = round(float((scored["none"].argmax(1) == truth).mean()), 5)
    common.write_result(
        args.result,
        {
            "model": name,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "images": len(images),
            "hidden_labels": str(args.replica) if args.replica else None,
            "threads": torch.get_num_threads(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "openvino": __import__("openvino").__version__ if args.openvino else None,
            "int8": "onnxruntime.quantization.quantize_static, QOperator, per-channel, 1,024 calibration images"
            if args.int8
            else None,
            "environment": {k: v for k, v in os.environ.items() if k.startswith("KAGGLECIFAR_")},
            "setup_seconds": setup,
            "variants": result,
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "note": "median of the repeats; the variants ran in turns on the same machine",
        },
        " ".join(["python", "benchmarks/bench_predict_backends.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
