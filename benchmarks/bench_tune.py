"""A real search on this machine: `kagglecifar tune` on the cpu preset (airbench94 x0.25) over its model
family's default space (kagglecifar/spaces/airbench.yaml), its first trial being the preset's own recipe, so the
best trial is compared with the default at the same cost (width, epochs and batch stay the preset's).

    python benchmarks/bench_tune.py --data-dir DATA --runs-dir RUNS --trials 10 --workers 2

--workers N starts N processes of the same `tune` command (they share the SQLite study), each with
cores/N torch threads. Writes results/tune_cpu.json: the command, the machine and its load, every trial.
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

from kagglecifar.recipes import make_config  # noqa: E402
from kagglecifar.tune import space


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--trials", type=int, help="stop once the study holds this many finished trials")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    parser.add_argument("--workers", type=int, default=1, help="tune processes sharing the study")
    parser.add_argument("--name", default="cpu-bench")
    parser.add_argument("--result", default="tune_cpu", help="results/RESULT.json (e.g. for a continued search)")
    args = parser.parse_args()
    if not args.trials and not args.timeout:
        parser.error("give --trials, --timeout or both")
    limits = [
        *(["--trials", str(args.trials)] if args.trials else []),
        *(["--timeout", f"{args.timeout:g}"] if args.timeout else []),
    ]
    command = [
        sys.executable,
        "-m",
        "kagglecifar",
        "tune",
        "--preset",
        "cpu",
        *limits,
        "--name",
        args.name,
        "--data-dir",
        str(args.data_dir),
        "--runs-dir",
        str(args.runs_dir),
        "--device",
        "cpu",
    ]
    threads = str(max(1, (os.cpu_count() or 1) // args.workers))
    load_before, started = load_average(), time.monotonic()
    workers = []
    for worker in range(args.workers):
        workers.append(
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                text=True,  # epoch lines: stderr
                env={**os.environ, "OMP_NUM_THREADS": threads},
            )
        )
        time.sleep(5 if worker == 0 else 0)  # the first creates the study and queues the preset's trial
    outputs = [worker.communicate()[0] for worker in workers]
    seconds, load_after = time.monotonic() - started, load_average()
    print(outputs[-1][-5000:])
    if any(worker.returncode for worker in workers):
        sys.exit(f"tune failed ({[worker.returncode for worker in workers]})")
    tune_dir = args.runs_dir / f"tune-{args.name}"
    with open(tune_dir / "results.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    finished = [t for t in trials if t["best_val_acc"] and t["state"] == "complete"]
    preset = next((t for t in trials if "preset's values" in t["note"] and t["state"] == "complete"), None)
    best = max(finished, key=lambda t: float(t["best_val_acc"]), default=None)
    searched = space.default_space_path(make_config(preset="cpu").recipe.model)
    write_result(
        args.result,
        {
            "trials_limit": args.trials,
            "timeout_s": args.timeout,
            "workers": args.workers,
            "threads_per_worker": int(threads),
            "wall_s": round(seconds, 1),
            "load_average_1_5_15": {"start": load_before, "end": load_after},
            "space": searched.read_text(),
            "summary": outputs[-1].strip().splitlines()[-1],
            "preset_trial": preset,
            "best_trial": best,
            "gain_points": (
                round(100 * (float(best["best_val_acc"]) - float(preset["best_val_acc"])), 2)
                if best and preset
                else None
            ),
            "trials": trials,
        },
        " ".join(
            [
                "python",
                "benchmarks/bench_tune.py",
                "--data-dir",
                str(args.data_dir),
                "--runs-dir",
                str(args.runs_dir),
                *limits,
                "--workers",
                str(args.workers),
                "--result",
                args.result,
            ]
        ),
    )


if __name__ == "__main__":
    main()
