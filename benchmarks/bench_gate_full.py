"""Gated TTA on the full competition-sized test set, scored on a hidden key, side by side in one run:

    python benchmarks/bench_gate_full.py --run RUN --data-dir DATA [--replica bench-data/held-out] [--result NAME]

DATA is the cache `kagglecifar fetch --from-dir REPLICA` built from bench_e2e.py's held-out replica (300,000
test ids, 5,000 of them real images whose labels only the replica's held-out-labels.csv knows); RUN a run
trained on it. `kagglecifar predict RUN` runs as a user types it, first at the default fraction, then with
`--tta-fraction 1` (every image gets every view), each timed as a whole process (`--repeats N`: N interleaved
pairs, each in the other order than the one before; medians) and within predict's passes over the images (from
the images/s its summary prints); both CSVs are scored on the 5,000 hidden labels. Then, in this process, one
pass with both views over every image gives the hidden-key accuracy at each share in FRACTIONS for each ranking
in gating.GATES (gating.combine: predict's choice of rows), which is how the default ranking and share were
chosen, and how many of the real images the default ranking gives every view. Writes results/tta_gate_full.json
(or --result NAME).

--allocator also runs both commands with KAGGLECIFAR_KEEP_FREED_MEMORY=0 (glibc's own handling of freed memory,
as before device.freed_memory_kept), interleaved with the others; every command's page faults are recorded.
--no-shares leaves the accuracy-by-share pass out. --fractions F [F ...] also times `--tta-fraction F` for each
F, interleaved with the others, with its ratio to `--tta-fraction 1` and its hidden-key accuracy.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def hidden_key(replica: Path) -> dict[int, str]:
    """test id -> label for the real images among the replica's junk."""
    with open(replica / "held-out-labels.csv", newline="") as f:
        label_of_name = dict(csv.reader(f))
    with open(replica / "id-map.csv", newline="") as f:
        return {int(row["id"]): label_of_name[row["name"]] for row in csv.DictReader(f) if row["name"] in label_of_name}


def hidden_rows(ids, key: dict[int, str], classes: list[str]):
    """(rows, labels): the cache rows holding the key's ids, ascending, and their labels as class indices."""
    import numpy as np

    row_of = {int(i): k for k, i in enumerate(ids)}
    rows = np.sort([row_of[i] for i in key])
    return rows, np.array([classes.index(key[int(ids[r])]) for r in rows])


FRACTIONS = (0.2, 0.25, 0.3, 0.32, 0.33, 0.35, 0.4, 0.5, 0.6, 1.0)


def accuracy_by_fraction(run: Path, data_dir: Path, key: dict[int, str], backend: str) -> tuple[dict, dict]:
    """Hidden-key accuracy by ranking and share, and per share how many of the hidden key's real images the
    default ranking gives every view (the junk, less confident, takes most of the share)."""
    import torch

    from kagglecifar.cache import load_split
    from kagglecifar.checkpoint import load_model, resolve_checkpoint
    from kagglecifar.inference import gating
    from kagglecifar.inference.backends import prepare, resolve_backend
    from kagglecifar.inference.predict import predict_images

    cpu = torch.device("cpu")
    test = load_split(data_dir, "test")
    model, checkpoint = load_model(resolve_checkpoint(run), cpu)
    classes = list(checkpoint["classes"])
    net = prepare(model, resolve_backend(backend, cpu))
    out = predict_images([(net, 1.0)], test.images, ["none", "flip"], len(classes), device=cpu, progress=False)
    rows, truth = hidden_rows(test.ids, key, classes)
    accuracy: dict[str, dict[str, float]] = {}
    real_with_every_view: dict[str, int] = {}
    for gate in gating.GATES:
        accuracy[gate] = {}
        for fraction in FRACTIONS:
            gated = gating.combine(out["none"], out["flip"], "flip", fraction, gate)
            accuracy[gate][f"{fraction:g}"] = round(float((gated.probs[rows].argmax(1) == truth).mean()), 5)
            if gate == gating.DEFAULT_GATE:
                real_with_every_view[f"{fraction:g}"] = int((gated.views[rows] > 1).sum())
    return accuracy, real_with_every_view


def score(submission: Path, key: dict[int, str]) -> float:
    with open(submission, newline="") as f:
        labels = {int(row["id"]): row["label"] for row in csv.DictReader(f)}
    return sum(labels[i] == label for i, label in key.items()) / len(key)


