"""Recipe variants side by side over seeds: `python benchmarks/bench_recipes.py --data-dir DATA [--device cuda]`.

The search for a better CPU recipe (the cpu preset: airbench94 at a quarter width) needs accuracy over several
seeds for each variant, and accuracy does not depend on where a run trains: a GPU measures it in seconds per
run, several runs at a time. What a variant costs on a CPU is measured apart, on the CPU, by
bench_cpu_step.py (steps per second) and bench_e2e.py (the whole run). Each variant here is the cpu preset
with a few changes; every run trains in its own process, then is evaluated on its validation split without
TTA and with flip TTA (every image, and gated at predict's default fraction).

`hardest-half-e17` is airbench96_faster's data selection with the net as its own judge (`hardest_share`; that
script's proxy net, 32-64-64 channels, is larger than the cpu preset's whole 16-64-64 net): each step forwards
the whole batch without gradients and trains on the half with the highest loss, about 0.8 of a plain step's
time, so 17 epochs take about as long as 14 (184 s against 188 s, results/recipes_cpu_hardest.json).
`--set KEY=VALUE` changes every variant (on a CPU, `--set val_fraction=0.1` scores on 5,000 images instead of
the preset's 1,000).

Writes results/recipes.json after every finished run (--out to change), so a command stopped by a time
limit keeps what it measured. `--deadline S` starts no run after S seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# name -> (model, --set values on top of the cpu preset)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "cpu": ("airbench94", []),
    "relu": ("airbench94-relu", []),
    "silu": ("airbench94-silu", []),
    "epochs10": ("airbench94", ["epochs=10"]),
    "epochs14": ("airbench94", ["epochs=14"]),
    "batch1024": ("airbench94", ["batch_size=1024", "lr=1.5"]),
    "muon-b2000-e8": ("airbench94", ["optimizer=muon", "batch_size=2000", "lr=1.5", "epochs=8"]),
    "muon-b2000-e10": ("airbench94", ["optimizer=muon", "batch_size=2000", "lr=1.5", "epochs=10"]),
    "hardest-half-e17": ("airbench94", ["epochs=17", "hardest_share=0.5"]),
}


def register_activation_variants() -> None:
    """airbench94-relu and airbench94-silu: the preset's net with another activation (not in the product's
    registry until one of them measures better)."""
    from kagglecifar.models import airbench
    from kagglecifar.models.layers import scaled
    from kagglecifar.models.registry import register

    for activation in ("relu", "silu"):

        def build(num_classes: int = 10, width: float = 1.0, dropout: float = 0.0, activation=activation):
            widths = [scaled(c, width) for c in (64, 256, 256)]
            return airbench.AirbenchNet(widths, num_classes, 2, dropout, activation)

        register(f"airbench94-{activation}", f"airbench94 with {activation}", batch_size=1024, recipe="fast")(build)


def one_run(variant: str, seed: int, data_dir: Path, runs_dir: Path, device: str, extra: list[str]) -> dict:
    """Train and evaluate one variant in this process; the row it adds to the report."""
    from kagglecifar import api
    from kagglecifar.inference.evaluate import read_evaluation
    from kagglecifar.rundir import read_result

    register_activation_variants()
    model, sets = VARIANTS[variant]
    name = f"{variant}-seed{seed}"
    started = time.perf_counter()
    api.train(model, preset="cpu", recipe_from_preset=True, set=[*sets, "width=0.25", *extra], seed=seed, name=name,
              data_dir=str(data_dir), runs_dir=str(runs_dir), device=device)  # fmt: skip
    train_seconds = time.perf_counter() - started
    api.evaluate(runs_dir / name, tta=["flip"], data_dir=data_dir, device=device)
    accuracy = read_evaluation(runs_dir / name).get("accuracy", {})
    return {
        "variant": variant,
        "seed": seed,
        "epochs": read_result(runs_dir / name).get("epochs_run"),
        "wall_seconds": round(train_seconds, 1),
        "accuracy": accuracy,
    }


def summarise(rows: list[dict]) -> dict:
    summary: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant] = {"runs": len(mine)}
        for mode in sorted({m for r in mine for m in r["accuracy"]}):
            values = [r["accuracy"][mode] for r in mine if mode in r["accuracy"]]
            summary[variant][mode] = {
                "mean": round(statistics.mean(values), 5),
                "stdev": round(statistics.pstdev(values), 5),
                "n": len(values),
            }
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST + SEEDS - 1")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (several fit on one GPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--deadline", type=float, default=0, help="start no run after this many seconds (0: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant")
    p.add_argument("--out", type=Path, default=common.RESULTS / "recipes.json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # child mode: VARIANT:SEED:RUNS_DIR
    args = p.parse_args()
    if args.one:
        variant, seed, runs_dir = args.one.split(":", 2)
        print(json.dumps(one_run(variant, int(seed), args.data_dir, Path(runs_dir), args.device, args.set)))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"bench_recipes: unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    # Seed-major order: every variant gets its first seed before any gets a third.
    queue = [(v, s) for s in range(args.first_seed, args.first_seed + args.seeds) for v in variants]
    report = {
        "benchmark": "recipes",
        "command": " ".join(sys.argv),
        "machine": common.machine_info(),
        "base": "the cpu preset (airbench94, width 0.25, 12 epochs, batch 512)",
        "variants": {v: {"model": VARIANTS[v][0], "set": VARIANTS[v][1] + args.set} for v in variants},
        "rows": [],
        "failures": [],
    }
    started = time.perf_counter()

    def write() -> None:
        report["summary"] = summarise(report["rows"])
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as scratch:
        running: list[tuple[str, int, subprocess.Popen]] = []
        while queue or running:
            late = args.deadline and time.perf_counter() - started > args.deadline
            while queue and len(running) < args.parallel and not late:
                variant, seed = queue.pop(0)
                one = f"{variant}:{seed}:{scratch}/runs"
                argv = [__file__, "--data-dir", str(args.data_dir), "--device", args.device, "--one", one]
                child = subprocess.Popen(
                    [sys.executable, *argv, *(f"--set={kv}" for kv in args.set)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                running.append((variant, seed, child))
            if late and queue:
                report["skipped_after_deadline"] = [f"{v}:{s}" for v, s in queue]
                queue.clear()
            time.sleep(0.5)
            for entry in list(running):
                variant, seed, child = entry
                if child.poll() is None:
                    continue
                running.remove(entry)
                out, err = child.communicate()
                if child.returncode == 0 and out.strip():
                    row = json.loads(out.strip().splitlines()[-1])
                    report["rows"].append(row)
                    print(f"{variant} seed {seed}: {row['accuracy']} in {row['wall_seconds']} s", flush=True)
                else:
                    report["failures"].append({"variant": variant, "seed": seed, "error": err[-2000:]})
                    print(f"{variant} seed {seed}: failed: {err.strip().splitlines()[-1:]}", flush=True)
                write()
    write()
    for variant, row in report["summary"].items():
        flip = row.get("flip", {})
        print(f"{variant:16s} n={row['runs']} flip {flip.get('mean', 0):.2%} +- {flip.get('stdev', 0):.2%}")


if __name__ == "__main__":
    main()
