"""`kagglecifar train`: the training recipe as one plain loop (nanoGPT / airbench style).

    data     stratified train/validation split of the train cache, uint8 in memory (data.py)
    model    from the registry; float NCHW in [0, 1] in, it normalises itself
    optim    SGD with Nesterov momentum 0.9 (or AdamW); no weight decay on 1-D tensors (norms, biases)
    lr       per step: linear warm-up, then linear decay to 0 ("onecycle") or cosine to 0
    loss     cross-entropy with label smoothing; bf16 autocast and channels_last on CUDA
    ema      optional exponential moving average of the weights (what gets evaluated and saved)
    epoch    validation, a metrics.csv row, last.pt (all needed to resume), best.pt (best val accuracy)
    end      curves.png, confusion_matrix.png of best.pt on the validation split

Run folder RUNS_DIR/NAME/: config.json metrics.csv last.pt best.pt curves.png confusion_matrix.png result.json (how it ended).
Data order and augmentation depend only on (seed, epoch, step) and last.pt carries every RNG state,
so a resumed run (`--resume NAME`) continues exactly where the stopped one was, at any step.
Under torchrun (RANK / WORLD_SIZE set) each process trains on its shard with DDP; --batch-size is
the global batch; rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kagglecifar import cache, models, plots
from kagglecifar.augment import PRESETS as AUGMENT_PRESETS, build_pipeline
from kagglecifar.checkpoint import load_checkpoint, save_checkpoint
from kagglecifar.data import TrainLoader, eval_batches, load_train_data, to_model_input
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_path, write_text_atomic


@dataclass
class TrainConfig:
    model: str = "resnet18"
    width: float | None = None  # model kwargs: None = the model's default
    dropout: float | None = None
    freeze_stages: int | None = None
    epochs: int = 40
    batch_size: int = 512  # global: split across DDP processes
    lr: float = 0.2
    optimizer: str = "sgd"  # sgd (Nesterov, momentum 0.9) | adamw
    schedule: str = "onecycle"  # onecycle (linear warm-up, linear decay) | cosine
    warmup_epochs: float = 2.0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    ema: bool = False
    ema_decay: float = 0.999
    augment: str = "standard"  # a preset of augment.py or a pipeline file
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 8  # DataLoader processes augmenting batches
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # (CUDA only)
    compile: bool = False
    time_budget: float = 0.0  # seconds of this session; 0 = none
    patience: int = 0  # epochs without a better val accuracy before stopping; 0 = never
    data_dir: str = "data"
    runs_dir: str = "runs"
    name: str = ""  # run folder name; "" = MODEL-YYYYmmdd-HHMMSS
    resume: str = ""  # run name or folder to continue
    preset: str = ""


PRESETS: dict[str, dict] = {
    # ResNet-18, ~40 epochs to ~95% val accuracy on one GPU: lr 0.2 for batch 512 (0.1 per 256).
    "gpu": dict(model="resnet18", epochs=40, batch_size=512, lr=0.2, optimizer="sgd", schedule="onecycle",
                warmup_epochs=2, weight_decay=5e-4, label_smoothing=0.1, augment="standard",
                workers=min(8, os.cpu_count() or 1), amp=True, channels_last=True),
    # A few minutes on 2 CPU cores. Measured on the 45k-image train split: simplecnn reached 74% in 6 epochs
    # (5.6 min on one busy core) where resnet18 at width 0.125 reached 64.5% in 3 epochs (7.8 min).
    "cpu": dict(model="simplecnn", epochs=6, batch_size=128, lr=0.05, optimizer="sgd", schedule="onecycle",
                warmup_epochs=0.5, weight_decay=5e-4, label_smoothing=0.1, augment="standard", workers=0,
                amp=False, channels_last=False),
}
ADAMW_DEFAULTS = {"lr": 2e-3, "weight_decay": 0.05}  # used when --optimizer adamw comes without them
MODEL_OPTIONS = ("width", "dropout", "freeze_stages")  # passed to create_model when set
CAN_CHANGE_ON_RESUME = {"time_budget", "workers", "device", "compile", "data_dir", "runs_dir", "resume"}


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float | None
    best_epoch: int | None
    epochs_run: int  # completed epochs, earlier sessions included
    seconds: float  # this session
    stopped_reason: str  # completed | time_budget | early_stopping | interrupted

    def line(self) -> str:
        if self.best_val_accuracy is not None:
            accuracy = f"best val accuracy {self.best_val_accuracy:.2%} (epoch {self.best_epoch})"
        else:
            accuracy = "no epoch completed yet" if self.epochs_run == 0 else "no validation split"
        line = f"{accuracy}, {self.epochs_run} epochs, {_duration(self.seconds)}, {self.stopped_reason}: {self.run_dir}"
        if self.stopped_reason in ("time_budget", "interrupted"):
            line += f"  (continue with --resume {self.run_dir})"
        return line


@dataclass
class Progress:
    """Where a run is; saved in last.pt."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done in the current epoch (non-zero only after a mid-epoch stop)
    step: int = 0
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    elapsed: float = 0.0  # training seconds over all sessions
    partial: dict = field(default_factory=dict)  # running sums of the current epoch
    metrics: list = field(default_factory=list)


