"""`kagglecifar evaluate`: a run's accuracy per class, without and with each TTA mode, on its validation split
and (test=True) on the cache's test split when that is labelled (CIFAR's test set, test/CLASS/ folders); per
super-class when the cache has them (CIFAR-100, fine labels); the most frequent confusions. Writes into the
run folder a confusion matrix per split and per_class.csv (per_superclass.csv too). The one evaluation path:
`train` calls it too when a run ends (validation only: the test split is for the user to look at)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from kagglecifar.cache import is_complete, load_split
from kagglecifar.checkpoint import load_model, resolve_checkpoint
from kagglecifar.console import table
from kagglecifar.device import resolve_device, usable_plan
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import write_text_atomic
from kagglecifar.inference import gating
from kagglecifar.inference.predict import predict_images
from kagglecifar.inference.tta import TTA_VIEWS, check_tta_mode
from kagglecifar.reports import plots
from kagglecifar.rundir import is_run, write_figure

SHOWN_CLASSES = 20  # with more classes the table lists the worst and the best; per_class.csv has them all
WORST, BEST = 10, 5
TOP_CONFUSIONS = 10
FIGURES = {"validation": "confusion_matrix.png", "test": "confusion_matrix_test.png"}
PER_CLASS_CSV, PER_SUPERCLASS_CSV = "per_class.csv", "per_superclass.csv"
NO_SUPER_CLASS = "(none)"  # the group of classes without a super-class (no image of them in the source)


@dataclass
class SplitScores:
    """One split's confusion matrix per TTA mode (counts[true, predicted]); every accuracy comes from it."""

    name: str  # "validation" or "test"
    counts: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return int(next(iter(self.counts.values())).sum())

    @property
    def overall(self) -> dict[str, float]:
        return {mode: float(np.trace(c) / max(c.sum(), 1)) for mode, c in self.counts.items()}

    @property
    def per_class(self) -> dict[str, np.ndarray]:
        """Accuracy per true class; NaN for a class with no image in the split."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {mode: np.diag(c) / c.sum(axis=1) for mode, c in self.counts.items()}

    def images(self) -> np.ndarray:
        return next(iter(self.counts.values())).sum(axis=1)

    def merged(self, groups: list[int], n_groups: int) -> SplitScores:
        """The same predictions scored by group: right when the predicted class is in the true one's group."""
        return SplitScores(self.name, {m: plots.merge_classes(c, groups, n_groups) for m, c in self.counts.items()})


