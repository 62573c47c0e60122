"""Prediction speed over the test cache (300,000 images) without TTA and with each TTA mode, and peak memory.

    python benchmarks/bench_predict.py                          # full-size replica; a subset on a CPU
    python benchmarks/bench_predict.py --data-dir bench-data/predict/small --limit 1000
    python benchmarks/bench_predict.py --checkpoint runs/resnet18-cpu/best.pt --limit 0   # every image

Times kagglecifar.inference.predict.predict (memory-mapped reads, uint8 -> device -> float, TTA views, fallbacks) and
write_submission for every id. The default model is an untrained resnet18 at width 0.25 (speed does not depend
on the weights). On a CPU only the first --limit test ids are predicted (a copy of them in a small cache) and
the JSON says so, with the time the full test set would take at the measured rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORK = common.DEFAULT_DATA / "predict"
CPU_LIMITS = {"none": 0, "flip": 0, "shift": 30_000}  # on a CPU, 10-view shift TTA runs on the first 30k ids


def test_cache(data_dir: Path | None) -> Path:
    """A data folder with a test cache: the one given, or the full-size replica's (built once)."""
    return data_dir or common.replica_data()


def subset(data_dir: Path, limit: int) -> Path:
    """A cache holding the first `limit` test ids of data_dir (so predict() runs on them unchanged)."""
    from kagglecifar.cache import load_split, write_split

    test = load_split(data_dir, "test")
    folder = WORK / f"subset-{limit}"
    write_split(folder, "test", test.images[:limit], test.ids[:limit], test.classes, bad=test.bad[:limit])
    return folder


def default_checkpoint(classes: list[str]) -> Path:
    import torch

    from kagglecifar.checkpoint import save_checkpoint
    from kagglecifar.models import create_model

    torch.manual_seed(0)
    name = "resnet18" if torch.cuda.is_available() else "simplecnn"  # the gpu / cpu preset's model
    model = create_model(name, num_classes=len(classes))
    return save_checkpoint(
        {
            "model": name,
            "model_kwargs": {},
            "classes": classes,
            "state_dict": model.state_dict(),
            "val_ids": [],
            "epoch": 0,
            "val_accuracy": None,
            "config": {},
        },
        WORK / f"{name}-untrained.pt",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="a data folder with a test cache (default: built from the replica)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="run folder or checkpoint (default: an untrained model of the "
        "preset for this machine: resnet18 with CUDA, else simplecnn)",
    )
    p.add_argument(
        "--limit",
        type=int,
        help=f"predict only the first N test ids in every mode; 0 = all (default: all on a GPU; on a CPU {CPU_LIMITS})",
    )
    p.add_argument("--batch-size", type=int, help="default: predict's own (256 on CPU; on CUDA from free memory)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    import numpy as np

    from kagglecifar.cache import load_split
    from kagglecifar.checkpoint import load_checkpoint, resolve_checkpoint
    from kagglecifar.device import resolve_device
    from kagglecifar.inference.batches import default_batch_size
    from kagglecifar.inference.predict import TTA_VIEWS, predict
    from kagglecifar.kaggle_io.submission_csv import write_submission

    device = resolve_device(args.device)
    data_dir = test_cache(args.data_dir)
    full = load_split(data_dir, "test")
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else default_checkpoint(full.classes)
    ckpt = load_checkpoint(checkpoint)

    predict([checkpoint], subset(data_dir, 256), tta="none", batch_size=args.batch_size, device=args.device)  # warm-up
    modes = {}
    for tta in TTA_VIEWS:
        limit = args.limit if args.limit is not None else (0 if device.type == "cuda" else CPU_LIMITS[tta])
        measured_dir = subset(data_dir, limit) if 0 < limit < len(full) else data_dir
        print(f"bench_predict: tta {tta} on {measured_dir} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = predict([checkpoint], measured_dir, tta=tta, batch_size=args.batch_size, device=args.device)
        seconds = time.perf_counter() - started
        rate = len(result.ids) / seconds
        modes[tta] = {
            "views": TTA_VIEWS[tta],
            "images": len(result.ids),
            "seconds": round(seconds, 2),
            "images_per_s": round(rate, 1),
            "views_per_s": round(rate * TTA_VIEWS[tta], 1),
            "full_test_seconds": round(len(full) / rate, 1),
            "note": "every test id"
            if len(result.ids) == len(full)
            else f"first {len(result.ids)} of {len(full)} test ids; full_test_seconds extrapolates",
        }

    # The CSV for every id of the full test set (labels do not matter for its speed).
    sample = data_dir / "sampleSubmission.csv"
    write_seconds = None
    if sample.is_file():
        out = WORK / "bench-submission.csv"
        started = time.perf_counter()
        labels = np.array(full.classes, dtype=object)[full.ids % len(full.classes)]
        write_submission(out, full.ids, labels, sample, full.classes, force=True)
        write_seconds = round(time.perf_counter() - started, 2)

    common.write_result(
        "prediction",
        {
            "model": ckpt["model"],
            "model_kwargs": ckpt.get("model_kwargs", {}),
            "checkpoint": str(checkpoint),
            "device": str(device),
            "batch_size": args.batch_size or default_batch_size(device),
            "test_images": len(full),
            "modes": modes,
            "write_submission_seconds": write_seconds,
            "peak_rss_mb": round(common.peak_rss_mb()),
        },
        " ".join(["python", "benchmarks/bench_predict.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
