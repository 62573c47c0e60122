"""Prediction over the test cache: test-time augmentation (TTA), ensembles, junk images; evaluation.

TTA (tta.py): a prediction is the mean softmax over the views of its mode, made per batch on the device, so
memory stays that of one batch. Ensembles: several checkpoints (or run folders, meaning their best.pt) and
probabilities saved earlier with `--save-probs x.npz` are averaged, optionally weighted; their classes agree.

Undecodable test images (the cache's `bad` flag) get a row: the mean probabilities of the decodable ones (the
prior), whose top class is their label (the fallback); confidence 0; listed in `<csv stem>.bad-ids.txt`.

Confidence = the highest averaged class probability. A decodable image whose confidence is below the
out-of-distribution threshold (default 0.5: no class gets half the probability) "looks out-of-distribution";
the competition's test set pads its 10,000 real images with 290,000 junk ones, most of which land there.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kagglecifar import provenance
from kagglecifar.cache import load_split, read_manifest
from kagglecifar.cache.sources import COMPETITION, cache_format
from kagglecifar.checkpoint import load_model, resolve_checkpoint
from kagglecifar.console import note, progress_bar
from kagglecifar.device import device_plan, freed_memory_kept, resolve_device, usable_plan
from kagglecifar.errors import KaggleCifarError, excerpt
from kagglecifar.files import atomic_output, refuse_existing
from kagglecifar.inference import backends, gating, saved_probs
from kagglecifar.inference.batches import HostResults, default_batch_size, device_batches
from kagglecifar.inference.tta import MODES, TTA_VIEWS, View, check_tta_mode, make_view, views_of
from kagglecifar.kaggle_io.submission_csv import read_sample_ids, write_predictions_csv, write_submission

OOD_THRESHOLD = 0.5  # with 10 classes: no class gets half the probability


def default_ood_threshold(num_classes: int) -> float:
    """0.5 for CIFAR-10; five times the uniform probability with more classes (0.05 for 100), where a
    top probability below one half is normal for a real image."""
    return min(OOD_THRESHOLD, 5 / num_classes)


SAVED_PROBS_SUFFIX = ".npz"
SAVE_PROBS_ELSEWHERE = "another --save-probs path"


@dataclass
class Predictions:
    """One row per test id, in ascending id order."""

    ids: np.ndarray  # (N,) int64
    probs: np.ndarray  # (N, C) float32, rows sum to 1
    confidence: np.ndarray  # (N,) float32: highest probability; 0 for undecodable images
    bad: np.ndarray  # (N,) bool: undecodable image, labelled with the fallback
    classes: list[str]
    tta: str = "none"
    images_per_second: float = 0.0
    views: np.ndarray | None = None  # (N,) uint8: views of the TTA mode each row averages (gating); None: all
    tta_fraction: float = 1.0  # share of the decodable images that got every view
    backend: str = "eager"  # what ran the nets (backends.py)

    def views_per_row(self) -> np.ndarray:
        return np.full(len(self.ids), TTA_VIEWS.get(self.tta, 1), np.uint8) if self.views is None else self.views

    def labels(self) -> np.ndarray:
        return np.array(self.classes, dtype=object)[self.probs.argmax(axis=1)]

    @property
    def fallback(self) -> str:
        """The label every undecodable image gets: the class with the highest mean probability."""
        good = ~self.bad
        prior = self.probs[good].mean(axis=0) if good.any() else np.ones(len(self.classes))
        return self.classes[int(prior.argmax())]

    def ood_count(self, threshold: float | None = None) -> int:
        threshold = default_ood_threshold(len(self.classes)) if threshold is None else threshold
        return int(((self.confidence < threshold) & ~self.bad).sum())


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """'2,1' -> [2.0, 1.0], one positive weight per ensemble member."""
    if not text:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise KaggleCifarError(
            f"--weights {excerpt(text)[1:-1]}: expected comma-separated numbers such as 2,1"
        ) from None
    _check_weights(weights, count)
    return weights


def _check_weights(weights: list[float], count: int) -> None:
    if len(weights) != count:
        raise KaggleCifarError(f"--weights: {len(weights)} weights for {count} checkpoints; give one per checkpoint")
    if any(not 0 < w < float("inf") for w in weights):
        raise KaggleCifarError("--weights: every weight must be a positive finite number")


def normalised_weights(weights: list[float]) -> list[float]:
    """Weights summing to 1, computed without overflow (1e308,1e308 -> 0.5,0.5) or underflow to 0."""
    largest = max(weights)
    scaled = [w / largest for w in weights]  # each in (0, 1]: their sum cannot overflow
    total = sum(scaled)
    return [w / total for w in scaled]


def predict_images(
    models: list[tuple[nn.Module, float]],
    images: np.ndarray,
    modes: list[str],
    num_classes: int,
    batch_size: int | None = None,
    device: torch.device = torch.device("cpu"),
    desc: str = "predict",
    progress: bool = True,
    amp: bool = True,
    mode_views: dict[str, dict[View, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Weighted sum over models of each mode's weighted mean softmax over its views, for uint8 NHWC images
    (a memory map is fine). One pass over the images: batches are read in order, moved to the device as uint8
    and scaled there; a view that several modes share is computed once. `amp`: mixed precision where the device
    has it (kagglecifar.device); on CUDA the batches are read, copied and computed overlapping (batches.py).
    `mode_views`: each mode's views and weights when not tta.MODES' (gating's second pass: a mode less its
    first view).
    """
    table = mode_views or {mode: MODES[mode] for mode in modes}
    views = views_of(modes) if mode_views is None else list(dict.fromkeys(v for m in modes for v in table[m]))
    plan = device_plan(device)
    layout = torch.channels_last if plan.channels_last else torch.contiguous_format  # faster convs on CPU too
    batch_size = batch_size or default_batch_size(device, [model for model, _ in models])
    results = HostResults(np.zeros((len(modes), len(images), num_classes), np.float32), device)
    keep = freed_memory_kept(device.type == "cpu")  # the CPU's forward passes: no page faults each batch
    with keep, torch.inference_mode(), progress_bar(len(images), desc, "img", enabled=progress) as bar:
        for rows, x in device_batches(images, batch_size, device):
            sums = torch.zeros((len(modes), len(x), num_classes), dtype=torch.float32, device=device)
            for model, weight in models:
                for view in views:
                    x_view = make_view(x, view).contiguous(memory_format=layout)
                    with plan.autocast(amp):
                        probs = model(x_view).float().softmax(dim=1)
                    for i, mode in enumerate(modes):
                        if view in table[mode]:
                            sums[i].add_(probs, alpha=weight * table[mode][view])
            results.put(rows, sums)  # one copy back per batch, collected when the next batch's is queued
            bar.update(len(x))
        results.collect()
    return {mode: results.out[i] for i, mode in enumerate(modes)}


