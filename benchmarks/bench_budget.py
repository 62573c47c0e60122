"""The `cpu` preset against the ones it replaced, side by side in one run, each in a fresh process:

    today    simplecnn, 6 epochs, batch 128, one-cycle SGD lr 0.05, standard augmentation by albumentations
             on CPU workers, NCHW (the cpu preset before issue 11)
    ours     the cpu preset: airbench94 at width 0.25, 12 epochs, batch 512, triangle schedule, lookahead,
             batched augmentation on the training device, channels_last
    tuned    the cpu preset with the best trial of benchmarks/bench_tune.py (results/tune_cpu.json: lr 1.05,
             momentum 0.865, weight decay 0.00046, label smoothing 0.07), checked with seeds and TTA and
             not taken (results/accuracy_in_budget_tune_check.json, where it is called "ours" and the
             preset "untuned")

    python benchmarks/bench_budget.py                        # the full replica's train cache, 300 s each
    python benchmarks/bench_budget.py --data-dir DATA --budget 300 --seeds 3
    python benchmarks/bench_budget.py --data-dir DATA --seeds 3 --sides ours,tuned \
        --result accuracy_in_budget_tune_check

Each run gets --time-budget BUDGET (a run that finishes earlier just finishes). Reported per run: validation
accuracy without TTA and with flip and translate TTA (kagglecifar.inference.evaluate on best.pt), epochs done,
training seconds (validation excluded), images/s, wall time, peak memory, and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_loader import train_cache  # noqa: E402

TODAY = dict(
    model="simplecnn",
    epochs=6,
    batch_size=128,
    lr=0.05,
    momentum=0.9,
    schedule="onecycle",
    warmup_epochs=0.5,
    weight_decay=5e-4,
    label_smoothing=0.1,
    lookahead=False,
    augment="standard",
    alternate_flip=False,
    batched_augment=False,
    channels_last=False,
)


TUNED = dict(lr=1.05, momentum=0.865, weight_decay=0.00046, label_smoothing=0.07)
SIDES = {"today": TODAY, "ours": {}, "tuned": TUNED}


def child(side: str, data_dir: Path, budget: float, seed: int) -> None:
    """One training run and its evaluation; prints the result as the last line of JSON."""
    from kagglecifar.inference.evaluate import evaluate
    from kagglecifar.recipes import make_config
    from kagglecifar.rundir import read_metrics
    from kagglecifar.training.train import train

    options = SIDES[side]
    with tempfile.TemporaryDirectory() as runs:
        config = make_config(
            preset="cpu",
            data_dir=data_dir,
            runs_dir=runs,
            time_budget=budget,
            device="cpu",
            seed=seed,
            workers=0,
            **options,
        )
        result = train(config)
        metrics = read_metrics(result.run_dir)
        report = evaluate(result.run_dir, data_dir, ("flip", "translate"), device="cpu", progress=False)
        train_seconds = sum(row["seconds"] for row in metrics)
        print(
            json.dumps(
                {
                    "side": side,
                    "seed": seed,
                    "model": config.recipe.model,
                    "width": config.recipe.width,
                    "epochs_completed": result.epochs_run,
                    "epochs_planned": config.recipe.epochs,
                    "stopped": result.stopped_reason,
                    "train_seconds": round(train_seconds, 1),
                    "train_images_per_s": round(statistics.mean(row["images_per_s"] for row in metrics))
                    if metrics
                    else 0,
                    "val_accuracy": {mode: round(acc, 4) for mode, acc in report.overall.items()},
                    "wall_s": round(result.seconds, 1),
                    "load_average": os.getloadavg(),
                }
            )
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="a data folder with a train cache (default: built from the replica)")
    p.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds of training per run")
    p.add_argument("--seeds", type=int, default=1, help="runs per side")
    p.add_argument("--sides", default="today,ours", help=f"some of {', '.join(SIDES)}")
    p.add_argument("--result", default="accuracy_in_budget", help="writes results/RESULT.json")
    p.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    data_dir = train_cache(args.data_dir).resolve()
    if args.child:
        child(args.child, data_dir, args.budget, args.seed)
        return

    runs = {side: [] for side in args.sides.split(",")}
    if set(runs) - set(SIDES):
        p.error(f"--sides: choose from {', '.join(SIDES)}")
    for seed in range(args.seeds):
        for side in runs:
            argv = [
                sys.executable,
                __file__,
                "--child",
                side,
                "--seed",
                str(seed),
                "--data-dir",
                str(data_dir),
                "--budget",
                str(args.budget),
            ]
            runs[side].append(common.run_measured(argv))
            print(json.dumps(runs[side][-1]), file=sys.stderr, flush=True)
    summary = {
        side: {mode: statistics.mean(r["val_accuracy"][mode] for r in rows) for mode in ("none", "flip", "translate")}
        for side, rows in runs.items()
    }
    common.write_result(
        args.result,
        {
            "data": str(data_dir),
            "budget_s": args.budget,
            "seeds": args.seeds,
            "sides": {side: SIDES[side] for side in runs},
            "runs": runs,
            "mean_val_accuracy": summary,
        },
        " ".join(["python", "benchmarks/bench_budget.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
