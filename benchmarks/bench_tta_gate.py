"""Confidence-gated TTA: accuracy against the share of images given every view, and predict's time.

    python benchmarks/bench_tta_gate.py --run runs/airbench94-cpu --data-dir data
    python benchmarks/bench_tta_gate.py --run RUN --data-dir DATA --junk-dir REPLICA_DATA --id-map ID_MAP.csv

Accuracy (a trained run, its validation split): the validation images are predicted once with every view of
each mode; gating at each fraction, ranked by the margin (top minus second probability) or by the top
probability alone, is then scored from those probabilities (gating.combine: what predict_gated computes).

The competition's test set is 10,000 real images among 290,000 junk ones, and gating ranks them all together:
with --junk-dir (a data folder whose test cache is a replica's, e.g. make-kaggle-cifar10 --real-test 1000
--junk 29000) and --id-map (that replica's id,name file, naming the junk), the validation images are ranked as
one real image in 30 would be: an image gets every view when its confidence is below the fraction's quantile
of the mixture (real and junk confidences weighted 1:29).

Time: predict's work once the model is loaded (and exported, for ONNX Runtime: a few seconds, timed in
bench_predict_backends.py), predict_gated over the test cache of --time-dir (default: --junk-dir's) with the
default fraction, with fraction 1 (every view) and without TTA, in turns, --repeats times each; the median
counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FRACTIONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)
MODES = ("flip", "translate")  # shift (10 views) too with --modes flip,translate,shift
REAL_SHARE = 10_000 / 300_000  # the competition's test set


def validation(run_dir: Path, data_dir: Path):
    """The run's model and its validation images and labels (indices into its classes)."""
    from kagglecifar.cache import load_split
    from kagglecifar.checkpoint import load_model, resolve_checkpoint

    path = resolve_checkpoint(run_dir)
    model, ckpt = load_model(path, __import__("torch").device("cpu"))
    train = load_split(data_dir, "train")
    rows = np.searchsorted(train.ids, np.asarray(ckpt["val_ids"], np.int64))
    rows = np.sort(rows[~train.bad[rows]])
    to_ckpt = np.array([list(ckpt["classes"]).index(c) for c in train.classes])
    return path, model, np.asarray(train.images[rows]), to_ckpt[train.labels[rows]], list(ckpt["classes"])