def predict_gated(
    models: list[tuple[nn.Module, float]],
    images: np.ndarray,
    mode: str,
    num_classes: int,
    fraction: float = gating.DEFAULT_FRACTION,
    *,
    gate: str = gating.DEFAULT_GATE,
    eligible: np.ndarray | None = None,
    others: np.ndarray | None = None,
    batch_size: int | None = None,
    device: torch.device = torch.device("cpu"),
    desc: str = "predict",
    progress: bool = True,
) -> gating.GatedProbs:
    """predict_images for one mode with confidence-gated TTA (gating.py): every image with its first view, then
    the least confident `fraction` of the `eligible` rows with the mode's other views. `others`: the rest of an
    ensemble's weighted probabilities (saved earlier), for the ranking only. Fraction 1 is predict_images."""
    check_tta_mode(mode)
    fraction = gating.check_fraction(fraction)
    full = TTA_VIEWS[mode]
    if fraction >= 1 or full == 1:
        probs = predict_images(models, images, [mode], num_classes, batch_size, device, desc, progress)[mode]
        return gating.GatedProbs(probs, np.full(len(images), full, np.uint8))
    one_view = predict_images(models, images, ["none"], num_classes, batch_size, device, desc, progress)["none"]
    ranked = one_view if others is None else one_view + others
    rows = gating.least_confident(ranked, fraction, gate, eligible)
    probs = one_view.copy()
    views = np.ones(len(images), np.uint8)
    if len(rows):
        rest, desc = gating.other_views(mode), f"{desc} +{full - 1} views"
        chosen = gating.Rows(images, rows)  # read by slices like an image array
        extra = predict_images(models, chosen, [mode], num_classes, batch_size, device, desc, progress, mode_views=rest)  # type: ignore[arg-type]
        probs[rows] = MODES[mode][gating.IDENTITY] * one_view[rows] + extra[mode]
        views[rows] = full
    return gating.GatedProbs(probs, views)


