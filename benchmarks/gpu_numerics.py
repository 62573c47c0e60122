"""Training numerics on a GPU: `python benchmarks/gpu_numerics.py --data-dir DATA --out FILE [--train DATA]`.

Three optimisation steps of airbench94 and ResNet-18 at their presets' first learning rate, on 1,024 real
training images, in each precision (fp32, bf16 autocast, fp16 autocast with loss scaling), eager and
compiled: are the losses finite and close to fp32 eager's, and which parameters got non-finite gradients
from the first step. gpu_check.py runs the same probes as its `training_numerics` step.

This found, on the first contact with a GPU (an H200), that airbench's compiled bf16/fp16 backward gave
NaN gradients everywhere: its head took torch.amax over the feature map, whose backward compares the input
with the saved max, and Inductor recomputed that input at higher precision than the saved max. Neither
BatchNorm's eps (1e-5) nor BatchNorm in fp32 helped; max-pooling (gradient routed by index) did.
results/gpu_numerics_amax.json is the run before that change, results/gpu_numerics.json the run after.

With --train DATA the fast preset is then trained in full (plan precision) and evaluated. Writes FILE (JSON)
after every probe. On a CPU only the eager probes run (a rehearsal).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # a CPU runs one small eager probe (a rehearsal)
BATCH = 1024 if DEVICE == "cuda" else 64


def probe(images, labels, model_name: str, precision: str, compiled: bool, steps: int = 3) -> dict:
    from kagglecifar import models
    from kagglecifar.training.step import training_step

    torch.manual_seed(0)
    torch._dynamo.reset()
    model = models.create_model(model_name, num_classes=10).to(DEVICE)
    if hasattr(model, "init_from_data"):
        model.init_from_data(images)
    model = model.to(memory_format=torch.channels_last)
    lr = 0.3 if model_name.startswith("airbench") else 0.04  # the fast / gpu presets' first step's rate
    groups = model.param_groups(lr, 0.00133) if hasattr(model, "param_groups") else model.parameters()
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.85, nesterov=True)
    step_model = torch.compile(model) if compiled else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(DEVICE, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(DEVICE) if precision == "fp16" else None
    x = images[:BATCH].permute(0, 3, 1, 2).float().div(255).to(DEVICE).contiguous(memory_format=torch.channels_last)
    y = labels[:BATCH].to(DEVICE)
    losses, bad_grads = [], []
    for step in range(steps):
        if step == 0:  # the first step's gradients, without updating
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(step_model(x), y, label_smoothing=0.2)
            loss.backward()
            bad_grads = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
        _, loss = training_step(step_model, optimizer, x, y, 0.2, autocast, scaler)
        losses.append(float(loss.detach()))
    bad_weights = [n for n, p in model.named_parameters() if not p.isfinite().all()]
    with torch.no_grad(), autocast():
        out = step_model(x).float()
    return {
        "model": model_name,
        "precision": precision,
        "compiled": compiled,
        "losses": [round(v, 4) if v == v else str(v) for v in losses],
        "ok": bool(torch.isfinite(torch.tensor(losses)).all())
        and not bad_weights
        and not bad_grads
        and bool(out.isfinite().all()),
        "first_step_nonfinite_grads": bad_grads[:12],
        "nonfinite_weights": bad_weights[:12],
        "scale": scaler.get_scale() if scaler else None,
    }


def probe_matrix(images, labels, run=None) -> list[dict]:
    """Every probe (airbench94 in each precision, eager and compiled; ResNet-18 compiled in bf16); `run(kind,
    *args)` runs each (default: probe directly)."""
    cases = [("airbench94", p, c) for p in ("fp32", "bf16", "fp16") for c in (False, True)] + [
        ("resnet18", "bf16", True)
    ]
    if DEVICE != "cuda":
        cases = [("airbench94", "fp32", False)]
    if run is None:
        return [probe(images, labels, *case) for case in cases]
    return [run("probes", *case) for case in cases]


@contextlib.contextmanager
def forced_precision(precision: str | None):
    """Training started inside this block gets `precision` whatever the device's plan says (None: the plan's):
    how a GPU that would take bf16 checks the fp16 + GradScaler path of capability-7.x cards."""
    from kagglecifar.training import train as training

    plan_of_device = training.usable_plan
    if precision:
        training.usable_plan = lambda device: dataclasses.replace(plan_of_device(device), precision=precision)
    try:
        yield
    finally:
        training.usable_plan = plan_of_device


def train_fast(
    data_dir: Path,
    runs: Path,
    precision: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    device: str = "auto",
    time_budget: float = 150,
) -> dict:
    """The fast preset trained in this process (in `precision`, forced, when given), then evaluated."""
    from kagglecifar import api
    from kagglecifar.inference.evaluate import read_evaluation
    from kagglecifar.rundir import read_metrics, read_result

    name = f"fast-{precision or 'plan'}"
    with forced_precision(precision):
        api.train(preset="fast", name=name, seed=0, data_dir=str(data_dir), runs_dir=str(runs),
                  time_budget=time_budget, set=list(sets))  # fmt: skip
    api.evaluate(runs / name, tta=["flip", "translate"], data_dir=data_dir, device=device)
    result, metrics = read_result(runs / name), read_metrics(runs / name)
    return {
        "run": name,
        "precision": f"{precision} (forced)" if precision else "the plan's",
        "stopped_reason": result.get("stopped_reason"),
        "epochs": result.get("epochs_run"),
        "warmup_seconds": result.get("warmup_seconds"),
        "train_seconds": round(sum(m.get("train_seconds") or m["seconds"] for m in metrics), 2),
        "train_loss": [m.get("train_loss") for m in metrics],
        "val_accuracy": read_evaluation(runs / name).get("accuracy", {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train", type=Path, help="a full data folder: then train the fast preset")
    p.add_argument("--runs-dir", type=Path, default=Path("/tmp/numerics-runs"))
    args = p.parse_args()
    from kagglecifar.cache import load_split

    train = load_split(args.data_dir, "train")
    images, labels = torch.from_numpy(train.images[:5000]), torch.from_numpy(train.labels[:5000].astype("int64"))
    report: dict = {"machine": common.machine_info(), "probes": [], "training": []}

    def write():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    def run(kind: str, *a):
        started = time.perf_counter()
        try:
            row = probe(images, labels, *a) if kind == "probes" else train_fast(*a)
        except Exception as exc:  # noqa: BLE001  (a failing configuration is a finding)
            row = {"args": [str(v) for v in a], "ok": False, "error": f"{type(exc).__name__}: {exc}"[-1500:],
                   "where": traceback.format_exc(limit=-2)[-1500:]}  # fmt: skip
        row["seconds"] = round(time.perf_counter() - started, 1)
        report[kind].append(row)
        write()
        print(json.dumps(row)[:400], flush=True)
        return row

    rows = probe_matrix(images, labels, run)
    report["failing"] = [
        f"{r.get('model')} {r.get('precision')} compiled={r.get('compiled')}" for r in rows if not r["ok"]
    ]
    write()
    if args.train:
        run("training", args.train, args.runs_dir)
        run("training", args.train, args.runs_dir, "fp16")


if __name__ == "__main__":
    main()
