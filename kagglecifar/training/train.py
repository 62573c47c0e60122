"""`kagglecifar train`: the training loop (nanoGPT / airbench style); the parts it assembles live elsewhere.

    config      TrainConfig = Recipe (fixed for a run) + Session (this invocation)     config.py, recipes.py
    data        stratified train/validation split of the train cache, uint8 in memory  data.py
    model       from the registry; float NCHW in [0, 1] in, it normalises itself       models/
    optimizer   SGD Nesterov, AdamW or Muon; schedules; the step; non-finite loss watch  optim.py, step.py
    ema, lookahead  moving averages of the weights                                    ema.py, lookahead.py
    runtime     device, DDP processes, RNG state, Ctrl-C / SIGTERM / time budget      runtime.py
    run folder  config.yaml, metrics.csv, last.pt, best.pt, curves, result.json       rundir.py, checkpoint.py
    at the end  confusion matrix of best.pt on the validation split                   evaluate.py

Data order and augmentation depend only on (seed, epoch, step) and last.pt carries every RNG state, so a
resumed run (`--resume NAME`) continues exactly where the stopped one was, at any step. Under torchrun
each process trains its shard with DDP; --batch-size is the global batch; rank 0 alone writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from kagglecifar import models, rundir
from kagglecifar.cache import labelled_classes
from kagglecifar.checkpoint import load_checkpoint, make_payload, save_checkpoint
from kagglecifar.config import TrainConfig, check_config, tracker_names
from kagglecifar.config import resume_config as config_for_resume
from kagglecifar.console import interactive, note, progress_bar
from kagglecifar.data.device_loader import choose_loader
from kagglecifar.data.loading import load_train_data
from kagglecifar.device import freed_memory_kept, training_device, usable_plan
from kagglecifar.errors import KaggleCifarError, TrainingDiverged, excerpt
from kagglecifar.files import write_text_atomic
from kagglecifar.inference.predict import predict_images
from kagglecifar.models import to_model_input
from kagglecifar.training import resume, runtime, trackers
from kagglecifar.training.ema import EMA
from kagglecifar.training.lookahead import Lookahead
from kagglecifar.training.optim import learning_rate, make_optimizer, set_learning_rate
from kagglecifar.training.run_state import Progress, TrainResult
from kagglecifar.training.step import Divergence, DivergenceWatch, training_step


def resume_config(run: str | Path, runs_dir: str | Path = "runs", **options) -> TrainConfig:
    """The stopped run's config; only session options (config.Session) may differ from it."""
    run_dir = rundir.find_run(run, runs_dir)
    config = config_for_resume(rundir.read_config(run_dir), str(run), **options)
    config.session.resume, config.session.runs_dir = str(run_dir), str(run_dir.parent)
    return config


def train(config: TrainConfig, make_loader=None, on_epoch=None) -> TrainResult:
    """Train as configured (continuing config.session.resume if set) and write the run folder.

    make_loader(train_images, train_labels, config) -> an object with len() batches per epoch and
    .epoch(epoch, start) yielding (images, labels) replaces the default loader (benchmarks use it to
    compare input pipelines; single process only). Images may be uint8 NHWC or float NCHW.

    on_epoch(metrics_row) -> bool is called once each epoch's row, best.pt and last.pt are written
    (single process only); True stops the run there, stopped_reason "pruned" (`tune` prunes through it).
    A loss no longer finite ends the run (training.step.DivergenceWatch) with no checkpoint of the bad weights,
    "diverged" in result.json and TrainingDiverged raised.
    """
    check_config(config, resuming=bool(config.session.resume))
    if config.session.resume:
        config = resume.guard(config)
    device = training_device(config.session.device)
    with runtime.distributed(device, config.recipe.batch_size) as (rank, world):
        return Training(config, device, rank, world, make_loader, on_epoch).run()


