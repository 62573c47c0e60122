"""Experiment trackers (`train --log tensorboard|wandb|mlflow`): the run's config, per-step loss and learning
rate, per-epoch metrics, the curves and confusion matrix as images and the final result.

The loop calls one hook, `Tracking(event, **values)`; each tracker is a small class behind `Tracker`. Only the
process that writes the run folder logs. What is logged is the run's config and its measurements: never the
environment, the command line's secrets or a Kaggle key. Packages are imported only when asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from kagglecifar.errors import KaggleCifarError

# name -> the package it needs (also the name of kagglecifar's optional extra)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
IMAGES = ("curves.png", "confusion_matrix.png")
STEP_FLUSH = 10  # per-step losses are read off the device ten steps at a time: one sync, not ten


def check_installed(names: list[str]) -> None:
    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise KaggleCifarError(
                f"--log {name}: the {TRACKERS[name]} package is not installed; "
                f"pip install 'kagglecifar[{name}]' (or pip install {TRACKERS[name]})"
            )


class Tracker:
    """What every tracker does; values are plain floats, `step` counts optimizer steps over the whole run."""

    def start(self, run_dir: Path, config: dict) -> None: ...

    def log_steps(self, rows: list[tuple[int, float, float]]) -> None: ...  # (step, loss, lr)

    def log_epoch(self, epoch: int, step: int, row: dict) -> None: ...

    def log_images(self, images: dict[str, Path], step: int) -> None: ...

    def finish(self, result: dict) -> None: ...

    def close(self) -> None: ...


class TensorBoard(Tracker):
    """Event files in RUN_DIR/tensorboard: `tensorboard --logdir runs`."""

    def start(self, run_dir, config):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "    " + json.dumps(config, indent=2).replace("\n", "\n    "))

    def log_steps(self, rows):
        for step, loss, lr in rows:
            self.writer.add_scalar("step/loss", loss, step)
            self.writer.add_scalar("step/lr", lr, step)

    def log_epoch(self, epoch, step, row):
        for key, value in row.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(key, value, epoch)

    def log_images(self, images, step):
        import numpy as np
        from PIL import Image

        for name, path in images.items():
            with Image.open(path) as image:
                self.writer.add_image(name, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def finish(self, result):
        self.writer.add_text("result", "    " + json.dumps(result, indent=2).replace("\n", "\n    "))
        if result.get("best_val_accuracy") is not None:
            self.writer.add_scalar("best_val_accuracy", result["best_val_accuracy"], result["epochs_run"])

    def close(self):
        if hasattr(self, "writer"):
            self.writer.close()


class WandB(Tracker):
    """A W&B run named after the run folder, project $WANDB_PROJECT or kagglecifar; WANDB_MODE=offline keeps it
    on disk (RUN_DIR/wandb) for `wandb sync`. No code, git state or system metadata is sent."""

    def start(self, run_dir, config):
        import wandb

        settings = wandb.Settings(save_code=False, disable_git=True, x_disable_meta=True, x_disable_stats=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "kagglecifar"),
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            settings=settings,
            reinit="create_new",
        )

    def log_steps(self, rows):
        for step, loss, lr in rows:
            self.run.log({"step/loss": loss, "step/lr": lr}, step=step)

    def log_epoch(self, epoch, step, row):
        self.run.log({k: v for k, v in row.items() if v is not None}, step=step)

    def log_images(self, images, step):
        import wandb

        self.run.log({name: wandb.Image(str(path)) for name, path in images.items()}, step=step)

    def finish(self, result):
        self.run.summary.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})

    def close(self):
        if hasattr(self, "run"):
            self.run.finish()


class MLflow(Tracker):
    """An MLflow run in experiment $MLFLOW_EXPERIMENT_NAME or kagglecifar, at $MLFLOW_TRACKING_URI or else a file
    store beside the runs (RUNS_DIR/mlruns: `mlflow ui --backend-store-uri RUNS_DIR/mlruns`)."""

    def start(self, run_dir, config):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3 asks file stores to opt in; they need no server nor database package
            uri = (run_dir.parent / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "kagglecifar")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        self._log(params=list(_flat(config).items()))

    def _log(self, metrics=(), params=()):
        from mlflow.entities import Metric, Param

        now = _millis()
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(key, float(value), now, step) for key, value, step in metrics],
            params=[Param(key, str(value)[:500]) for key, value in params],
        )

    def log_steps(self, rows):
        self._log(metrics=[m for step, loss, lr in rows for m in (("step_loss", loss, step), ("step_lr", lr, step))])

    def log_epoch(self, epoch, step, row):
        self._log(metrics=[(key, value, epoch) for key, value in row.items() if key != "epoch" and value is not None])

    def log_images(self, images, step):
        for path in images.values():
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, result):
        if result.get("best_val_accuracy") is not None:
            self._log(metrics=[("best_val_accuracy", result["best_val_accuracy"], result["epochs_run"])])
        self.client.set_tag(self.run_id, "stopped_reason", result.get("stopped_reason", ""))
        self.status = "FINISHED" if result.get("stopped_reason") != "interrupted" else "KILLED"

    def close(self):
        if hasattr(self, "run_id"):
            self.client.set_terminated(self.run_id, getattr(self, "status", "FAILED"))


CLASSES = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _millis() -> int:
    import time

    return int(time.time() * 1000)


class Tracking:
    """The training loop's one hook: `track("step", step=, loss=, lr=)`, `track("epoch", step=, **row)` and
    `track("end", result=)`; a context that closes every tracker however the run ends. Does nothing without
    trackers (and on every process but the one that writes)."""

    def __init__(self, names: list[str], run_dir: Path, config: dict):
        self.names, self.trackers = list(names), [CLASSES[name]() for name in names]
        self.run_dir, self.config = Path(run_dir), config
        self.pending: list[tuple[int, Any, float]] = []

    def __enter__(self):
        for index, (name, tracker) in enumerate(zip(self.names, self.trackers)):
            try:
                tracker.start(self.run_dir, self.config)
            except Exception as exc:  # its own exception types; one line, and the ones started are closed
                self.trackers = self.trackers[:index]
                self.__exit__()
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise KaggleCifarError(f"--log {name}: could not start ({first})") from None
        return self

    def __exit__(self, *exc):
        for tracker in self.trackers:
            tracker.close()

    def __call__(self, event: str, **values) -> None:
        if not self.trackers:
            return
        if event == "step":  # loss: a tensor still on the device
            self.pending.append((values["step"], values["loss"].detach().float(), values["lr"]))
            if len(self.pending) >= STEP_FLUSH:
                self._flush()
            return
        self._flush()
        if event == "epoch":
            step = values.pop("step")
            for tracker in self.trackers:
                tracker.log_epoch(values["epoch"], step, values)
        elif event == "end":
            result = {k: str(v) if isinstance(v, Path) else v for k, v in values["result"].items()}
            images = {Path(name).stem: self.run_dir / name for name in IMAGES if (self.run_dir / name).is_file()}
            for tracker in self.trackers:
                tracker.log_images(images, values.get("step", 0))
                tracker.finish(result)

    def _flush(self) -> None:
        if not self.pending:
            return
        import torch

        losses = torch.stack([loss for _, loss, _ in self.pending]).tolist()
        rows = [(step, loss, lr) for (step, _, lr), loss in zip(self.pending, losses)]
        self.pending = []
        for tracker in self.trackers:
            tracker.log_steps(rows)