def main() -> None:
    from kagglecifar.inference import gating

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--replica", type=Path, default=common.DEFAULT_DATA / "held-out")
    p.add_argument("--backend", default="auto")
    p.add_argument("--repeats", type=int, default=1, help="timed pairs, interleaved; medians (default: %(default)s)")
    p.add_argument("--result", default="tta_gate_full", help="results/NAME.json (default: %(default)s)")
    p.add_argument("--allocator", action="store_true", help="also each command with glibc's defaults")
    p.add_argument("--no-shares", action="store_true", help="leave out the accuracy-by-share pass")
    p.add_argument("--fractions", type=float, nargs="+", default=[], help="also time --tta-fraction F for each F")
    args = p.parse_args()
    if any(not 0 < f < 1 for f in args.fractions):
        p.error("--fractions: shares above 0 and below 1 (1 and the default are timed anyway)")
    key = hidden_key(args.replica)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        # Interleaved, each round in the other order than the one before (default, every view; every view,
        # default; ...): a shared machine's speed drifts over minutes, neither command always runs first, and
        # the ratio of medians is what a user's two commands would see.
        commands = [("default", [], ""), ("fraction_1", ["--tta-fraction", "1"], "")]
        commands += [(f"fraction_{f:g}", ["--tta-fraction", f"{f:g}"], "") for f in args.fractions]
        if args.allocator:
            commands += [(f"{name}, glibc defaults", extra, "0") for name, extra, _ in commands]
        for repeat in range(args.repeats):
            for name, extra, keep in commands if repeat % 2 == 0 else commands[::-1]:
                out = Path(scratch) / f"{name}.csv"
                argv = ["predict", str(args.run), "--data-dir", str(args.data_dir), "--out", str(out),
                        "--backend", args.backend, "--force", *extra]  # fmt: skip
                env = {**os.environ, "KAGGLECIFAR_KEEP_FREED_MEMORY": keep}
                faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "kagglecifar", *argv], capture_output=True, text=True, env=env
                )
                seconds = time.perf_counter() - started
                if done.returncode:
                    sys.exit(f"kagglecifar {' '.join(argv)} failed: {done.stderr[-2000:]}")
                row = rows.setdefault(name, {"command": "kagglecifar " + " ".join(argv), "seconds_each": []})
                row["seconds_each"].append(round(seconds, 1))
                row.setdefault("page_faults_each", []).append(
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - faults
                )
                row["seconds"] = round(statistics.median(row["seconds_each"]), 1)
                row["hidden_key_accuracy"] = score(out, key)
                row["line"] = done.stdout.strip().splitlines()[-1]
                # predict's own rate covers its passes over the images; the rest of the process is what both
                # commands pay alike (starting Python, importing PyTorch, the sample and the CSV)
                images = int(re.search(r"(\d+) rows", row["line"]).group(1))
                rate = float(re.search(r"([\d,]+) images/s", row["line"]).group(1).replace(",", ""))
                row.setdefault("seconds_predicting_each", []).append(round(images / rate, 2))
                row["seconds_predicting"] = round(statistics.median(row["seconds_predicting_each"]), 2)
                print(f"{name}: {seconds:.1f} s, {row['hidden_key_accuracy']:.2%}", flush=True)
    by_fraction, real_with_every_view = (
        ({}, {}) if args.no_shares else accuracy_by_fraction(args.run, args.data_dir, key, args.backend)
    )
    for gate, by_share in by_fraction.items():
        print(f"hidden-key accuracy by share, {gate}:", by_share)
    if real_with_every_view:
        print(f"real images with every view by share ({gating.DEFAULT_GATE}):", real_with_every_view)
    ratio = rows["default"]["seconds"] / rows["fraction_1"]["seconds"]
    predicting = rows["default"]["seconds_predicting"] / rows["fraction_1"]["seconds_predicting"]
    if args.allocator:
        glibc = rows["default, glibc defaults"]["seconds"] / rows["fraction_1, glibc defaults"]["seconds"]
        print(f"with glibc's defaults: {glibc:.3f}x", flush=True)
    points = 100 * (rows["default"]["hidden_key_accuracy"] - rows["fraction_1"]["hidden_key_accuracy"])
    other_shares = {
        f"{f:g}": {
            "time_ratio": round(rows[f"fraction_{f:g}"]["seconds"] / rows["fraction_1"]["seconds"], 3),
            "accuracy_difference_points": round(
                100 * (rows[f"fraction_{f:g}"]["hidden_key_accuracy"] - rows["fraction_1"]["hidden_key_accuracy"]), 2
            ),
        }
        for f in args.fractions
    }
    for share, measured in other_shares.items():
        print(f"--tta-fraction {share} / fraction 1: {measured['time_ratio']:.3f}x the time, "
              f"{measured['accuracy_difference_points']:+.2f} points")  # fmt: skip
    common.write_result(
        args.result,
        {
            "what": "predict (flip TTA) at the default fraction against --tta-fraction 1 over 300,000 test ids, "
            f"scored on the {len(key):,} hidden labels of the held-out replica",
            "rows": rows,
            "default_gate": gating.DEFAULT_GATE,
            "default_fraction": gating.DEFAULT_FRACTION,
            "hidden_key_accuracy_by_gate_and_fraction": by_fraction,
            "hidden_key_images_with_every_view_by_fraction": real_with_every_view,
            "time_ratio": round(ratio, 3),
            "time_ratio_predicting": round(predicting, 3),
            "time_ratio_glibc_defaults": round(glibc, 3) if args.allocator else None,
            "accuracy_difference_points": round(points, 2),
            "other_shares": other_shares,
        },
        command=" ".join(["python", "benchmarks/bench_gate_full.py", *sys.argv[1:]]),
    )
    default = f"{gating.DEFAULT_GATE}, {gating.DEFAULT_FRACTION:g}"
    print(
        f"default ({default}) / fraction 1: {ratio:.3f}x the time ({predicting:.3f}x within predict's passes), "
        f"{points:+.2f} points on the hidden key"
    )


if __name__ == "__main__":
    main()
