"""`kagglecifar evaluate`: a run's accuracy on its validation split, per class, without and with each TTA mode,
and its confusion matrix. The one evaluation path: `train` calls it too when a run ends.

Evaluating a run folder's best.pt also records the numbers in the run's evaluation.json (what `compare`
reads): accuracy and per-class accuracy per TTA mode (modes evaluated earlier on the same checkpoint are
kept) and the confusion counts behind confusion_matrix.png."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kagglecifar import plots
from kagglecifar.cache import load_split
from kagglecifar.checkpoint import load_model, resolve_checkpoint
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import write_text_atomic
from kagglecifar.predict import predict_images
from kagglecifar.rundir import is_run, write_figure
from kagglecifar.runtime import resolve_device
from kagglecifar.tta import TTA_VIEWS, check_tta_mode


@dataclass
class EvalReport:
    checkpoint: Path
    classes: list[str]
    count: int  # validation images evaluated (undecodable ones are left out)
    per_class: dict[str, np.ndarray] = field(default_factory=dict)  # TTA mode -> accuracy per class
    overall: dict[str, float] = field(default_factory=dict)  # TTA mode -> accuracy
    confusion_path: Path | None = None
    record_path: Path | None = None  # the run's evaluation.json

    def table(self) -> str:
        modes = list(self.overall)
        width = max(len(c) for c in [*self.classes, "overall"])
        lines = [f"{'class':<{width}}  " + "  ".join(f"{m:>6}" for m in modes)]
        for i, name in enumerate(self.classes):
            lines.append(f"{name:<{width}}  " + "  ".join(f"{self.per_class[m][i]:>6.1%}" for m in modes))
        lines.append(f"{'overall':<{width}}  " + "  ".join(f"{self.overall[m]:>6.1%}" for m in modes))
        return "\n".join(lines)


def evaluate(run: Path, data_dir: Path, tta_modes=("flip", "shift"), *, batch_size: int | None = None,
             device: str = "auto", progress: bool = True) -> EvalReport:
    """Accuracy on the run's validation split without TTA and with each mode.

    Writes the run folder's confusion_matrix.png for the mode with the most views (the one file that
    train also writes at its end, through this same function).
    """
    modes = list(dict.fromkeys(["none", *(check_tta_mode(m) for m in tta_modes)]))
    path = resolve_checkpoint(run)
    dev = resolve_device(device)
    model, ckpt = load_model(path, dev)
    val_ids = ckpt.get("val_ids")
    val_ids = np.asarray([] if val_ids is None else val_ids, np.int64)
    if not len(val_ids):
        raise KaggleCifarError(f"{path}: the run has no validation split (val_ids is empty); "
                               "train with a validation split to evaluate it")
    train = load_split(data_dir, "train")
    rows = np.clip(np.searchsorted(train.ids, val_ids), 0, len(train.ids) - 1)
    if not np.array_equal(train.ids[rows], val_ids):
        raise KaggleCifarError(f"{path}: some validation ids are not in the train cache of {data_dir}; "
                               "was the run trained on another download?")
    rows = np.sort(rows[~train.bad[rows]])
    classes = list(ckpt["classes"])
    if sorted(classes) != sorted(train.classes):
        raise KaggleCifarError(f"{path}: its classes {classes} differ from the train cache's {train.classes}")
    to_checkpoint_index = np.array([classes.index(c) for c in train.classes])
    labels = to_checkpoint_index[train.labels[rows]]

    probs = predict_images([(model, 1.0)], train.images[rows], modes, len(classes), batch_size, dev, "evaluate",
                           progress)
    report = EvalReport(path, classes, len(rows))
    for mode in modes:
        counts = plots.confusion_matrix(labels, probs[mode].argmax(axis=1), len(classes))
        with np.errstate(invalid="ignore", divide="ignore"):
            report.per_class[mode] = np.diag(counts) / counts.sum(axis=1)
        report.overall[mode] = float(np.trace(counts) / max(counts.sum(), 1))
    largest = max(modes, key=TTA_VIEWS.get)
    counts = plots.confusion_matrix(labels, probs[largest].argmax(axis=1), len(classes))
    title = f"{path.parent.name} epoch {ckpt.get('epoch')} validation, TTA {largest}"
    report.confusion_path = write_figure(path.parent / "confusion_matrix.png",
                                         lambda p: plots.plot_confusion_matrix(counts, classes, p, title=title))
    if path.name == "best.pt" and is_run(path.parent):
        report.record_path = _record(report, ckpt, largest, counts)
    return report


EVALUATION = "evaluation.json"


def read_evaluation(run_dir: Path) -> dict:
    """A run's evaluation.json, {} when it has none."""
    try:
        return json.loads((Path(run_dir) / EVALUATION).read_text())
    except (OSError, ValueError):
        return {}


def _record(report: EvalReport, ckpt: dict, mode: str, counts: np.ndarray) -> Path:
    checkpoint = {"file": report.checkpoint.name, "epoch": ckpt.get("epoch"), "val_accuracy": ckpt.get("val_accuracy")}
    previous = read_evaluation(report.checkpoint.parent)
    kept = previous if previous.get("checkpoint") == checkpoint and previous.get("count") == report.count else {}
    record = {"checkpoint": checkpoint, "count": report.count, "classes": report.classes,
              "accuracy": {**kept.get("accuracy", {}), **report.overall},
              "per_class": {**kept.get("per_class", {}),
                            **{m: [None if v != v else float(v) for v in a] for m, a in report.per_class.items()}},
              "confusion": {"tta": mode, "counts": counts.tolist()}}
    return write_text_atomic(report.checkpoint.parent / EVALUATION, json.dumps(record, indent=1) + "\n")
