"""`make bench`: every benchmark in turn; each writes results/NAME.json with its command and machine.

    python benchmarks/run_all.py            # all, about half an hour on 2 quiet CPU cores
    python benchmarks/run_all.py cache loader   # just these

Not here, because each builds or needs more: bench_e2e.py (`make run` from a fresh clone, with a held-out
replica built once), gpu_check.py (a CUDA machine), bench_tune.py, bench_formats.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {  # name -> script and its arguments for the standard run
    "cache": ["bench_cache.py"],
    "loader": ["bench_loader.py"],
    "train_step": ["bench_train_step.py"],
    "cpu_step": ["bench_cpu_step.py"],
    "budget": ["bench_budget.py"],
    "predict": ["bench_predict.py"],
}


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        script, *args = BENCHMARKS[name]
        started = time.monotonic()
        print(f"== {name}: {script} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args], check=True)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