@dataclass
class EvalReport:
    checkpoint: Path
    classes: list[str]
    splits: dict[str, SplitScores] = field(default_factory=dict)  # "validation" and/or "test"
    super_classes: list[str] | None = None
    super_class_of: list[int] | None = None  # per class: its index in super_classes
    confusion_paths: dict[str, Path] = field(default_factory=dict)
    csv_path: Path | None = None
    record_path: Path | None = None  # the run's evaluation.json

    # The validation split's numbers, as callers have read them all along.
    @property
    def count(self) -> int:
        return self.splits["validation"].count if "validation" in self.splits else 0

    @property
    def overall(self) -> dict[str, float]:
        return self.splits["validation"].overall if "validation" in self.splits else {}

    @property
    def per_class(self) -> dict[str, np.ndarray]:
        return self.splits["validation"].per_class if "validation" in self.splits else {}

    @property
    def confusion_path(self) -> Path | None:
        return self.confusion_paths.get("validation")

    @property
    def largest_mode(self) -> str:
        return max(next(iter(self.splits.values())).counts, key=lambda mode: TTA_VIEWS.get(mode, 0))

    @property
    def main_split(self) -> SplitScores:
        """What the ranking and the top confusions use: the held-out test split when there is one."""
        return self.splits.get("test") or self.splits["validation"]

    def super_splits(self) -> dict[str, SplitScores]:
        if self.super_class_of is None:
            return {}
        return {name: s.merged(self.super_class_of, len(self.super_classes)) for name, s in self.splits.items()}

    def top_confusions(self, k: int = TOP_CONFUSIONS) -> list[plots.Confusion]:
        return plots.top_confusions(self.main_split.counts[self.largest_mode], self.classes, k)

    def line(self) -> str:
        """The one-line summary `evaluate` ends with."""
        parts = []
        for scores in self.splits.values():
            accuracies = ", ".join(f"{mode} {accuracy:.2%}" for mode, accuracy in scores.overall.items())
            parts.append(f"{scores.count} {scores.name} images, accuracy {accuracies}")
        for scores in self.super_splits().values():
            parts.append(
                f"super-class {scores.name} accuracy {scores.overall[self.largest_mode]:.2%} ({self.largest_mode})"
            )
        figures = ", ".join(str(p) for p in self.confusion_paths.values())
        return f"{'; '.join(parts)}; confusion matrix {figures}; per class {self.csv_path}"

    def table(self) -> str:
        """Per class (the worst and best only above SHOWN_CLASSES), per super-class, the top confusions."""
        main, mode = self.main_split, self.largest_mode
        lines = []
        if len(self.classes) <= SHOWN_CLASSES:
            lines += self._table("class", self.classes, self.splits, range(len(self.classes)))
        else:
            accuracy = main.per_class[mode]
            ranked = [int(i) for i in np.argsort(accuracy, kind="stable") if not np.isnan(accuracy[i])]
            where = f"{main.name} accuracy, TTA {mode}"
            lines.append(f"The {WORST} worst of {len(self.classes)} classes ({where}):")
            lines += self._table("class", self.classes, self.splits, ranked[:WORST], overall=False)
            lines.append(f"The {BEST} best:")
            lines += self._table("class", self.classes, self.splits, ranked[::-1][:BEST])
            if self.csv_path:
                lines.append(f"Every class: {self.csv_path}")
        if self.super_class_of is not None:
            names = self.super_classes
            lines.append("Super-classes (a prediction counts when its class is in the true super-class):")
            lines += self._table("super-class", names, self.super_splits(), range(len(names)))
        confusions = self.top_confusions()
        if confusions:
            lines.append(f"Most frequent confusions ({main.name}, TTA {mode}):")
            width = max(len(c.true) for c in confusions)
            lines += [
                f"  {c.true:>{width}} -> {c.predicted}: {c.count} ({c.share:.1%} of {c.true})" for c in confusions
            ]
        return "\n".join(lines)

    def _table(self, what: str, names: list[str], splits: dict[str, SplitScores], rows, overall: bool = True):
        both = len(splits) > 1
        columns = [(split, mode) for split in splits.values() for mode in split.counts]
        header = (what, *(f"{'val' if s.name == 'validation' else s.name} {m}" if both else m for s, m in columns))
        per_class = {s.name: s.per_class for s in splits.values()}
        body = [(names[i], *(_percent(per_class[s.name][m][i]) for s, m in columns)) for i in rows]
        if overall:
            body.append(("overall", *(_percent(s.overall[m]) for s, m in columns)))
        return table(header, body, right=tuple(range(1, len(header))))

    def csv_text(self, super_classes: bool = False) -> str:
        """One row per class (or super-class): its images and its accuracy per split and TTA mode."""
        splits = self.super_splits() if super_classes else self.splits
        names = self.super_classes if super_classes else self.classes
        header = ["super_class" if super_classes else "class"]
        if self.super_class_of is not None and not super_classes:
            header.append("super_class")
        for s in splits.values():
            header += [f"{s.name}_images", *(f"{s.name}_{m}" for m in s.counts)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        per_class = {s.name: (s.images(), s.per_class) for s in splits.values()}
        for i, name in enumerate(names):
            row: list[object] = [name]
            if self.super_class_of is not None and not super_classes:
                row.append(self.super_classes[self.super_class_of[i]])
            for s in splits.values():
                images, accuracy = per_class[s.name]
                row += [
                    int(images[i]),
                    *("" if np.isnan(accuracy[m][i]) else f"{accuracy[m][i]:.4f}" for m in s.counts),
                ]
            writer.writerow(row)
        return out.getvalue()


def _percent(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.1%}"


def evaluate(
    run: Path,
    data_dir: Path,
    tta_modes=("flip", "shift"),
    *,
    test: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
    tta_fraction: float = gating.DEFAULT_FRACTION,
) -> EvalReport:
    """Accuracy on the run's validation split (and, with test, on a labelled test split of the cache) without
    TTA and with each mode; with tta_fraction < 1 also with each mode gated (gating.py), scored as
    `MODE@FRACTION` from the same pass: only the least confident share of the images gets every view.

    Writes into the run folder confusion_matrix.png (validation; train writes it too, through this same
    function) and confusion_matrix_test.png, for the mode with the most views, and per_class.csv.
    """
    modes = list(dict.fromkeys(["none", *(check_tta_mode(m) for m in tta_modes)]))
    tta_fraction = gating.check_fraction(tta_fraction)
    path = resolve_checkpoint(run)
    dev = resolve_device(device)
    usable_plan(dev)
    model, ckpt = load_model(path, dev)
    classes = list(ckpt["classes"])
    train = load_split(data_dir, "train")
    parts = {}  # split -> (images, labels as indices into the checkpoint's classes)
    val_ids = ckpt.get("val_ids")
    val_ids = np.asarray([] if val_ids is None else val_ids, np.int64)
    if len(val_ids):
        rows = np.clip(np.searchsorted(train.ids, val_ids), 0, len(train.ids) - 1)
        if not np.array_equal(train.ids[rows], val_ids):
            raise KaggleCifarError(
                f"{path}: some validation ids are not in the train cache of {data_dir}; "
                "was the run trained on another download?"
            )
        rows = np.sort(rows[~train.bad[rows]])
        parts["validation"] = (train.images[rows], _to_checkpoint(path, classes, train)[train.labels[rows]])
    if test and is_complete(data_dir, "test"):
        held_out = load_split(data_dir, "test")
        if held_out.labels is not None and held_out.manifest.get("labelled"):
            rows = np.flatnonzero(~held_out.bad)
            parts["test"] = (held_out.images[rows], _to_checkpoint(path, classes, held_out)[held_out.labels[rows]])
    if not parts:
        raise KaggleCifarError(
            f"{path}: the run has no validation split (val_ids is empty)"
            + (" and the test split of the cache has no labels" if test else "")
            + "; train with a validation split to evaluate it"
        )

    report = EvalReport(path, classes)
    for name, (images, labels) in parts.items():
        probs = predict_images(
            [(model, 1.0)],
            images,
            modes,
            len(classes),
            batch_size,
            dev,
            "evaluate" if name == "validation" else f"evaluate {name}",
            progress,
        )
        report.splits[name] = SplitScores(
            name,
            {m: plots.confusion_matrix(labels, p.argmax(axis=1), len(classes)) for m, p in _gated(probs, tta_fraction)},
        )
    _add_super_classes(report, train)
    largest = report.largest_mode
    for name, scores in report.splits.items():
        title = f"{path.parent.name} epoch {ckpt.get('epoch')} {name}, TTA {largest}"
        counts = scores.counts[largest]
        report.confusion_paths[name] = write_figure(
            path.parent / FIGURES[name], partial(plots.plot_confusion_matrix, counts, classes, title=title)
        )
    report.csv_path = write_text_atomic(path.parent / PER_CLASS_CSV, report.csv_text())
    if report.super_class_of is not None:
        write_text_atomic(path.parent / PER_SUPERCLASS_CSV, report.csv_text(super_classes=True))
    if path.name == "best.pt" and is_run(path.parent) and "validation" in report.splits:
        report.record_path = _record(report, ckpt)
    return report


EVALUATION = "evaluation.json"


def _evaluation_problem(data: dict) -> str | None:
    from kagglecifar.records import field_problem, is_number, is_str_list

    problem = field_problem(
        data,
        {
            "accuracy": lambda v: isinstance(v, dict) and all(is_number(a) for a in v.values()),
            "per_class": lambda v: isinstance(v, dict) and all(isinstance(a, list) for a in v.values()),
            "classes": is_str_list,
            "confusion": lambda v: isinstance(v, dict),
            "count": lambda v: isinstance(v, int),
            "checkpoint": lambda v: isinstance(v, dict),
        },
    )
    if problem is None and not all(key in data for key in ("checkpoint", "accuracy")):
        problem = "no checkpoint or accuracy"
    counts = (data.get("confusion") or {}).get("counts", [])
    classes = data.get("classes") or []
    if problem is None and counts:
        square = isinstance(counts, list) and all(
            isinstance(row, list) and len(row) == len(counts) and all(is_number(c) and c >= 0 for c in row)
            for row in counts
        )
        if not square or (classes and len(classes) != len(counts)):
            problem = "its confusion counts are not a square table of counts, one row per class"
    return problem


def read_evaluation(run_dir: Path) -> dict | None:
    """A run's evaluation.json (what `compare` reads): {} when it has none, None when it is damaged (said in
    one warning line)."""
    from kagglecifar import records

    try:
        return records.read_json_record(Path(run_dir) / EVALUATION, _evaluation_problem)
    except records.Damaged as exc:
        records.warn_damaged(exc)
        return None


def _record(report: EvalReport, ckpt: dict) -> Path | None:
    """evaluation.json: validation accuracy overall and per class for each TTA mode (modes evaluated earlier on
    the same checkpoint are kept) and the confusion counts of the mode with the most views."""
    checkpoint = {"file": report.checkpoint.name, "epoch": ckpt.get("epoch"), "val_accuracy": ckpt.get("val_accuracy")}
    previous = read_evaluation(report.checkpoint.parent)
    if previous is None:  # damaged: left as it is for the user to look at, not replaced
        return None
    kept = previous if previous.get("checkpoint") == checkpoint and previous.get("count") == report.count else {}
    mode = report.largest_mode

    def plain(by_mode: dict) -> dict:  # what compare reads: every view on every image
        return {m: v for m, v in by_mode.items() if m in TTA_VIEWS}

    def gated(by_mode: dict) -> dict:
        return {m: v for m, v in by_mode.items() if m not in TTA_VIEWS}

    record = {
        "checkpoint": checkpoint,
        "count": report.count,
        "classes": report.classes,
        "accuracy": {**kept.get("accuracy", {}), **plain(report.overall)},
        "gated_accuracy": {**kept.get("gated_accuracy", {}), **gated(report.overall)},
        "per_class": {
            **kept.get("per_class", {}),
            **{m: [None if v != v else float(v) for v in a] for m, a in plain(report.per_class).items()},
        },
        "confusion": {"tta": mode, "counts": report.splits["validation"].counts[mode].tolist()},
    }
    return write_text_atomic(report.checkpoint.parent / EVALUATION, json.dumps(record, indent=1) + "\n")


def gated_name(mode: str, fraction: float) -> str:
    return f"{mode}@{fraction:g}"


def _gated(probs: dict[str, np.ndarray], fraction: float):
    """(name, probabilities) per mode, each mode with several views followed by its gated version."""
    for mode, every_view in probs.items():
        yield mode, every_view
        if fraction < 1 and TTA_VIEWS[mode] > 1:
            yield gated_name(mode, fraction), gating.combine(probs["none"], every_view, mode, fraction).probs


def _to_checkpoint(path: Path, classes: list[str], split) -> np.ndarray:
    """Cache label -> the checkpoint's class index (the same names, possibly in another order)."""
    if sorted(classes) != sorted(split.classes):
        raise KaggleCifarError(f"{path}: its classes {classes} differ from the cache's {split.classes}")
    return np.array([classes.index(c) for c in split.classes])


def _add_super_classes(report: EvalReport, train) -> None:
    """CIFAR-100 with fine labels: the cache's super-class of each of the checkpoint's classes."""
    names, of_class = train.manifest.get("coarse_classes"), train.manifest.get("fine_to_coarse")
    if not names or not of_class or len(of_class) != len(train.classes):
        return
    groups = [of_class[train.classes.index(c)] for c in report.classes]
    if min(groups) < 0:  # classes no image of the source had: a group of their own
        names = [*names, NO_SUPER_CLASS]
        groups = [g if g >= 0 else len(names) - 1 for g in groups]
    report.super_classes, report.super_class_of = list(names), groups