def default_preset() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def make_config(model: str | None = None, preset: str | None = None, **options) -> TrainConfig:
    """The preset's values (default: gpu with CUDA, else cpu), then every option that is not None."""
    preset = preset or default_preset()
    if preset not in PRESETS:
        raise KaggleCifarError(f"--preset {preset}: unknown preset; choose one of: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    if model and model != values["model"]:  # the preset's width etc. belong to the preset's model
        values = {key: value for key, value in values.items() if key not in MODEL_OPTIONS}
    if options.get("optimizer") == "adamw":
        values.update(ADAMW_DEFAULTS)
    values.update({key: str(v) if isinstance(v, Path) else v for key, v in options.items() if v is not None})
    if model:
        values["model"] = model
    config = TrainConfig(preset=preset, **values)
    check_config(config)
    return config


def resume_config(run: str | Path, runs_dir: str | Path = "runs", model: str | None = None, **options) -> TrainConfig:
    """The stopped run's config; only the options in CAN_CHANGE_ON_RESUME may differ from it.

    A time budget is per session: it applies again only when given again.
    """
    run_dir = find_run(run, runs_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise KaggleCifarError(f"{run_dir / 'config.json'}: unreadable run config ({exc})") from None
    options = {key: str(v) if isinstance(v, Path) else v for key, v in options.items() if v is not None}
    if model:
        options["model"] = model
    changed = [key for key, value in options.items()
               if key not in CAN_CHANGE_ON_RESUME and saved.get(key) != value]
    if changed:
        options_text = ", ".join("--" + key.replace("_", "-") for key in changed)
        raise KaggleCifarError(f"--resume {run}: cannot change {options_text} of a run "
                               f"(it has {', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
    config = TrainConfig(**{**saved, "time_budget": 0.0, **options, "resume": str(run_dir),
                            "runs_dir": str(run_dir.parent)})
    check_config(config)
    return config


def find_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run folder given as a path or as a name under runs_dir, that has a last.pt."""
    for candidate in (Path(run), Path(runs_dir) / run):
        if (candidate / "last.pt").is_file():
            return candidate
        if candidate.is_dir() and (candidate / "config.json").is_file():
            raise KaggleCifarError(f"{candidate}: run has no last.pt to resume from")
    raise KaggleCifarError(f"--resume {run}: no such run (looked for {Path(runs_dir) / run}/last.pt)")


def check_config(config: TrainConfig) -> None:
    """One clear KaggleCifarError for the first bad option value."""
    def need(ok: bool, option: str, rule: str) -> None:
        if not ok:
            raise KaggleCifarError(f"--{option} {getattr(config, option.replace('-', '_'))}: {rule}")

    need(config.epochs >= 1, "epochs", "must be at least 1")
    need(config.batch_size >= 2, "batch-size", "must be at least 2")
    need(config.lr > 0, "lr", "must be positive")
    need(config.optimizer in ("sgd", "adamw"), "optimizer", "choose sgd or adamw")
    need(config.schedule in ("onecycle", "cosine"), "schedule", "choose onecycle or cosine")
    need(config.warmup_epochs >= 0, "warmup-epochs", "must be 0 or more")
    need(config.weight_decay >= 0, "weight-decay", "must be 0 or more")
    need(0 <= config.label_smoothing < 1, "label-smoothing", "must be in [0, 1)")
    need(0 < config.ema_decay < 1, "ema-decay", "must be in (0, 1)")
    need(0 <= config.val_fraction < 1, "val-fraction", "must be in [0, 1) (0 = train on everything)")
    need(config.workers >= 0, "workers", "must be 0 or more")
    need(config.time_budget >= 0, "time-budget", "must be 0 (none) or more seconds")
    need(config.patience >= 0, "patience", "must be 0 (off) or more epochs")
    need(config.patience == 0 or config.val_fraction > 0, "patience", "needs a validation split (--val-fraction > 0)")
    need(config.width is None or config.width > 0, "width", "must be positive")
    need(not config.name or Path(config.name).name == config.name, "name", "must be a plain folder name")
    if config.name and not config.resume and (Path(config.runs_dir) / config.name).exists():
        raise KaggleCifarError(f"{Path(config.runs_dir) / config.name}: run already exists; continue it with "
                               f"--resume {config.name} or choose another --name")
    if config.augment not in AUGMENT_PRESETS:
        build_pipeline(config.augment)  # raises a clear error for a bad pipeline file
    resolve_device(config.device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise KaggleCifarError(f"--device {name}: choose auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise KaggleCifarError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                               "use --device cpu")
    index = int(name[5:]) if name.startswith("cuda:") else local_rank
    if index >= torch.cuda.device_count():
        raise KaggleCifarError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def model_kwargs(config: TrainConfig) -> dict:
    """What create_model needs besides the name and class count (saved in every checkpoint)."""
    return {key: getattr(config, key) for key in MODEL_OPTIONS if getattr(config, key) is not None}


def checkpoint_model_kwargs(config: TrainConfig) -> dict:
    """model_kwargs for rebuilding from a checkpoint: pretrained weights come from its state_dict, so a
    model that downloads them (resnet50-imagenet) is rebuilt with weights=None, offline."""
    kwargs = model_kwargs(config)
    if "weights" in models.model_options(config.model):
        kwargs["weights"] = None
    return kwargs


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (1 - progress)


def train(config: TrainConfig, make_loader=None) -> TrainResult:
    """Train as configured (continuing config.resume if set) and write the run folder.

    make_loader(train_images, train_labels, config) -> loader with len() batches per epoch and
    .epoch(epoch, start) yielding (images, labels) batches replaces the default loader (benchmarks
    use it to compare input pipelines; single process only). Images may be uint8 NHWC or float NCHW.
    """
    check_config(config)
    started = time.monotonic()
    rank, world = _init_distributed(config)
    try:
        return _train(config, make_loader, rank, world, started)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _train(config, make_loader, rank, world, started) -> TrainResult:
    main = rank == 0
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    resumed = load_checkpoint(find_run(config.resume, config.runs_dir) / "last.pt") if config.resume else None

    # Model first: an unknown model or a missing cache fails before the slow data load.
    classes = cache.read_manifest(Path(config.data_dir), "train")["classes"]
    model, ema, optimizer, progress = _model_and_state(config, classes, device, resumed)
    data = load_train_data(Path(config.data_dir), config.val_fraction, config.seed)
    if len(data.train_labels) < world * 2:
        raise KaggleCifarError(f"{config.data_dir}: only {len(data.train_labels)} usable training images")
    if make_loader is None:
        loader = TrainLoader(data.train_images, data.train_labels, augment=config.augment,
                             batch_size=config.batch_size // world, seed=config.seed, workers=config.workers,
                             device=device, rank=rank, world_size=world)
    elif world > 1:
        raise ValueError("a custom make_loader is single-process only")
    else:
        loader = make_loader(data.train_images, data.train_labels, config)
    steps_per_epoch = len(loader)

    run_dir = _prepare_run_dir(config, resumed is not None, main, world)
    if main:
        write_text_atomic(run_dir / "config.json", json.dumps({"config": asdict(config), "environment": {
            "world_size": world, "device": str(device), "torch": torch.__version__, "classes": classes,
            "train_images": len(data.train_labels), "val_images": len(data.val_labels),
            "excluded_bad_images": data.excluded_bad}}, indent=2) + "\n")

    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None)
    if config.compile:
        step_model = torch.compile(step_model)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and config.amp else contextlib.nullcontext
    channels_last = cuda and config.channels_last
    ema_pairs = _ema_pairs(ema, model) if ema is not None else None
    eval_model = ema if ema is not None else model

    def payload(val_accuracy):
        return {"model": config.model, "model_kwargs": checkpoint_model_kwargs(config), "classes": classes,
                "state_dict": eval_model.state_dict(), "val_ids": [int(i) for i in data.val_ids],
                "epoch": progress.epoch, "val_accuracy": val_accuracy, "config": asdict(config)}

    def save_last():
        if not main:
            return
        last = payload(progress.metrics[-1]["val_acc"] if progress.metrics else None)
        last["train_state"] = {"optimizer": optimizer.state_dict(), "rng": _rng_state(cuda),
                               "progress": asdict(progress), "world_size": world}
        if ema is not None:
            last["train_state"]["model_state"] = model.state_dict()
        save_checkpoint(last, run_dir / "last.pt")

    if resumed:
        _set_rng_state(resumed["train_state"]["rng"], cuda)
    stop = _StopRequest(config.time_budget, started)
    reason = "completed"
    with stop.on_ctrl_c():
        while progress.epoch < config.epochs and reason == "completed":
            epoch_started = time.monotonic()
            # Sums over the epoch, continuing those of a run stopped inside it.
            partial = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0, **progress.partial}
            loss_sum = torch.tensor(partial["loss"], device=device, dtype=torch.float64)
            correct = torch.tensor(partial["correct"], device=device, dtype=torch.int64)
            count = partial["count"]
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=progress.epoch_step, disable=not main, leave=True,
                       desc=f"epoch {progress.epoch + 1}/{config.epochs}", unit="batch", dynamic_ncols=True)
            for images, labels in loader.epoch(progress.epoch, progress.epoch_step):
                lr = learning_rate(config, progress.step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = to_model_input(images, device, channels_last)
                y = labels.to(device, non_blocking=True)
                with autocast():
                    logits = step_model(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    _update_ema(ema_pairs, min(config.ema_decay, (1 + progress.step) / (10 + progress.step)))
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                count += len(y)
                progress.step += 1
                progress.epoch_step += 1
                bar.update(1)
                if progress.epoch_step % 10 == 0 or progress.epoch_step == steps_per_epoch:
                    rate = (count - partial["count"]) * world / (time.monotonic() - epoch_started)
                    bar.set_postfix(loss=f"{loss_sum.item() / count:.3f}", acc=f"{correct.item() / count:.3f}",
                                    img_s=f"{rate:.0f}")
                reason = stop.check(world, progress.step)
                if reason != "completed" and progress.epoch_step < steps_per_epoch:
                    break
            train_seconds = partial["seconds"] + time.monotonic() - epoch_started
            if progress.epoch_step < steps_per_epoch:  # stopped inside the epoch: keep its sums to resume
                progress.partial = {"loss": loss_sum.item(), "correct": int(correct.item()), "count": count,
                                    "seconds": train_seconds}
                progress.elapsed += time.monotonic() - epoch_started
                bar.close()
                save_last()
                break
            loss_total, correct_total, count_total = _all_reduce([loss_sum.item(), correct.item(), count], world)
            eval_started = time.monotonic()
            val_loss, val_acc, _ = _evaluate(eval_model, data.val_images, data.val_labels, config, device,
                                             autocast, rank, world)
            progress.epoch += 1
            progress.epoch_step, progress.partial = 0, {}
            row = {"epoch": progress.epoch, "lr": lr, "train_loss": loss_total / count_total,
                   "train_acc": correct_total / count_total, "val_loss": val_loss, "val_acc": val_acc,
                   "images_per_s": count_total / train_seconds,
                   "seconds": train_seconds + time.monotonic() - eval_started}
            progress.metrics.append(row)
            progress.elapsed += time.monotonic() - epoch_started
            if val_acc is not None:
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                                val_acc=f"{val_acc:.4f}", img_s=f"{row['images_per_s']:.0f}")
            bar.close()
            if val_acc is not None and (progress.best_val_accuracy is None or val_acc > progress.best_val_accuracy):
                progress.best_val_accuracy, progress.best_epoch = val_acc, progress.epoch
                progress.epochs_without_improvement = 0
                if main:
                    save_checkpoint(payload(val_acc), run_dir / "best.pt")
            elif val_acc is not None:
                progress.epochs_without_improvement += 1
            if config.patience and progress.epochs_without_improvement >= config.patience:
                reason = "early_stopping"
            if main:
                _write_metrics(run_dir / "metrics.csv", progress.metrics)
            save_last()
            if reason == "completed":
                reason = stop.check(world, progress.step, at_epoch_end=True)
    if main:
        if config.val_fraction == 0 and progress.epoch == config.epochs:
            save_checkpoint(payload(None), run_dir / "best.pt")  # no validation: the final weights
        _write_figures(run_dir, progress, config, data, classes, device, autocast)
    if world > 1:
        _check_in_sync(model, world)
    result = TrainResult(run_dir, progress.best_val_accuracy, progress.best_epoch, progress.epoch,
                         time.monotonic() - started, reason)
    if main:
        write_text_atomic(run_dir / "result.json", json.dumps({**asdict(result), "run_dir": str(run_dir)}, indent=2) + "\n")
    return result


def finished(run_dir: Path) -> bool:
    """Whether a run ended for good (all epochs, or early stopping) rather than being stopped to resume."""
    try:
        reason = json.loads((Path(run_dir) / "result.json").read_text())["stopped_reason"]
    except (OSError, ValueError, KeyError):
        return False
    return reason in ("completed", "early_stopping")


def _model_and_state(config, classes, device, resumed):
    """(model, EMA copy or None, optimizer, progress): fresh from the seed, or as last.pt left them."""
    torch.manual_seed(config.seed)
    model = models.create_model(config.model, num_classes=len(classes), **model_kwargs(config))
    channels_last = device.type == "cuda" and config.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    ema = _copy_model(model) if config.ema else None
    optimizer = _optimizer(model, config)
    if not resumed:
        return model, ema, optimizer, Progress()
    if resumed["classes"] != classes:
        raise KaggleCifarError(f"{config.resume}: run was trained on classes {resumed['classes']}, "
                               f"the cache in {config.data_dir} has {classes}")
    state = resumed["train_state"]
    model.load_state_dict(state.get("model_state", resumed["state_dict"]))
    if ema is not None:
        ema.load_state_dict(resumed["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    return model, ema, optimizer, Progress(**state["progress"])


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # nanoGPT's rule: decay matrices and kernels, not norms and biases.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def _ema_pairs(ema, model):
    """Matching float tensors of the EMA and the model, and the rest (copied as they are)."""
    ema_state, model_state = ema.state_dict(), model.state_dict()
    floats = [k for k, v in ema_state.items() if v.dtype.is_floating_point]
    others = [k for k in ema_state if k not in floats]
    return ([ema_state[k] for k in floats], [model_state[k] for k in floats],
            [ema_state[k] for k in others], [model_state[k] for k in others])


@torch.no_grad()
def _update_ema(pairs, decay: float) -> None:
    ema_floats, model_floats, ema_others, model_others = pairs
    torch._foreach_lerp_(ema_floats, model_floats, 1 - decay)
    for e, m in zip(ema_others, model_others):
        e.copy_(m)


@torch.inference_mode()
def _evaluate(model, images, labels, config, device, autocast, rank=0, world=1):
    """(val loss, val accuracy, predictions of this rank's share); (None, None, []) without validation."""
    if len(labels) == 0:
        return None, None, np.zeros(0, np.int64)
    was_training = model.training
    model.eval()
    loss, correct, predictions = 0.0, 0, []
    images, labels = images[rank::world], labels[rank::world]
    for x, y in eval_batches(images, labels, max(256, config.batch_size)):
        x = to_model_input(x, device, device.type == "cuda" and config.channels_last)
        y = y.to(device)
        with autocast():
            logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        predictions.append(logits.argmax(1).cpu().numpy())
        correct += int((predictions[-1] == y.cpu().numpy()).sum())
    model.train(was_training)
    loss, correct, count = _all_reduce([loss, correct, len(labels)], world)
    return loss / count, correct / count, np.concatenate(predictions)


def _all_reduce(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


class _StopRequest:
    """Time budget and Ctrl-C, checked at step boundaries (agreed across DDP ranks every 10 steps)."""

    def __init__(self, budget: float, started: float):
        self.budget, self.started, self.interrupted = budget, started, False

    @contextlib.contextmanager
    def on_ctrl_c(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            self.interrupted = True
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C aborts at once
            tqdm.write("kagglecifar: stopping after this step and saving last.pt (Ctrl-C again to abort)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def check(self, world: int, step: int, at_epoch_end: bool = False) -> str:
        over = bool(self.budget) and time.monotonic() - self.started >= self.budget
        code = 2 if self.interrupted else 1 if over else 0
        if world > 1:
            if step % 10 and not at_epoch_end:
                return "completed"
            code = int(_all_reduce_max(code))
        return ("completed", "time_budget", "interrupted")[code]


def _all_reduce_max(value: int) -> int:
    tensor = torch.tensor([value], dtype=torch.int64)
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def _init_distributed(config: TrainConfig) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun with several processes."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1 or "RANK" not in os.environ:
        return 0, 1
    if config.batch_size % world:
        raise KaggleCifarError(f"--batch-size {config.batch_size}: must divide evenly over {world} processes")
    backend = "gloo" if resolve_device(config.device).type == "cpu" else "nccl"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world


def _prepare_run_dir(config: TrainConfig, resuming: bool, main: bool, world: int) -> Path:
    """The run folder: the resumed one, or a new one that must not exist yet (rank 0 picks the name)."""
    if resuming:
        return find_run(config.resume, config.runs_dir)
    runs = Path(config.runs_dir)
    chosen = [None]
    if main:
        if config.name:
            path = runs / config.name
        else:
            base = f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
            path, n = runs / base, 1
            while path.exists():
                n += 1
                path = runs / f"{base}-{n}"
        path.mkdir(parents=True)
        chosen = [str(path)]
    if world > 1:
        torch.distributed.broadcast_object_list(chosen, src=0)
    return Path(chosen[0])


def _rng_state(cuda: bool) -> dict:
    """Every RNG state as tensors and plain numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss}}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict, cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"]), p["gauss"]))
    if cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _check_in_sync(model: torch.nn.Module, world: int) -> None:
    """DDP must leave identical weights on every rank; fail loudly if not."""
    total = float(sum(p.detach().double().sum().item() for p in model.parameters()))
    sums = [None] * world
    torch.distributed.all_gather_object(sums, total)
    if len(set(sums)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {sums}")


METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "seconds"]


def _write_metrics(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row[k] is None else row[k] for k in METRIC_COLUMNS} for row in rows)
    write_text_atomic(path, out.getvalue())


def _write_figures(run_dir, progress, config, data, classes, device, autocast) -> None:
    """curves.png, and confusion_matrix.png of best.pt on the validation split (written aside, then renamed)."""
    def publish(draw, name):
        with atomic_path(run_dir / name) as tmp:
            draw(tmp)

    if progress.metrics:
        publish(lambda p: plots.plot_curves(progress.metrics, p, title=run_dir.name), "curves.png")
    if len(data.val_labels) and (run_dir / "best.pt").is_file():
        best = load_checkpoint(run_dir / "best.pt")
        model = models.create_model(best["model"], num_classes=len(classes), **best["model_kwargs"]).to(device)
        model.load_state_dict(best["state_dict"])
        _, _, predictions = _evaluate(model, data.val_images, data.val_labels, config, device, autocast)
        counts = plots.confusion_matrix(data.val_labels, predictions, len(classes))
        title = f"{run_dir.name} epoch {best['epoch']}"
        publish(lambda p: plots.plot_confusion_matrix(counts, classes, p, title=title), "confusion_matrix.png")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