def predict(
    checkpoints: list[Path],
    data_dir: Path,
    *,
    tta: str = "none",
    weights: list[float] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    tta_fraction: float = gating.DEFAULT_FRACTION,
    gate: str = gating.DEFAULT_GATE,
    backend: str = "auto",
) -> Predictions:
    """Predict every id of the test cache with one checkpoint or a weighted ensemble.

    `checkpoints`: run folders, checkpoint files, or .npz probabilities saved earlier (see save_probs).
    `tta_fraction`: the least confident share of the decodable images that gets every view of the TTA mode,
    the rest being predicted from the image alone (gating.py); 1: every image gets every view.
    """
    check_tta_mode(tta)
    tta_fraction = gating.check_fraction(tta_fraction)
    if not checkpoints:
        raise KaggleCifarError("predict: give at least one run folder or checkpoint")
    weights = list(weights) if weights else [1.0] * len(checkpoints)
    _check_weights(weights, len(checkpoints))
    weights = normalised_weights(weights)
    test = load_split(data_dir, "test")
    dev = resolve_device(device)
    backend = backends.resolve_backend(backend, dev)
    plan = usable_plan(dev)

    models, saved, class_lists = [], [], {}
    for source, weight in zip(checkpoints, weights):
        source = Path(source)
        if source.suffix == SAVED_PROBS_SUFFIX and source.is_file():
            loaded = load_probs(source)
            if not np.array_equal(loaded.ids, test.ids):
                raise KaggleCifarError(f"{source}: its ids differ from the test cache in {data_dir}")
            saved.append((loaded, weight))
            class_lists[source] = loaded.classes
        else:
            path = resolve_checkpoint(source)
            model, payload = load_model(path, dev)
            class_lists[path] = list(payload["classes"])
            models.append((backends.prepare(model, backend), weight))
    classes = _agreeing_classes(class_lists)
    if sorted(classes) != sorted(test.classes):  # e.g. a CIFAR-10 run on a CIFAR-100 cache
        shown = ", ".join(test.classes[:5]) + (", ..." if len(test.classes) > 5 else "")
        raise KaggleCifarError(
            f"{next(iter(class_lists))}: trained on {len(classes)} classes ({', '.join(classes[:5])}"
            f"{', ...' if len(classes) > 5 else ''}), the test cache in {data_dir} has "
            f"{len(test.classes)} ({shown}); predict with a run trained on this data"
        )

    if models:
        note(plan.line(compile=False))  # the first line predict prints: what runs where
    started = time.perf_counter()
    probs = np.zeros((len(test), len(classes)), np.float32)
    for earlier, weight in saved:
        probs += weight * earlier.probs
    if models:
        options: dict = dict(gate=gate, eligible=~test.bad, others=probs if saved else None, batch_size=batch_size)
        gated = predict_gated(models, test.images, tta, len(classes), tta_fraction, **options, device=dev)
        probs, views = (gated.probs + probs if saved else gated.probs), gated.views
    else:  # saved probabilities only: their mode and views, not the command's
        tta, views, tta_fraction = saved_probs.ensemble_views([earlier for earlier, _ in saved], test.bad)
    seconds = time.perf_counter() - started
    result = _with_fallback(test.ids, probs, test.bad, classes, tta, len(test) / max(seconds, 1e-9))
    result.views = views
    result.tta_fraction = tta_fraction
    result.backend = backend if models else "saved"
    return result


