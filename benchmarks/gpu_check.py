"""GPU acceptance in one command: `python benchmarks/gpu_check.py --data-dir DATA` (or `make gpu-check`).

On a CUDA machine it
  1. checks the CUDA-only paths against the CPU: bf16 autocast and channels_last (outputs close to fp32),
     torch.compile (same outputs), pinned-memory copies, and the batched augmentation on the GPU (pixel-equal
     to the CPU engine for the same drawn parameters) with its images/s;
  2. trains each GPU preset (fast, fast96, gpu) for --seeds seeds through `kagglecifar train`, recording
     validation accuracy (none / flip / translate TTA via `kagglecifar evaluate`) and training seconds
     (compile warm-up excluded: the first epoch's first steps are timed apart, see train.py);
  3. times `kagglecifar predict` over the test cache with each TTA mode;
and writes one JSON (results/gpu_check.json by default) with the device name. Without CUDA it says so and
exits 1: these figures only come from a GPU.

`--rehearse` runs the same steps on the CPU, one epoch and one seed per preset, without compile or pinned
memory, and writes nothing unless --out is given: it checks this script (the test suite runs it on tiny
data), so the first GPU session spends its time measuring, not debugging. Its figures mean nothing.
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

PRESETS = ("fast", "fast96", "gpu")
# A rehearsal trains each preset's recipe for one epoch on the CPU, small batches, nothing compiled.
REHEARSAL_TRAIN = ("--device", "cpu", "--epochs", "1", "--batch-size", "16", "--set", "compile=false")


def check_cuda_paths(device: str = "cuda") -> dict:
    """Each CUDA-only path against its CPU/fp32 reference; returns {check: {"ok": bool, ...}}. On "cpu" (a
    rehearsal) compile and pinned memory are left out."""
    import torch

    from kagglecifar import models
    from kagglecifar.data.augment import build_pipeline
    from kagglecifar.data.batch_augment import compile_pipeline

    checks = {}
    torch.manual_seed(0)
    cuda = device == "cuda"
    model = models.create_model("airbench94", num_classes=10, width=0.5).to(device).eval()
    images = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8)
    model.init_from_data(images)
    x = images.permute(0, 3, 1, 2).float().div(255).to(device)
    with torch.no_grad():
        reference = model(x).float()
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16 = model(x.contiguous(memory_format=torch.channels_last)).float()
    agree = (bf16.argmax(1) == reference.argmax(1)).float().mean().item()
    checks["bf16_channels_last"] = {"ok": agree > 0.95, "top1_agreement": agree}
    if cuda:
        with torch.no_grad():
            compiled = torch.compile(model)(x).float()
        diff = (compiled - reference).abs().max().item()
        checks["compile"] = {"ok": diff < 1e-3, "max_abs_diff": diff}
        pinned = images.pin_memory()
        checks["pinned_copy"] = {"ok": torch.equal(pinned.cuda(non_blocking=True).cpu(), images)}
    for preset in ("standard", "cutout", "strong"):
        engine = compile_pipeline(build_pipeline(preset))
        if isinstance(engine, str):  # no batched form (e.g. strong's Affine): training uses CPU workers
            checks[f"batched_{preset}"] = {"ok": True, "not_batched": engine}
            continue
        # The generator lives on the images' device, so draw the parameters once (CPU) and apply them on both.
        params = engine.sample(len(images), (0, 1, 2), "cpu")
        moved = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in p.items()} for p in params]
        on_device = engine.apply(images.to(device), moved).cpu()
        on_cpu = engine.apply(images, params)
        same = torch.equal(on_device, on_cpu)
        checks[f"batched_{preset}"] = {"ok": same, "mismatched_pixels": int((on_device != on_cpu).sum())}
        started = time.perf_counter()
        for step in range(20):
            engine(images.to(device), (0, 1, step))
        if cuda:
            torch.cuda.synchronize()
        checks[f"batched_{preset}"]["images_per_s"] = round(20 * len(images) / (time.perf_counter() - started))
    return checks


def kagglecifar(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "kagglecifar", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gpu_check: `kagglecifar {' '.join(map(str, args))}` failed:\n{done.stderr[-3000:]}")
    return done


def train_presets(data_dir: Path, runs: Path, presets, seeds: int, extra: tuple[str, ...] = ()) -> dict:
    from kagglecifar.inference.evaluate import read_evaluation
    from kagglecifar.rundir import read_metrics, read_result

    results = {}
    for preset in presets:
        rows = []
        for seed in range(seeds):
            name = f"{preset}-seed{seed}"
            kagglecifar(
                "train",
                "--preset",
                preset,
                "--seed",
                seed,
                "--name",
                name,
                "--data-dir",
                data_dir,
                "--runs-dir",
                runs,
                *extra,
            )
            kagglecifar("evaluate", runs / name, "--data-dir", data_dir, "--tta", "flip", "--tta", "translate")
            metrics, result = read_metrics(runs / name), read_result(runs / name)
            evaluation = read_evaluation(runs / name)
            rows.append(
                {
                    "seed": seed,
                    "train_seconds": sum(m["seconds"] for m in metrics),
                    "warmup_seconds": result.get("warmup_seconds"),
                    "wall_seconds": result.get("seconds"),
                    "val_accuracy": evaluation.get("accuracy", {}),
                }
            )
        summary = {}
        for mode in ("none", "flip", "translate"):
            values = [r["val_accuracy"][mode] for r in rows if mode in r["val_accuracy"]]
            if values:
                summary[mode] = {
                    "mean": statistics.mean(values),
                    "stdev": statistics.pstdev(values),
                    "min": min(values),
                    "max": max(values),
                }
        seconds = [r["train_seconds"] for r in rows]
        results[preset] = {
            "runs": rows,
            "accuracy": summary,
            "train_seconds": {"mean": statistics.mean(seconds), "max": max(seconds)},
        }
        print(
            f"{preset}: {summary.get('translate', summary.get('flip', {})).get('mean', 0):.2%} "
            f"(n={seeds}), {statistics.mean(seconds):.1f} s training",
            flush=True,
        )
    return results


def time_predict(data_dir: Path, run: Path, out: Path, extra: tuple[str, ...] = ()) -> dict:
    timings = {}
    for mode in ("none", "flip", "translate", "shift"):
        started = time.perf_counter()
        kagglecifar(
            "predict", run, "--data-dir", data_dir, "--tta", mode, "--out", out / f"{mode}.csv", "--force", *extra
        )
        timings[mode] = round(time.perf_counter() - started, 2)
        print(f"predict --tta {mode}: {timings[mode]} s", flush=True)
    return timings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="a data folder with train and test caches")
    p.add_argument("--seeds", type=int, default=5, help="training runs per preset")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--out", type=Path, help="the JSON to write (default: results/gpu_check.json; none when rehearsing)")
    p.add_argument("--rehearse", action="store_true", help="check this script on the CPU: 1 epoch, 1 seed")
    args = p.parse_args()
    import torch

    if args.rehearse:
        device, seeds, train_extra, predict_extra = "cpu", 1, REHEARSAL_TRAIN, ("--device", "cpu")
    elif not torch.cuda.is_available():
        sys.exit(
            "gpu_check: no CUDA device here; these figures only come from a GPU (--rehearse checks the "
            "script on the CPU)"
        )
    else:
        device, seeds, train_extra, predict_extra = "cuda", args.seeds, (), ()
    out = args.out or (None if args.rehearse else common.RESULTS / "gpu_check.json")
    presets = args.presets.split(",")
    report = {
        "machine": common.machine_info(),
        "command": " ".join(sys.argv),
        "rehearsal": args.rehearse,
        "checks": check_cuda_paths(device),
    }
    print(json.dumps(report["checks"], indent=1), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        runs = Path(scratch) / "runs"
        report["presets"] = train_presets(args.data_dir, runs, presets, seeds, train_extra)
        report["predict_seconds"] = time_predict(
            args.data_dir, runs / f"{presets[0]}-seed0", Path(scratch), predict_extra
        )
    failed = [name for name, check in report["checks"].items() if not check["ok"]]
    if out:
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"gpu_check: wrote {out}")
    if failed:
        sys.exit(f"gpu_check: failed checks: {', '.join(failed)}")


if __name__ == "__main__":
    main()
