"""GPU acceptance in one command: `python benchmarks/gpu_check.py --data-dir DATA --out FOLDER` (or `make gpu-check`).

Made for a first contact with a GPU machine: it installs nothing, writes FOLDER/gpu_check.json after every
step, and records a step that fails (with its error) and goes on, so a command stopped by a time limit keeps
everything measured before. By default it fits one 10-minute command on an H100/H200. On a CUDA machine it

  1. records the device plan (kagglecifar.device: precision, compile, channels_last, DDP backend, kernels);
  2. checks the CUDA-only paths against the CPU: compile (same outputs), channels_last (same outputs), pinned
     copies, and the batched augmentation on the GPU (pixel-equal to the CPU engine for the same drawn
     parameters) with its images/s;
  3. trains each preset of --runs (default fast x 3 seeds, fast96 and gpu once) through `kagglecifar train`
     with a per-run time budget, recording validation accuracy (none / flip / translate TTA via
     `kagglecifar evaluate`), training seconds (the steps alone: compile warm-up, validation and
     checkpoints excluded, see train.py) and the compile warm-up;
  4. compares the first trained run's predictions in fp32 with those in the plan's precision (the share of
     validation images whose label agrees, and both accuracies);
  5. times `kagglecifar predict` over the test cache with each TTA mode, gated (the default share) and on
     every image.

With --mission SECONDS it first runs two of the README's commands exactly as typed, in a scratch folder whose
data/ is --data-dir: `kagglecifar train resnet18` (with --time-budget SECONDS as the only addition) and
`kagglecifar predict --tta`. With --fp16 it trains the fast preset once more on the fp16 + GradScaler path
that capability-7.x cards (T4, V100) take, forced on this GPU. --deadline S skips the steps that would start
after S seconds (each is recorded as skipped), so the report is whole when the command must end.

Without CUDA it says so and exits 1: these figures only come from a GPU. `--rehearse` runs the same steps on
the CPU (one epoch per preset, small batches, nothing compiled or pinned) and writes nothing unless --out is
given: it checks this script (the test suite runs it on tiny data). Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RUNS = "fast=3,fast96=1,gpu=1"
TIME_BUDGET = {"fast": 120, "fast96": 150, "gpu": 150}  # seconds per training run, compile included
# A rehearsal trains each preset's recipe for one epoch on the CPU, small batches, nothing compiled.
REHEARSAL_TRAIN = ("--device", "cpu", "--epochs", "1", "--batch-size", "16", "--set", "compile=false")
# predict's timed variants: a name and the options; "flip" and "translate" gate their extra views (the default
# --tta-fraction), "-every" gives every image every view.
PREDICT_VARIANTS = {
    "none": ("--tta", "none"),
    "flip": ("--tta", "flip"),
    "flip-every": ("--tta", "flip", "--tta-fraction", "1"),
    "translate": ("--tta", "translate"),
    "translate-every": ("--tta", "translate", "--tta-fraction", "1"),
    "shift-every": ("--tta", "shift", "--tta-fraction", "1"),
}


class Report:
    """The JSON report, written again after every step; a failing step is recorded and the next one runs."""

    def __init__(self, path: Path | None, header: dict):
        self.path, self.data = path, {**header, "steps": {}}
        self.write()

    def step(self, name: str, action):
        started = time.perf_counter()
        try:
            value = action()
            self.data["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - started, 2), **value}
        except Exception as exc:  # noqa: BLE001  (every failure is a finding; the next step still runs)
            value = None
            error = f"{type(exc).__name__}: {exc}".strip()
            self.data["steps"][name] = {
                "ok": False,
                "seconds": round(time.perf_counter() - started, 2),
                "error": error[-4000:],
                "where": traceback.format_exc(limit=-3)[-2000:],
            }
            print(f"gpu_check: step {name} failed: {error.splitlines()[0] if error else ''}", flush=True)
        self.write()
        return value

    def failed(self) -> list[str]:
        return [name for name, step in self.data["steps"].items() if not step["ok"]]

    def write(self) -> None:
        if self.path is None:
            return
        from kagglecifar.files import write_text_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.data, indent=1) + "\n")


def plan_of(device: str) -> dict:
    import dataclasses

    from kagglecifar.device import device_plan

    plan = device_plan(device)
    return {"plan": dataclasses.asdict(plan), "line": plan.line(compile=True)}


def check_cuda_paths(device: str = "cuda") -> dict:
    """Each device path against its CPU/contiguous reference: {"checks": {check: {"ok": bool, ...}}}; raises
    when one fails (after all ran). On "cpu" (a rehearsal) compile and pinned memory are left out."""
    import torch

    from kagglecifar import models
    from kagglecifar.data.augment import build_pipeline
    from kagglecifar.data.batch_augment import compile_pipeline
    from kagglecifar.device import device_plan

    checks = {}
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    model = models.create_model("airbench94", num_classes=10, width=0.5).to(device).eval()
    images = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8)
    model.init_from_data(images)
    x = images.permute(0, 3, 1, 2).float().div(255).to(device)
    with torch.no_grad():
        reference = model(x.contiguous()).float()
        channels_last = model(x.contiguous(memory_format=torch.channels_last)).float()
    diff = (channels_last - reference).abs().max().item()
    checks["channels_last"] = {"ok": diff < 1e-3, "max_abs_diff": diff}
    if cuda and device_plan(device).compile:
        with torch.no_grad():
            compiled = torch.compile(model)(x).float()
        diff = (compiled - reference).abs().max().item()
        checks["compile"] = {"ok": diff < 1e-3, "max_abs_diff": diff}
    if cuda:
        pinned = images.pin_memory()
        checks["pinned_copy"] = {"ok": torch.equal(pinned.to(device, non_blocking=True).cpu(), images)}
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
        checks[f"batched_{preset}"] = {
            "ok": torch.equal(on_device, on_cpu),
            "mismatched_pixels": int((on_device != on_cpu).sum()),
        }
        started = time.perf_counter()
        for step in range(20):
            engine(images.to(device), (0, 1, step))
        if cuda:
            torch.cuda.synchronize()
        checks[f"batched_{preset}"]["images_per_s"] = round(20 * len(images) / (time.perf_counter() - started))
    failed = [name for name, check in checks.items() if not check["ok"]]
    if failed:
        raise AssertionError(f"failed checks: {', '.join(failed)}: {json.dumps(checks)}")
    return {"checks": checks}


def training_numerics(data_dir: Path) -> dict:
    """gpu_numerics.py's probes: three steps of airbench94 in each precision, eager and compiled (and ResNet-18
    compiled in bf16); raises when a loss or a gradient is not finite."""
    import gpu_numerics
    import torch

    from kagglecifar.cache import load_split

    train = load_split(data_dir, "train")
    images = torch.from_numpy(train.images[: gpu_numerics.BATCH])
    labels = torch.from_numpy(train.labels[: gpu_numerics.BATCH].astype("int64"))
    rows = gpu_numerics.probe_matrix(images, labels)
    failed = [f"{r['model']} {r['precision']}{' compiled' if r['compiled'] else ''}" for r in rows if not r["ok"]]
    if failed:
        raise AssertionError(f"non-finite training in: {', '.join(failed)}: {json.dumps(rows)}")
    return {"probes": rows}


def kagglecifar(logs: Path | None, name: str, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`kagglecifar ARGS` in a fresh process; its output goes to logs/NAME.log; a failure raises its last lines."""
    done = subprocess.run(
        [sys.executable, "-m", "kagglecifar", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{name}.log").write_text(f"$ kagglecifar {' '.join(map(str, args))}\n{done.stdout}{done.stderr}")
    if done.returncode:
        raise RuntimeError(f"`kagglecifar {' '.join(map(str, args))}` exit {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def train_run(data_dir: Path, runs: Path, logs, preset: str, seed: int, extra: tuple[str, ...]) -> dict:
    from kagglecifar.inference.evaluate import read_evaluation
    from kagglecifar.rundir import read_metrics, read_result

    name = f"{preset}-seed{seed}"
    budget = ("--time-budget", TIME_BUDGET.get(preset, 150))
    trained = kagglecifar(logs, f"train-{name}", "train", "--preset", preset, "--seed", seed, "--name", name,
                "--data-dir", data_dir, "--runs-dir", runs, *budget, *extra)  # fmt: skip
    kagglecifar(logs, f"evaluate-{name}", "evaluate", runs / name, "--data-dir", data_dir, "--tta", "flip",
                "--tta", "translate", *extra[:2])  # fmt: skip
    metrics, result = read_metrics(runs / name), read_result(runs / name)
    return {
        "preset": preset,
        "seed": seed,
        "epochs": result.get("epochs_run"),
        "stopped_reason": result.get("stopped_reason"),
        "train_seconds": sum(m.get("train_seconds") or m["seconds"] for m in metrics),
        "warmup_seconds": result.get("warmup_seconds"),
        "wall_seconds": result.get("seconds"),
        "val_accuracy": read_evaluation(runs / name).get("accuracy", {}),
        "plan_line": next((line for line in trained.stderr.splitlines() if line.startswith("device ")), None),
    }


def mission(data_dir: Path, logs, budget: float, extra: tuple[str, ...]) -> dict:
    """`kagglecifar train resnet18` and `kagglecifar predict --tta` as typed, in a folder whose data/ is
    data_dir; the training gets --time-budget (and, rehearsing, the CPU's options) and nothing else."""
    from kagglecifar.rundir import read_metrics, read_result

    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "data").symlink_to(Path(data_dir).resolve())
        started = time.perf_counter()
        trained = kagglecifar(logs, "mission-train", "train", "resnet18", "--time-budget", budget, *extra, cwd=home)
        train_wall = time.perf_counter() - started
        run = next(p for p in (Path(home) / "runs").iterdir() if p.is_dir())
        result, metrics = read_result(run), read_metrics(run)
        finished = result.get("stopped_reason") == "completed"
        started = time.perf_counter()
        # A run stopped by the budget is not "finished": predict then names it.
        predicted = kagglecifar(logs, "mission-predict", "predict", *([] if finished else [run]), "--tta",
                                *extra[:2], cwd=home)  # fmt: skip
        predict_wall = time.perf_counter() - started
        return {
            "train_command": "kagglecifar train resnet18" + ("" if finished else " (stopped by --time-budget)"),
            "plan_line": next((line for line in trained.stderr.splitlines() if line.startswith("device ")), None),
            "epochs_run": result.get("epochs_run"),
            "stopped_reason": result.get("stopped_reason"),
            "best_val_accuracy": result.get("best_val_accuracy"),
            "epoch_seconds": [round(m.get("train_seconds") or m["seconds"], 2) for m in metrics],
            "images_per_s": [m.get("images_per_s") for m in metrics],
            "train_wall_seconds": round(train_wall, 1),
            "predict_command": "kagglecifar predict --tta" + ("" if finished else " RUN"),
            "predict_wall_seconds": round(predict_wall, 1),
            "predict_line": (predicted.stdout.strip().splitlines() or [""])[-1],
        }


def fp16_path(data_dir: Path, runs: Path, extra: tuple[str, ...], rehearse: bool = False) -> dict:
    """The fast preset trained on the fp16 autocast + GradScaler path (forced: this GPU would take bf16), in
    this process (gpu_numerics.train_fast); raises when the run did not complete. A rehearsal keeps the CPU's
    fp32 (fp16 convolutions crawl on a CPU): it checks the plumbing only."""
    import gpu_numerics

    options = dict(zip(extra[::2], extra[1::2]))
    sets = [f"{k.lstrip('-').replace('-', '_')}={v}" for k, v in options.items() if k != "--set"]
    sets += [v for k, v in options.items() if k == "--set"]
    precision = "fp32" if rehearse else "fp16"
    row = gpu_numerics.train_fast(
        data_dir, runs, precision, sets, device=options.get("--device", "auto"), time_budget=TIME_BUDGET["fast"]
    )
    if row["stopped_reason"] != "completed":
        raise RuntimeError(f"the fp16 run stopped early: {row['stopped_reason']}")
    # A finite loss that never falls (2.316 every epoch, seen once on an H200) is a broken path too.
    losses = [loss for loss in row["train_loss"] if loss is not None]
    if not rehearse and (len(losses) < 2 or losses[-1] > 0.9 * losses[0]):
        raise RuntimeError(f"the fp16 run did not learn: train losses {losses}, accuracy {row['val_accuracy']}")
    return row


def summarise(report: Report) -> dict:
    """Per preset: accuracy (mean, stdev, min, max over its runs) for each TTA mode and training seconds."""
    by_preset: dict[str, list[dict]] = {}
    for step in report.data["steps"].values():
        if step["ok"] and "preset" in step:
            by_preset.setdefault(step["preset"], []).append(step)
    summary = {}
    for preset, rows in by_preset.items():
        accuracy = {}
        for mode in ("none", "flip", "translate"):
            values = [r["val_accuracy"][mode] for r in rows if mode in r["val_accuracy"]]
            if values:
                accuracy[mode] = {
                    "mean": statistics.mean(values),
                    "stdev": statistics.pstdev(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        seconds = [r["train_seconds"] for r in rows]
        summary[preset] = {
            "accuracy": accuracy,
            "train_seconds": {"mean": statistics.mean(seconds), "max": max(seconds)},
        }
    return summary


def precision_check(run: Path, data_dir: Path, device: str) -> dict:
    """The trained run's validation predictions in fp32 and in the plan's precision: label agreement."""
    import numpy as np
    import torch

    from kagglecifar.cache import load_split
    from kagglecifar.checkpoint import load_model, resolve_checkpoint
    from kagglecifar.device import device_plan
    from kagglecifar.inference.predict import predict_images

    model, payload = load_model(resolve_checkpoint(run), torch.device(device))
    train = load_split(data_dir, "train")
    rows = np.searchsorted(train.ids, np.asarray(payload["val_ids"], np.int64))
    images, labels = train.images[rows], train.labels[rows]
    args = ([(model, 1.0)], images, ["none"], len(payload["classes"]))
    fp32 = predict_images(*args, device=torch.device(device), progress=False, amp=False)["none"].argmax(1)
    mixed = predict_images(*args, device=torch.device(device), progress=False, amp=True)["none"].argmax(1)
    agreement = float((fp32 == mixed).mean())
    return {
        "precision": device_plan(device).precision,
        "images": len(labels),
        "label_agreement": agreement,
        "fp32_accuracy": float((fp32 == labels).mean()),
        "mixed_accuracy": float((mixed == labels).mean()),
    }


def time_predict(data_dir: Path, run: Path, scratch: Path, logs, extra: tuple[str, ...]) -> dict:
    from kagglecifar.cache import load_split

    timings = {}
    for name, options in PREDICT_VARIANTS.items():
        started = time.perf_counter()
        kagglecifar(logs, f"predict-{name}", "predict", run, "--data-dir", data_dir, *options, "--out",
                    scratch / f"{name}.csv", "--force", *extra)  # fmt: skip
        timings[name] = round(time.perf_counter() - started, 2)
        print(f"predict {' '.join(options)}: {timings[name]} s (process included)", flush=True)
    return {"test_images": len(load_split(data_dir, "test").ids), "predict_seconds": timings}


def test_set_from_train(data_dir: Path, scratch: Path, count: int) -> Path:
    """A data folder whose train cache is data_dir's and whose test split is `count` train images drawn at
    random (real images, so predict's confidences and its gated share behave as on the competition's test)."""
    import numpy as np

    from kagglecifar.cache import load_split, split_dir, write_split
    from kagglecifar.competition import SAMPLE_SUBMISSION

    train = load_split(data_dir, "train")
    folder = scratch / "big-test-data"
    split_dir(folder, "train").parent.mkdir(parents=True, exist_ok=True)
    split_dir(folder, "train").symlink_to(split_dir(data_dir, "train").resolve())
    rows = np.sort(np.random.default_rng(0).integers(0, len(train.ids), count))
    ids = np.arange(1, count + 1)
    write_split(folder, "test", train.images[rows], ids, train.classes)
    (folder / SAMPLE_SUBMISSION).write_text("id,label\n" + "".join(f"{i},{train.classes[0]}\n" for i in ids))
    return folder


def parse_runs(text: str) -> list[tuple[str, int]]:
    """'fast=3,gpu=1' -> [(fast, 0), (fast, 1), (fast, 2), (gpu, 0)]; a bare name runs once."""
    runs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        preset, _, count = part.partition("=")
        runs += [(preset, seed) for seed in range(int(count or 1))]
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="a data folder with train and test caches")
    p.add_argument("--runs", default=RUNS, help=f"PRESET=SEEDS,... to train (default {RUNS})")
    p.add_argument("--out", type=Path, help="folder for gpu_check.json and logs/ (default: benchmarks/results; "
                   "none when rehearsing)")  # fmt: skip
    p.add_argument("--logs", type=Path, help="folder for the commands' logs (default: FOLDER/logs)")
    p.add_argument("--mission", type=float, default=0, metavar="SECONDS",
                   help="run `train resnet18` (with this --time-budget) and `predict --tta` as typed")  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="also train the fast preset on the fp16 + GradScaler path")
    p.add_argument("--deadline", type=float, default=0, help="skip steps that would start after this many seconds")
    p.add_argument("--rehearse", action="store_true", help="check this script on the CPU: 1 epoch per preset")
    p.add_argument(
        "--test-images",
        type=int,
        default=0,
        metavar="N",
        help="time predict over N test images drawn from the train images (default: the test cache)",
    )
    p.add_argument("--skip", default="", help="steps to leave out, e.g. device_paths,training_numerics")
    args = p.parse_args()
    started = time.perf_counter()
    import torch

    if args.rehearse:
        device, train_extra, predict_extra = "cpu", REHEARSAL_TRAIN, ("--device", "cpu")
        runs = [(preset, 0) for preset in dict.fromkeys(preset for preset, _ in parse_runs(args.runs))]
    elif not torch.cuda.is_available():
        sys.exit(
            "gpu_check: no CUDA device here; these figures only come from a GPU (--rehearse checks the "
            "script on the CPU)"
        )
    else:
        device, train_extra, predict_extra, runs = "cuda:0", (), (), parse_runs(args.runs)
    out = args.out or (None if args.rehearse else common.RESULTS)
    logs = args.logs or (out / "logs" if out else None)
    report = Report(
        out / "gpu_check.json" if out else None,
        {"machine": common.machine_info(), "command": " ".join(sys.argv), "rehearsal": args.rehearse},
    )
    report.step("plan", lambda: plan_of(device))
    print(report.data["steps"]["plan"].get("line", ""), flush=True)
    skip = set(filter(None, args.skip.split(",")))

    def step(name: str, action):
        if name in skip:
            report.data.setdefault("skipped", []).append(name)
            report.write()
            return None
        if args.deadline and time.perf_counter() - started > args.deadline:
            report.data.setdefault("skipped_after_deadline", []).append(name)
            report.write()
            return None
        return report.step(name, action)

    step("device_paths", lambda: check_cuda_paths(device))
    step("training_numerics", lambda: training_numerics(args.data_dir))
    if args.mission:
        mission_extra = REHEARSAL_TRAIN[:4] if args.rehearse else ()  # the device, and one epoch
        row = step("mission", lambda: mission(args.data_dir, logs, args.mission, mission_extra))
        if row:
            print(f"mission: {row['train_command']}: {row['epochs_run']} epochs, best {row['best_val_accuracy']}; "
                  f"{row['predict_command']}: {row['predict_wall_seconds']} s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir, trained = Path(scratch) / "runs", []
        for index, (preset, seed) in enumerate(runs):
            row = step(
                f"train {preset} seed {seed}",
                lambda preset=preset, seed=seed: train_run(args.data_dir, runs_dir, logs, preset, seed, train_extra),
            )
            if row:
                trained.append(runs_dir / f"{preset}-seed{seed}")
                print(f"{preset} seed {seed}: {row['val_accuracy']}, {row['train_seconds']:.1f} s training", flush=True)
            report.data["summary"] = summarise(report)
            report.write()
            if args.fp16 and index == 0:  # after the first run: the one most worth having comes first
                row = step("fp16 path", lambda: fp16_path(args.data_dir, runs_dir, train_extra, args.rehearse))
                if row:
                    print(f"fp16 path: {row['val_accuracy']}, {row['train_seconds']:.1f} s training", flush=True)
        if trained:
            step("precision", lambda: precision_check(trained[0], args.data_dir, device))
            predict_data = args.data_dir
            if args.test_images:
                predict_data = test_set_from_train(args.data_dir, Path(scratch), args.test_images)
            step("predict", lambda: time_predict(predict_data, trained[0], Path(scratch), logs, predict_extra))
    if out:
        print(f"gpu_check: wrote {report.path}")
    if report.failed():
        sys.exit(f"gpu_check: failed steps: {', '.join(report.failed())}")


if __name__ == "__main__":
    main()