def _agreeing_classes(class_lists: dict[Path, list[str]]) -> list[str]:
    (first, classes), *others = class_lists.items()
    for path, other in others:
        if list(other) != list(classes):
            raise KaggleCifarError(
                f"{path}: its classes {other} differ from those of {first} {classes}; "
                "an ensemble needs models trained on the same class list"
            )
    return list(classes)


def _with_fallback(ids, probs, bad, classes, tta, images_per_second) -> Predictions:
    good = ~bad
    if good.any():
        probs[bad] = probs[good].mean(axis=0)
    else:
        probs[bad] = 1 / len(classes)
    confidence = probs.max(axis=1)
    confidence[bad] = 0
    return Predictions(np.asarray(ids), probs, confidence, np.asarray(bad, bool), classes, tta, images_per_second)


def save_probs(predictions: Predictions, path: Path, force: bool = False) -> Path:
    """ids, probabilities, confidence, bad flags and classes as .npz (ensembling later) or .csv (a look)."""
    path = Path(path)
    if path.suffix not in (".npz", ".csv"):
        raise KaggleCifarError(f"--save-probs {path}: use a .npz or .csv file name")
    p = predictions
    with atomic_output(path, force, SAVE_PROBS_ELSEWHERE) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    ids=p.ids,
                    probs=p.probs,
                    confidence=p.confidence,
                    bad=p.bad,
                    classes=np.array(p.classes),
                    tta=np.array(p.tta),
                    views=p.views_per_row(),
                    tta_fraction=np.array(p.tta_fraction),
                )
        else:
            import pandas as pd

            table = pd.DataFrame(p.probs, columns=p.classes)
            table.insert(0, "id", p.ids)
            table.insert(1, "confidence", p.confidence)
            table.insert(2, "bad", p.bad.astype(int))
            table.insert(3, "views", p.views_per_row())
            table.to_csv(tmp, index=False, float_format="%.6f")
    return path


def load_probs(path: Path) -> Predictions:
    """Probabilities written by save_probs(.npz); every declared size is checked before anything is allocated.
    Files from before gating have no views: every row had every view."""
    path = Path(path)
    saved_probs.check_headers(path)
    try:
        with np.load(path, allow_pickle=False) as saved:
            ids, probs, confidence, bad = (saved[k] for k in ("ids", "probs", "confidence", "bad"))
            classes, tta = [str(c) for c in saved["classes"]], str(saved["tta"])
            views, fraction = saved_probs.read_views(path, saved, len(ids))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KaggleCifarError(
            f"{path}: not probabilities saved by `kagglecifar predict --save-probs` ({excerpt(first, 100)[1:-1]})"
        ) from None
    saved_probs.check_arrays(path, ids, probs, confidence, bad, classes, tta, MODES)
    loaded = Predictions(ids.astype(np.int64), probs.astype(np.float32), confidence, bad.astype(bool), classes, tta)
    loaded.views, loaded.tta_fraction = views, fraction
    return loaded


def default_submission_path(sources: list[Path], tta: str, folder: Path = Path("submissions")) -> Path:
    """submissions/<run name>[-ensemble]-<tta mode>.csv; saved probabilities alone: the mode they had."""
    first, tta = Path(sources[0]), saved_probs.files_mode(sources) or tta
    if first.is_dir():
        name = first.name
    else:
        name = first.parent.name if first.suffix == ".pt" and first.parent.name else first.stem
    return Path(folder) / f"{name}{'-ensemble' if len(sources) > 1 else ''}-{tta}.csv"


def bad_ids_path(csv_path: Path) -> Path:
    return Path(csv_path).with_suffix(".bad-ids.txt")


