"""A real search on this machine: `kagglecifar tune` on the cpu preset's model for a fixed time, its first
trial being the preset's own recipe, so the best trial is compared with the default under the same budget.

    python benchmarks/bench_tune.py --data-dir DATA --runs-dir RUNS [--timeout 1200]

Writes results/tune_cpu.json: the command, the machine and its load (the CPU may be shared), every trial.
Running it again continues the same study (`--result NAME` keeps the earlier JSON).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

SPACE = Path(__file__).resolve().parent / "tune_cpu_space.yaml"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--name", default="cpu-bench")
    parser.add_argument("--result", default="tune_cpu", help="results/RESULT.json (e.g. for a continued search)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "kagglecifar", "tune", "--preset", "cpu", "--space", str(SPACE),
               "--timeout", f"{args.timeout:g}", "--name", args.name, "--data-dir", str(args.data_dir),
               "--runs-dir", str(args.runs_dir), "--device", "cpu"]
    load_before, started = load_average(), time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # the trials' epoch lines go to stderr
    seconds, load_after = time.monotonic() - started, load_average()
    print(done.stdout[-5000:])
    if done.returncode != 0:
        sys.exit(f"tune failed ({done.returncode})")
    tune_dir = args.runs_dir / f"tune-{args.name}"
    with open(tune_dir / "results.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    finished = [t for t in trials if t["best_val_acc"] and t["state"] == "complete"]
    preset = next((t for t in trials if "preset's values" in t["note"] and t["state"] == "complete"), None)
    best = max(finished, key=lambda t: float(t["best_val_acc"]), default=None)
    write_result(args.result, {
        "timeout_s": args.timeout, "wall_s": round(seconds, 1), "load_average_1_5_15": {"start": load_before,
                                                                                      "end": load_after},
        "space": SPACE.read_text(), "summary": done.stdout.strip().splitlines()[-1],
        "preset_trial": preset, "best_trial": best,
        "gain_points": (round(100 * (float(best["best_val_acc"]) - float(preset["best_val_acc"])), 2)
                        if best and preset else None),
        "trials": trials}, " ".join(["python", "benchmarks/bench_tune.py", "--data-dir", str(args.data_dir),
                                    "--runs-dir", str(args.runs_dir), "--timeout", f"{args.timeout:g}",
                                    "--result", args.result]))


if __name__ == "__main__":
    main()
