"""The cpu preset's training step on this CPU in each variant the trainer could use, side by side in one run:

    nchw            float32, the default memory format
    channels_last   float32, channels_last (what the cpu preset uses)
    bf16            channels_last + bf16 autocast (CPUs with avx512_bf16/AMX may gain)
    compiled        channels_last + torch.compile (its warm-up reported apart, not in the rate)

    python benchmarks/bench_cpu_step.py                          # airbench94 x0.25 and airbench-cpu, batch 512
    python benchmarks/bench_cpu_step.py --models airbench94:0.25 --steps 4

bench_train_step.measure: forward + backward + Nesterov SGD step on random images at the preset's batch
size, all torch threads; each variant gets two untimed warm-up steps. Ratios are to channels_last, the
preset's choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
import bench_train_step  # noqa: E402
import common  # noqa: E402

VARIANTS = ("nchw", "channels_last", "bf16", "compiled")


def measure(name: str, width: float, variant: str, batch: int, steps: int) -> dict:
    row = bench_train_step.measure(
        name,
        torch.device("cpu"),
        batch,
        steps,
        width=width,
        channels_last=variant != "nchw",
        bf16=variant == "bf16",
        compiled=variant == "compiled",
        warmup_steps=2,
    )
    return {
        "model": name,
        "width": width,
        "variant": variant,
        "warmup_s": row["warmup_s"],
        "images_per_s": round(row["images_per_s"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="airbench94:0.25,airbench-cpu:1", help="NAME:WIDTH,... (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    args = p.parse_args()
    rows = []
    for spec in args.models.split(","):
        name, width = spec.split(":")
        by_variant = {}
        for variant in VARIANTS:
            row = measure(name, float(width), variant, args.batch_size, args.steps)
            by_variant[variant] = row
            print(f"{name:14} x{width:5} {variant:14} {row['images_per_s']:6} images/s", file=sys.stderr, flush=True)
        for row in by_variant.values():
            row["ratio_to_channels_last"] = round(row["images_per_s"] / by_variant["channels_last"]["images_per_s"], 2)
        rows += by_variant.values()
    common.write_result(
        "cpu_step_variants",
        {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "torch_threads": torch.get_num_threads(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "rows": rows,
        },
        command=" ".join(["python benchmarks/bench_cpu_step.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
