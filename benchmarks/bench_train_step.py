"""Training-step throughput of every registered model: images/s through forward + backward + SGD step.

    python benchmarks/bench_train_step.py                      # CUDA when available, else CPU
    python benchmarks/bench_train_step.py --steps 1 --device cpu --models resnet18,simplecnn

On CUDA each model runs at its default batch size (models.default_batch_size) with bf16 autocast and
channels_last, as training does. A CPU cannot hold those batches in a few minutes, so there every model
runs at CPU_BATCH images in float32 (the JSON says so). One warm-up step (allocation, cuDNN algorithm
search) is excluded from the timing. resnet50-imagenet runs with random weights (same speed, no download)
at its default image size, upsampling included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from kagglecifar import models  # noqa: E402
from kagglecifar.device import freed_memory_kept  # noqa: E402

CPU_BATCH = {"resnet50-imagenet": 4}  # every other model: CPU_BATCH_DEFAULT
CPU_BATCH_DEFAULT = 32
DEFAULT_STEPS = {"cuda": 20, "cpu": 2}


def measure(
    name: str,
    device: torch.device,
    batch: int,
    steps: int,
    *,
    width: float | None = None,
    channels_last: bool | None = None,
    bf16: bool | None = None,
    compiled: bool = False,
    warmup_steps: int = 1,
) -> dict:
    """Images/s of forward + backward + SGD step on random images; channels_last and bf16 default to "on CUDA"."""
    torch.manual_seed(0)
    options = models.model_options(name)
    kwargs = {"weights": None} if "weights" in options else {}
    kwargs.update({"width": width} if width is not None else {})
    cuda = device.type == "cuda"
    channels_last = cuda if channels_last is None else channels_last
    bf16 = cuda if bf16 is None else bf16
    model = models.create_model(name, **kwargs).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, 10, (batch,), device=device)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    # As the trainer does on a CPU: without it every eager step faults its activations in afresh, which
    # made eager look 0.4-0.5x its speed in training against compiled code (that plans its own buffers).
    with freed_memory_kept(device.type == "cpu"):
        started = time.perf_counter()
        for _ in range(warmup_steps):
            step()
        sync()
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        seconds = time.perf_counter() - started
    info = models.model_info(name, **kwargs)
    row = {
        "model": name,
        "batch_size": batch,
        "image_size": options.get("image_size", 32),
        "params": info["params"],
        "gflops_forward_per_image": round(info["flops"] / 1e9, 4),
        "steps": steps,
        "seconds": round(seconds, 3),
        "ms_per_step": round(1000 * seconds / steps, 1),
        "images_per_s": round(batch * steps / seconds, 1),
        "warmup_s": round(warmup, 2),
    }
    if cuda:
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="timed steps per model (default: 20 on CUDA, 2 on CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    names = args.models.split(",") if args.models else models.model_names()
    unknown = [name for name in names if name not in models.model_names()]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(models.model_names())}")
    steps = args.steps or DEFAULT_STEPS[args.device]
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    rows = []
    for name in names:
        batch = models.default_batch_size(name) if device.type == "cuda" else CPU_BATCH.get(name, CPU_BATCH_DEFAULT)
        rows.append(measure(name, device, batch, steps))
        print(f"{name:18} batch {batch:4}  {rows[-1]['images_per_s']:9.1f} images/s", file=sys.stderr, flush=True)

    cuda = device.type == "cuda"
    result = {
        "device": args.device,
        "precision": "bf16 autocast, channels_last" if cuda else "float32",
        "batch_note": "each model's default GPU batch size"
        if cuda
        else f"CPU batch: {CPU_BATCH_DEFAULT} images ({', '.join(f'{k}: {v}' for k, v in CPU_BATCH.items())}), "
        "smaller than the GPU default batch sizes",
        "torch_threads": torch.get_num_threads(),
        "warmup_steps": 1,
        "optimizer": "SGD nesterov momentum 0.9, weight decay 5e-4",
        "models": rows,
        "peak_rss_mb": round(common.peak_rss_mb()),
    }
    common.write_result("train_step", result, " ".join(["python benchmarks/bench_train_step.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
