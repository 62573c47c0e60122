"""Which ranking and share gated TTA should default to, over several trained models at once:

    python benchmarks/bench_gate_rankings.py --data-dir DATA --runs RUN [RUN ...] [--replica bench-data/held-out]

DATA is the cache `kagglecifar fetch --from-dir REPLICA` built from bench_e2e.py's held-out replica (300,000 test
ids, 5,000 of them real images whose labels only the replica's held-out-labels.csv knows); each RUN a model
trained on it (the cpu preset with another --set seed=N, say). For each run, one pass with both flip views
over every image; then, for each ranking in gating.GATES and each share, the hidden-key accuracy of what
`predict` would give (gating.combine: its choice of rows), as points against every view on every image:

- among the junk: ranked over all 300,000 ids, as `predict` ranks the competition's test set;
- real images alone: ranked over the 5,000 real images only, as on a test set without junk.

One model's difference is a count of a few images among 5,000 (0.02 points each), so the choice rests on the
mean and the worst over the runs. Writes results/tta_gate_rankings.json (or --result NAME).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_gate_full import hidden_key, hidden_rows  # noqa: E402

SHARES = (0.15, 0.2, 0.25, 0.28, 0.3, 0.31, 0.32, 0.33, 0.4, 0.5)


def points_by_share(run: Path, data_dir: Path, key: dict[int, str]) -> dict:
    """{setting: {gate: {share: points against every view}}} for one run, and its accuracy with every view."""
    import numpy as np
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
    net = prepare(model, resolve_backend("auto", cpu))
    out = predict_images([(net, 1.0)], test.images, ["none", "flip"], len(classes), device=cpu, progress=False)
    rows, truth = hidden_rows(test.ids, key, classes)
    every_view = float((out["flip"][rows].argmax(1) == truth).mean())
    real_only = np.zeros(len(test.ids), bool)
    real_only[rows] = True
    points: dict = {}
    for setting, eligible in (("among_junk", None), ("real_images_alone", real_only)):
        for gate in gating.GATES:
            for share in SHARES:
                gated = gating.combine(out["none"], out["flip"], "flip", share, gate, eligible)
                accuracy = float((gated.probs[rows].argmax(1) == truth).mean())
                points.setdefault(setting, {}).setdefault(gate, {})[f"{share:g}"] = round(
                    100 * (accuracy - every_view), 2
                )
    return {"every_view_accuracy": every_view, "points": points}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--replica", type=Path, default=common.DEFAULT_DATA / "held-out")
    p.add_argument("--result", default="tta_gate_rankings", help="results/NAME.json (default: %(default)s)")
    args = p.parse_args()
    key = hidden_key(args.replica)
    per_run = {}
    for run in args.runs:
        per_run[str(run)] = points_by_share(run, args.data_dir, key)
        print(f"{run}: every view {per_run[str(run)]['every_view_accuracy']:.2%}", flush=True)
    summary: dict = {}
    first = next(iter(per_run.values()))["points"]
    for setting, by_gate in first.items():
        for gate, by_share in by_gate.items():
            for share in by_share:
                values = [r["points"][setting][gate][share] for r in per_run.values()]
                summary.setdefault(setting, {}).setdefault(gate, {})[share] = {
                    "mean": round(statistics.fmean(values), 3),
                    "worst": min(values),
                }
    for setting, by_gate in summary.items():
        print(f"{setting}: points against every view, mean (worst) over {len(per_run)} runs")
        for gate, by_share in by_gate.items():
            cells = " ".join(f"{s}: {v['mean']:+.2f} ({v['worst']:+.2f})" for s, v in by_share.items())
            print(f"  {gate:10s} {cells}")
    common.write_result(
        args.result,
        {
            "what": "hidden-key accuracy of gated flip TTA against every view on every image, by ranking and "
            f"share, over {len(per_run)} runs; ranked among the 300,000 ids and among the {len(key):,} real "
            "images alone",
            "summary": summary,
            "runs": per_run,
        },
        command=" ".join(["python", "benchmarks/bench_gate_rankings.py", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