@dataclass
class PredictResult:
    predictions: Predictions
    csv_path: Path
    bad_ids_path: Path
    probs_path: Path | None
    ood_threshold: float | None  # None: default_ood_threshold(classes)
    rows: int

    def line(self) -> str:
        p = self.predictions
        probs = f", probabilities {self.probs_path}" if self.probs_path else ""
        views = TTA_VIEWS[p.tta]
        threshold = default_ood_threshold(len(p.classes)) if self.ood_threshold is None else self.ood_threshold
        shown = f"{views} view{'s' if views > 1 else ''}"
        if views > 1 and p.tta_fraction < 1:
            each, good = p.views_per_row(), ~p.bad
            rest = "1" if set(each[good & (each < views)].tolist()) == {1} else "fewer"
            shown += f" on the {int((each >= views).sum()):,} least confident of {int(good.sum()):,} images,"
            shown += f" {rest} on the rest"
        speed = "saved probabilities" if p.backend == "saved" else f"{p.images_per_second:,.0f} images/s ({p.backend})"
        return (
            f"{self.rows} rows, TTA {p.tta} ({shown}), "
            f"{int(p.bad.sum())} undecodable ids -> {p.fallback!r} (listed in {self.bad_ids_path}), "
            f"{p.ood_count(threshold)} look out-of-distribution (confidence < {threshold:g}), "
            f"{speed}{probs} -> {self.csv_path}"
        )


def predict_to_submission(
    sources: list[Path],
    data_dir: Path,
    out: Path,
    *,
    tta: str = "flip",
    weights: list[float] | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    force: bool = False,
    save_probs_path: Path | None = None,
    ood_threshold: float | None = None,
    tta_fraction: float = gating.DEFAULT_FRACTION,
    backend: str = "auto",
) -> PredictResult:
    """`kagglecifar predict`: predictions -> submission CSV (+ bad-ids report, + probabilities).

    A test cache built from other data than the competition's has no sampleSubmission.csv: the CSV then
    has a row per test id (ascending) and, for an image folder, the file of each (submission.py).
    """
    out = Path(out)
    sample = Path(data_dir) / "sampleSubmission.csv"
    refuse_existing(out, force)  # before the long part
    if save_probs_path is not None:
        refuse_existing(save_probs_path, force, SAVE_PROBS_ELSEWHERE)
    built_from, train_from = cache_format(data_dir, "test"), cache_format(data_dir, "train")
    if built_from is None and train_from not in (None, COMPETITION):
        raise KaggleCifarError(
            f"{Path(data_dir) / 'cache'}: no test split (the {train_from} source has no test "
            "images); nothing to predict"
        )
    competition = built_from in (None, COMPETITION)
    sample_ids = read_sample_ids(sample) if competition else None
    gating.check_fraction(tta_fraction)  # before the long part
    backends.resolve_backend(backend, resolve_device(device))
    options: dict = dict(tta=tta, weights=weights, batch_size=batch_size, device=device, tta_fraction=tta_fraction)
    predictions = predict(sources, data_dir, **options, backend=backend)
    if save_probs_path is not None:
        save_probs(predictions, save_probs_path, force)
    if competition:
        write_submission(out, predictions.ids, predictions.labels(), sample, predictions.classes, force, sample_ids)
    else:
        names = read_manifest(data_dir, "test").get("names")
        if names is not None and len(names) != len(predictions.ids):
            raise KaggleCifarError(
                f"{data_dir}: the test cache's file names do not match its images; run `kagglecifar fetch --force`"
            )
        write_predictions_csv(out, predictions.ids, predictions.labels(), predictions.classes, names, force)
    report = bad_ids_path(out)
    bad_ids = predictions.ids[predictions.bad]
    with atomic_output(report, force=True) as tmp:
        tmp.write_text(
            f"# {len(bad_ids)} test images in {data_dir} could not be decoded; each is labelled "
            f"{predictions.fallback!r} (highest mean probability over the decodable images) in {out.name}\n"
            + "".join(f"{i}\n" for i in bad_ids.tolist())
        )
    provenance.write_sources(out, sources, predictions.tta, weights)  # which runs it came from, for submit, compare
    return PredictResult(
        predictions,
        out,
        report,
        Path(save_probs_path) if save_probs_path else None,
        ood_threshold,
        len(predictions.ids) if sample_ids is None else len(sample_ids),
    )
