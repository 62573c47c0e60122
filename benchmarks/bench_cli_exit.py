"""A command's whole process, with and without the exemption from garbage collection that the console entry
point gives every object as the command ends (kagglecifar.cli.app.main), side by side in one run:

    python benchmarks/bench_cli_exit.py [--run RUN --data-dir DATA] [--repeats 5] [--result NAME]

Each command runs as `python -c "...main()"` (argv None: the process's own command line, as the `kagglecifar`
script runs it, exempting) and as `python -c "...main(sys.argv[1:])"` (an explicit argv, as the tests call it:
collected as before), in N interleaved pairs, each pair in the other order than the one before; medians. The
commands: `doctor` (a short one that imports torch), `models` (it builds every registered model), and with
--run/--data-dir `predict RUN --data-dir DATA` (flip TTA gated as by default) writing into a temporary folder.
Writes results/cli_exit.json (or --result NAME).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ENTRY = {
    "exempting": "from kagglecifar.cli import main; main()",
    "collecting": "import sys; from kagglecifar.cli import main; main(sys.argv[1:])",
}


def timed(code: str, args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run folder, for `predict`")
    parser.add_argument("--data-dir", type=Path, help="its data folder, for `predict`")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs per command; medians")
    parser.add_argument("--result", default="cli_exit")
    args = parser.parse_args()
    if (args.run is None) != (args.data_dir is None):
        parser.error("--run and --data-dir go together")

    with tempfile.TemporaryDirectory() as tmp:
        commands = {"doctor": ["doctor"], "models": ["models"]}
        if args.run is not None:
            out = Path(tmp) / "submission.csv"
            commands["predict"] = ["predict", str(args.run), "--data-dir", str(args.data_dir), "--out", str(out)]
            commands["predict"] += ["--force"]
        rows = {}
        for name, command in commands.items():
            seconds: dict[str, list[float]] = {entry: [] for entry in ENTRY}
            for repeat in range(args.repeats):
                order = list(ENTRY) if repeat % 2 == 0 else list(reversed(ENTRY))  # neither side always first
                for entry in order:
                    seconds[entry].append(round(timed(ENTRY[entry], command), 2))
                print(name, {entry: each[-1] for entry, each in seconds.items()}, flush=True)
            medians = {entry: round(statistics.median(each), 2) for entry, each in seconds.items()}
            rows[name] = {
                "command": "kagglecifar " + " ".join(command),
                "seconds_each": seconds,
                "seconds": medians,
                "seconds_saved": round(medians["collecting"] - medians["exempting"], 2),
            }

    command = "python benchmarks/bench_cli_exit.py" + (
        f" --run {args.run} --data-dir {args.data_dir}" if args.run else ""
    )
    command += f" --repeats {args.repeats}" + (f" --result {args.result}" if args.result != "cli_exit" else "")
    what = "whole command processes: the console entry point (argv None, objects exempted as the command ends) "
    what += "against an explicit argv (collected as before), interleaved pairs, medians"
    common.write_result(args.result, {"what": what, "rows": rows}, command)


if __name__ == "__main__":
    main()
