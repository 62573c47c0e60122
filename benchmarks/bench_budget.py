"""Accuracy in a fixed wall-clock budget: the `cpu` training preset with kagglecifar's loader against the
same model and recipe fed by a plain torchvision (PIL) DataLoader.

    python benchmarks/bench_budget.py                       # train cache of the full-size replica, 240 s each
    python benchmarks/bench_budget.py --data-dir bench-data/c2/small --budget 20 --epochs 2

Each side runs `kagglecifar.train.train` in a fresh process with --time-budget BUDGET; the only difference
is the loader (train(make_loader=...)). Reported: best validation accuracy reached (validation runs at the
end of every completed epoch; an epoch cut by the budget does not count), completed epochs, images/s
(images trained over training + validation time), wall time and peak memory.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_loader import TorchvisionLoader, train_cache  # noqa: E402


def child(loader: str, data_dir: Path, budget: float, options: dict) -> None:
    """One training run; prints its result as the last line of JSON."""
    from kagglecifar.checkpoint import load_checkpoint
    from kagglecifar.config import make_config
    from kagglecifar.train import train

    with tempfile.TemporaryDirectory() as runs:
        config = make_config(preset="cpu", data_dir=data_dir, runs_dir=runs, time_budget=budget, device="cpu",
                             **options)
        make_loader = None
        if loader == "torchvision":
            def make_loader(images, labels, c):
                return TorchvisionLoader(images, labels, c.batch_size, c.workers, c.seed)
        result = train(config, make_loader=make_loader)
        progress = load_checkpoint(result.run_dir / "last.pt")["train_state"]["progress"]
        images_per_s = progress["step"] * config.recipe.batch_size / progress["elapsed"]  # validation time included
        print(json.dumps({
            "loader": loader, "best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
            "epochs_completed": result.epochs_run, "epochs_planned": config.recipe.epochs,
            "stopped": result.stopped_reason, "train_images_per_s": round(images_per_s),
            "config": {k: getattr(config, k) for k in ("model", "width", "epochs", "batch_size", "lr", "augment",
                                                       "workers", "time_budget")},
            "peak_rss_mb": round(common.peak_rss_mb()), "wall_s": round(result.seconds, 1),
        }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="a data folder with a train cache (default: built from the replica)")
    p.add_argument("--budget", type=float, default=240.0, help="wall-clock seconds per training run")
    p.add_argument("--epochs", type=int, help="override the cpu preset's epochs")
    p.add_argument("--workers", type=int, help="override the cpu preset's loader workers (both sides)")
    p.add_argument("--child", choices=["ours", "torchvision"], help=argparse.SUPPRESS)
    args = p.parse_args()
    options = {k: v for k, v in {"epochs": args.epochs, "workers": args.workers}.items() if v is not None}
    data_dir = train_cache(args.data_dir).resolve()
    if args.child:
        child(args.child, data_dir, args.budget, options)
        return

    runs = {}
    for loader in ("torchvision", "ours"):
        argv = [sys.executable, __file__, "--child", loader, "--data-dir", str(data_dir), "--budget", str(args.budget)]
        for key, value in options.items():
            argv += [f"--{key}", str(value)]
        runs[loader] = common.run_measured(argv)
        print(runs[loader], file=sys.stderr, flush=True)
    ours, baseline = runs["ours"], runs["torchvision"]
    common.write_result("accuracy_in_budget", {
        "data": str(data_dir), "budget_s": args.budget, "preset": "cpu", "runs": runs,
        "accuracy_gain_points": None if None in (ours["best_val_accuracy"], baseline["best_val_accuracy"]) else
        round(100 * (ours["best_val_accuracy"] - baseline["best_val_accuracy"]), 2),
        "throughput_ratio": round(ours["train_images_per_s"] / baseline["train_images_per_s"], 2),
    }, " ".join(["python", "benchmarks/bench_budget.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