def mixture_threshold(real: np.ndarray, junk: np.ndarray, fraction: float) -> float:
    """The confidence below which `fraction` of a test set of real and junk images in the competition's
    proportions lies (each real image weighing REAL_SHARE / len(real), each junk one the rest / len(junk))."""
    scores = np.concatenate([real, junk])
    weights = np.concatenate(
        [np.full(len(real), REAL_SHARE / len(real)), np.full(len(junk), (1 - REAL_SHARE) / len(junk))]
    )
    order = np.argsort(scores, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = min(int(np.searchsorted(cumulative, fraction - 1e-12)), len(scores) - 1)
    return float(scores[order][index])


def accuracy_table(probs, labels, modes, junk_none=None):
    """accuracy[mode][gate][fraction], alone and (junk_none given) ranked among junk."""
    from kagglecifar.inference import gating

    alone, mixed = {}, {}
    for mode in modes:
        alone[mode], mixed[mode] = {}, {}
        for gate in gating.GATES:
            alone[mode][gate], mixed[mode][gate] = {}, {}
            for fraction in FRACTIONS:
                gated = gating.combine(probs["none"], probs[mode], mode, fraction, gate).probs
                alone[mode][gate][str(fraction)] = round(float((gated.argmax(1) == labels).mean()), 5)
                if junk_none is None:
                    continue
                real_score = gating.confidence(probs["none"], gate)
                threshold = mixture_threshold(real_score, gating.confidence(junk_none, gate), fraction)
                chosen = real_score <= threshold if fraction < 1 else np.ones(len(labels), bool)
                mixed_probs = np.where(chosen[:, None], probs[mode], probs["none"])
                mixed[mode][gate][str(fraction)] = {
                    "accuracy": round(float((mixed_probs.argmax(1) == labels).mean()), 5),
                    "real_images_gated": round(float(chosen.mean()), 4),
                }
    return alone, (mixed if junk_none is not None else None)


def timings(net, time_dir: Path, classes: int, repeats: int) -> dict:
    """predict's work after loading (and exporting) the model: predict_gated over every test image of the cache,
    at the default fraction, at fraction 1 and without TTA, in turns."""
    import numpy as np

    from kagglecifar.cache import load_split
    from kagglecifar.inference import gating
    from kagglecifar.inference.predict import predict_gated

    test = load_split(time_dir, "test")
    variants = {
        f"flip, fraction {gating.DEFAULT_FRACTION:g} (default)": ("flip", gating.DEFAULT_FRACTION),
        "flip, fraction 1 (every view)": ("flip", 1.0),
        "none": ("none", 1.0),
    }
    predict_gated([(net, 1.0)], test.images[:512], "none", classes, 1.0, progress=False)  # warm-up
    seconds = {name: [] for name in variants}
    labels = {}
    for _ in range(repeats):
        for name, (mode, fraction) in variants.items():
            started = time.perf_counter()
            gated = predict_gated(
                [(net, 1.0)], test.images, mode, classes, fraction, eligible=~test.bad, progress=False
            )
            seconds[name].append(round(time.perf_counter() - started, 2))
            labels[name] = gated.probs.argmax(1)
    every = "flip, fraction 1 (every view)"
    return {
        "images": len(test.ids),
        "repeats": repeats,
        "variants": {
            name: {
                "seconds": times,
                "median_seconds": statistics.median(times),
                "time_vs_every_view": round(statistics.median(times) / statistics.median(seconds[every]), 3),
                "labels_agree_with_every_view": round(float(np.mean(labels[name] == labels[every])), 5),
            }
            for name, times in seconds.items()
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a trained run (its best.pt) with a validation split")
    p.add_argument("--data-dir", type=Path, required=True, help="the data folder it was trained on")
    p.add_argument("--junk-dir", type=Path, help="a data folder with a replica's test cache (real + junk)")
    p.add_argument("--id-map", type=Path, help="the replica's id,name file (name `junk` for a junk image)")
    p.add_argument("--time-dir", type=Path, help="data folder whose test cache predict is timed on")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help="TTA modes scored on the validation split")
    args = p.parse_args()
    import os

    load_before = os.getloadavg()

    import pandas as pd
    import torch

    from kagglecifar.cache import load_split
    from kagglecifar.inference import backends, gating
    from kagglecifar.inference.predict import predict_images

    modes = args.modes.split(",")
    checkpoint, model, images, labels, classes = validation(args.run, args.data_dir)
    backend = backends.resolve_backend("auto", torch.device("cpu"))  # what predict runs by default
    net = backends.prepare(model, backend)
    print(f"bench_tta_gate: {len(images)} validation images, every view of {modes} ({backend}) ...", file=sys.stderr)
    probs = predict_images([(net, 1.0)], images, ["none", *modes], len(classes), device=torch.device("cpu"))
    junk_none = None
    if args.junk_dir and args.id_map:
        test = load_split(args.junk_dir, "test")
        names = pd.read_csv(args.id_map).set_index("id")["name"]
        junk_rows = np.flatnonzero((names.reindex(test.ids).to_numpy() == "junk") & ~test.bad)
        print(f"bench_tta_gate: {len(junk_rows)} junk images ...", file=sys.stderr)
        junk_none = predict_images([(net, 1.0)], test.images[junk_rows], ["none"], len(classes))["none"]
    alone, mixed = accuracy_table(probs, labels, modes, junk_none)
    time_dir = args.time_dir or args.junk_dir
    timed = timings(net, time_dir, len(classes), args.repeats) if time_dir else None

    common.write_result(
        "tta_gate",
        {
            "checkpoint": str(checkpoint),
            "validation_images": len(labels),
            "default": {"fraction": gating.DEFAULT_FRACTION, "gate": gating.DEFAULT_GATE},
            "backend": backend,
            "accuracy_every_view": {m: alone[m]["margin"]["1.0"] for m in modes},
            "accuracy_none": round(float((probs["none"].argmax(1) == labels).mean()), 5),
            "validation_alone": alone,
            "junk_images": None if junk_none is None else len(junk_none),
            "ranked_among_junk_1_in_30_real": mixed,
            "predict_time": timed,
            "time_data": str(time_dir) if time_dir else None,
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        " ".join(["python", "benchmarks/bench_tta_gate.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