class Training:
    """One session of a run: the state the loop needs, set up from the config (and last.pt when resuming)."""

    def __init__(self, config: TrainConfig, device: torch.device, rank: int, world: int, make_loader, on_epoch=None):
        if on_epoch is not None and world > 1:
            raise ValueError("an on_epoch hook is single-process only")
        self.started, self.on_epoch = time.monotonic(), on_epoch
        self.config, self.recipe, self.device, self.rank, self.world = config, config.recipe, device, rank, world
        self.main, self.cuda = rank == 0, device.type == "cuda"
        self.plan = usable_plan(device)  # refused here when torch has no kernels for the GPU
        self.compiled = config.session.compile and self.plan.compile
        self.channels_last = self.recipe.channels_last and self.plan.channels_last
        self.watch = DivergenceWatch(device)
        self.diverged_at: int | None = None  # the first step whose loss was not finite
        if self.cuda:
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = True
        session = config.session
        resumed = load_checkpoint(Path(session.resume) / "last.pt") if session.resume else None
        if resumed is not None:
            resume.check_resumable(resumed, Path(session.resume) / "last.pt", config)
        # The model first: an unknown model or a missing cache fails before the slow data load.
        self.classes = labelled_classes(Path(session.data_dir), "train")  # models get len(classes) outputs
        self.model = self._build_model(resuming=resumed is not None)
        self.data = load_train_data(Path(session.data_dir), self.recipe.val_fraction, self.recipe.seed)
        if len(self.data.train_labels) < world * 2:
            raise KaggleCifarError(f"{session.data_dir}: only {len(self.data.train_labels)} usable training images")
        init_from_data = getattr(self.model, "init_from_data", None)  # e.g. airbench's whitening stem
        if init_from_data is not None and not resumed:
            init_from_data(torch.from_numpy(self.data.train_images))
        self._training_state(resumed)
        if (
            self.main
        ):  # the first line a run prints (bad options and a damaged last.pt fail before it): what runs where, and how
            note(self.plan.line(self.recipe.amp, session.compile, self.recipe.channels_last))
            for line in config.notes:  # where the recipe came from, and what was not taken
                note(line)
        if self.main and self.recipe.val_fraction and self.data.unvalidated_classes():
            note(self.data.unvalidated_note(self.recipe.val_fraction))
        self.loader = self._make_loader(make_loader)
        self.run_dir = self._run_dir(resumed is not None)
        self.track = trackers.Tracking(tracker_names(session.log) if self.main else [], self.run_dir, config.to_dict())
        if resumed:
            try:
                runtime.set_rng_state(resumed["train_state"]["rng"], self.cuda)
            except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError):
                raise KaggleCifarError(
                    f"{Path(session.resume) / 'last.pt'}: its random-number state is damaged"
                ) from None
        self._wrap_for_steps()
        self.scaler = self.plan.grad_scaler(self.recipe.amp)  # fp16 only
        if self.scaler is not None and resumed and "scaler" in resumed["train_state"]:
            self.scaler.load_state_dict(resumed["train_state"]["scaler"])

    def _build_model(self, resuming: bool) -> torch.nn.Module:
        torch.manual_seed(self.recipe.seed)
        kwargs = self.config.model_kwargs()  # resuming: last.pt holds the weights, no file or hub is needed
        kwargs = models.without_pretrained_weights(self.recipe.model, kwargs) if resuming else kwargs
        model = models.create_model(self.recipe.model, num_classes=len(self.classes), **kwargs)
        if self.main and getattr(model, "loaded_weights", None):  # pretrained weights: say which (timm/ models)
            note(str(model.loaded_weights))
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(self.device).to(memory_format=layout)

    def _training_state(self, resumed: dict | None) -> None:
        """EMA, lookahead, optimizer and progress: fresh, or as last.pt left them."""
        self.ema = EMA(self.model, self.recipe.ema_decay) if self.recipe.ema else None
        self.eval_model = self.ema.module if self.ema else self.model
        self.lookahead = Lookahead(self.model) if self.recipe.lookahead else None
        self.optimizer = make_optimizer(self.model, self.recipe)
        self.progress = Progress()
        if not resumed:
            return
        if resumed["classes"] != self.classes:
            raise KaggleCifarError(
                f"{self.config.session.resume}: run was trained on classes {resumed['classes']}, "
                f"the cache in {self.config.session.data_dir} has {self.classes}"
            )
        state = resumed["train_state"]
        try:
            self.model.load_state_dict(state.get("model_state", resumed["state_dict"]))
            if self.ema:
                self.ema.load_state_dict(resumed["state_dict"])
            if self.lookahead:
                self.lookahead.load_state_dict(state["lookahead"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.progress = Progress(**state["progress"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            raise KaggleCifarError(
                f"{Path(self.config.session.resume) / 'last.pt'}: does not fit this run ({excerpt(first, 120)[1:-1]})"
            ) from None

    def _make_loader(self, make_loader):
        if make_loader is not None:
            if self.world > 1:
                raise ValueError("a custom make_loader is single-process only")
            return make_loader(self.data.train_images, self.data.train_labels, self.config)
        workers = self.config.session.workers
        if workers is None:
            workers = min(8, os.cpu_count() or 1) if self.cuda else 0
        loader, line = choose_loader(
            self.data.train_images,
            self.data.train_labels,
            augment=self.recipe.augment,
            batch_size=self.recipe.batch_size // self.world,
            seed=self.recipe.seed,
            device=self.device,
            workers=workers,
            rank=self.rank,
            world_size=self.world,
            alternate_flip=self.recipe.alternate_flip,
            batched=self.recipe.batched_augment,
        )
        if self.main:
            note(line)
        return loader

    def _run_dir(self, resuming: bool) -> Path:
        """The resumed run's folder, or a new one (rank 0 creates it and tells the others its name)."""
        session = self.config.session
        if resuming:
            return Path(session.resume)
        chosen: list[str | None] = [None]
        if self.main:
            environment = {
                "world_size": self.world,
                "device": str(self.device),
                "torch": torch.__version__,
                "classes": self.classes,
                "train_images": len(self.data.train_labels),
                "val_images": len(self.data.val_labels),
                "excluded_bad_images": self.data.excluded_bad,
            }
            path = rundir.create_run(Path(session.runs_dir), session.name, self.recipe.model, environment)
            write_text_atomic(path / rundir.CONFIG, self.config.to_yaml())
            chosen = [str(path)]
        if self.world > 1:
            torch.distributed.broadcast_object_list(chosen, src=0)
        return Path(chosen[0])

    # ---- the loop ----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        stop = runtime.StopRequest(self.config.session.time_budget, self.started, note)
        reason = "completed"
        with self.track, freed_memory_kept(self.device.type == "cpu"):  # as predict: no page faults each step
            with stop.catching_signals():
                while self.progress.epoch < self.recipe.epochs and reason == "completed":
                    reason = self.train_epoch(stop)
                    if reason == "diverged" or self.progress.epoch_step < len(self.loader):  # stopped mid-epoch
                        break
                    reason = self.end_epoch(reason)
                    if reason == "completed":
                        reason = stop.check(self.world, self.progress.step, at_epoch_end=True)
            return self.finish(reason)

    def _wrap_for_steps(self) -> None:
        """The module the steps call: the model, in DDP with several processes, compiled if asked and the
        device can (once for the whole run: nothing the loop changes alters the graph)."""
        self.step_model: Callable[..., torch.Tensor] = self.model
        if self.world > 1:
            self.step_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.cuda else None
            )
        if self.compiled:
            self.step_model = torch.compile(self.step_model)

    def train_epoch(self, stop: runtime.StopRequest) -> str:
        """Steps until the epoch ends or a stop is asked for; keeps the epoch's sums in self.progress."""
        p, recipe = self.progress, self.recipe
        epoch_started = time.monotonic()
        sums = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0, **p.partial}  # a stopped epoch's too
        loss_sum = torch.tensor(sums["loss"], device=self.device, dtype=torch.float32)  # MPS has no float64
        correct = torch.tensor(sums["correct"], device=self.device, dtype=torch.int64)
        count, steps, reason = sums["count"], len(self.loader), "completed"
        self.model.train()
        # e.g. airbench's whitening bias stops moving after a few epochs: its group's learning rate becomes 0
        frozen: set[str] = getattr(self.model, "frozen_groups", lambda epoch: set())(p.epoch)
        bar = progress_bar(
            steps, f"epoch {p.epoch + 1}/{recipe.epochs}", "batch", enabled=self.main, initial=p.epoch_step
        )
        for images, labels in self.loader.epoch(p.epoch, p.epoch_step):
            set_learning_rate(self.optimizer, learning_rate(recipe, p.step, steps), frozen)
            x, y = to_model_input(images, self.device, self.channels_last), labels.to(self.device, non_blocking=True)
            logits, loss = training_step(
                self.step_model,
                self.optimizer,
                x,
                y,
                recipe.label_smoothing,
                lambda: self.plan.autocast(recipe.amp),
                self.scaler,
                recipe.accumulate,
                recipe.hardest_share,
            )
            self.watch.update(loss, p.step)
            p.step, p.epoch_step = p.step + 1, p.epoch_step + 1
            if p.step == 1 and self.compiled:  # time compiling apart, as the speed records do
                if self.cuda:
                    torch.cuda.synchronize()
                p.warmup_seconds = time.monotonic() - epoch_started
                epoch_started = time.monotonic()
            if self.lookahead:
                self.lookahead.step(p.step, steps * recipe.epochs)
                if p.step == steps * recipe.epochs:
                    self.lookahead.finish()  # the run ends on the slow weights
            if self.ema:
                self.ema.update(p.step - 1)
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.argmax(1) == y).sum()
            count += len(y)
            bar.update(1)
            self.track("step", step=p.step, loss=loss, lr=self.optimizer.param_groups[0]["lr"])
            if DivergenceWatch.due(p.step, p.epoch_step == steps):
                self.diverged_at = self.watch.check(self.model, p.epoch_step == steps, p.step - 1, self.world)
            reason = "diverged" if self.diverged_at is not None else stop.check(self.world, p.step)
            if reason != "completed" and p.epoch_step < steps:
                break
        bar.close()
        if reason == "diverged":  # nothing saved: last.pt and best.pt stay those of the last good epoch
            return reason
        seconds = sums["seconds"] + time.monotonic() - epoch_started
        p.elapsed += time.monotonic() - epoch_started
        p.partial = {"loss": loss_sum.item(), "correct": int(correct.item()), "count": count, "seconds": seconds}
        if p.epoch_step < steps:  # stopped inside the epoch: keep its sums to resume
            self.save_last()
        return reason

    def end_epoch(self, reason: str) -> str:
        """Validation, a metrics row, best.pt when better, last.pt; returns the stop reason (early stopping,
        or pruned when the on_epoch hook says stop)."""
        p = self.progress
        loss, correct, count = runtime.all_reduce(
            [p.partial["loss"], p.partial["correct"], p.partial["count"]], self.world
        )
        eval_started = time.monotonic()
        p.epoch, p.epoch_step = p.epoch + 1, 0
        every, last = self.recipe.val_every, p.epoch == self.recipe.epochs or reason != "completed"
        val_loss, val_acc = self.validate() if last or (every and p.epoch % every == 0) else (None, None)
        row = {
            "epoch": p.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss / count,
            "train_acc": correct / count,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "images_per_s": count / p.partial["seconds"],
            "train_seconds": p.partial["seconds"],  # the steps alone: no validation, no checkpoint
            "seconds": p.partial["seconds"] + time.monotonic() - eval_started,
        }
        p.partial = {}
        p.metrics.append(row)
        self.track("epoch", step=p.step, **row)
        if self.main:
            val = "" if val_acc is None else f", val loss {val_loss:.3f}, val acc {val_acc:.2%}"
            note(
                f"epoch {p.epoch}/{self.recipe.epochs}: train loss {row['train_loss']:.3f}, "
                f"train acc {row['train_acc']:.2%}{val}, {row['images_per_s']:,.0f} images/s"
            )
        if val_acc is not None and (p.best_val_accuracy is None or val_acc > p.best_val_accuracy):
            p.best_val_accuracy, p.best_epoch, p.epochs_without_improvement = val_acc, p.epoch, 0
            if self.main:
                save_checkpoint(self.payload(val_acc), self.run_dir / "best.pt")
        elif val_acc is not None:
            p.epochs_without_improvement += 1
        if self.recipe.patience and p.epochs_without_improvement >= self.recipe.patience:
            reason = "early_stopping"
        if self.main:
            rundir.write_metrics(self.run_dir, p.metrics)
        self.save_last()
        if self.on_epoch is not None and self.on_epoch(dict(row)) and reason == "completed":
            reason = "pruned"
        return reason

    def validate(self) -> tuple[float | None, float | None]:
        """(loss, accuracy) of the evaluated weights on the validation split, each rank scoring its share."""
        images, labels = self.data.val_images, self.data.val_labels
        if len(labels) == 0:
            return None, None
        images, labels = images[self.rank :: self.world], labels[self.rank :: self.world]
        was_training = self.eval_model.training
        self.eval_model.eval()
        probs = predict_images(
            [(self.eval_model, 1.0)],
            images,
            ["none"],
            len(self.classes),
            max(256, self.recipe.batch_size),
            self.device,
            progress=False,
            amp=self.recipe.amp,
        )["none"]
        self.eval_model.train(was_training)
        picked = np.clip(probs[range(len(labels)), labels].astype(np.float64), 1e-12, None)  # host-side sums
        loss, correct, count = runtime.all_reduce(
            [float(-np.log(picked).sum()), float((probs.argmax(1) == labels).sum()), len(labels)], self.world
        )
        return loss / count, correct / count

    # ---- the run folder ------------------------------------------------------------------------------

    def payload(self, val_accuracy: float | None, train_state: dict | None = None) -> dict:
        return make_payload(
            model=self.recipe.model,
            model_kwargs=self.config.model_kwargs(),
            classes=self.classes,
            state_dict=self.eval_model.state_dict(),
            val_ids=[int(i) for i in self.data.val_ids],
            epoch=self.progress.epoch,
            val_accuracy=val_accuracy,
            config=self.config.to_dict(),
            train_state=train_state,
        )

    def save_last(self) -> None:
        if not self.main:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "rng": runtime.rng_state(self.cuda),
            "progress": asdict(self.progress),
            "world_size": self.world,
        }
        if self.ema:
            state["model_state"] = self.model.state_dict()
        if self.lookahead:
            state["lookahead"] = self.lookahead.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        metrics = self.progress.metrics
        save_checkpoint(self.payload(metrics[-1]["val_acc"] if metrics else None, state), self.run_dir / "last.pt")

    def finish(self, reason: str) -> TrainResult:
        p, main = self.progress, self.main
        if reason == "diverged":
            return self.finish_diverged()
        if main and self.recipe.val_fraction == 0 and p.epoch == self.recipe.epochs:
            save_checkpoint(self.payload(None), self.run_dir / "best.pt")  # no validation: the final weights
        if main:
            rundir.write_curves(self.run_dir, p.metrics)
            if len(self.data.val_labels) and (self.run_dir / "best.pt").is_file():
                from kagglecifar.inference.evaluate import evaluate

                evaluate(
                    self.run_dir,
                    Path(self.config.session.data_dir),
                    (),
                    device=str(self.device),
                    progress=interactive(),
                )
        if self.world > 1:
            runtime.check_in_sync(self.model, self.world)
        result = TrainResult(
            self.run_dir, p.best_val_accuracy, p.best_epoch, p.epoch, time.monotonic() - self.started, reason
        )
        if main:
            rundir.write_result(
                self.run_dir, {**asdict(result), "run_dir": str(self.run_dir), "warmup_seconds": p.warmup_seconds}
            )
        self.track("end", step=p.step, result=asdict(result))
        return result

    def finish_diverged(self):
        """result.json says where the loss stopped being finite; TrainingDiverged carries the line to show."""
        p, steps = self.progress, len(self.loader)
        found = Divergence(self.diverged_at, steps, learning_rate(self.recipe, self.diverged_at, steps))
        if self.main:
            rundir.write_curves(self.run_dir, p.metrics)
            seconds = time.monotonic() - self.started
            result = TrainResult(self.run_dir, p.best_val_accuracy, p.best_epoch, p.epoch, seconds, "diverged")
            record = {**asdict(result), "run_dir": str(self.run_dir), "diverged": found.record()}
            rundir.write_result(self.run_dir, record)
        raise TrainingDiverged(found.line(self.run_dir, p.epoch, self.recipe.lr))
