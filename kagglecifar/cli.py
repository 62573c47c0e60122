"""The `kagglecifar` command line: parses options and calls the stage modules, nothing more.

Each command ends with a one-line summary; a KaggleCifarError becomes one line on stderr and exit 1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from kagglecifar.errors import KaggleCifarError

app = typer.Typer(
    help="From nothing to a scored submission in Kaggle's CIFAR-10 competition.\n\n"
    "Typical session:  fetch  ->  train resnet18  ->  predict --tta  ->  submit   (or all at once: run)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_DIR = typer.Option(Path("data"), "--data-dir", help="Where downloads and the image cache live.")
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help="Where training runs are written.")
SUBMISSIONS_DIR = Path("submissions")
COMPETITION = typer.Option("cifar-10", "--competition", help="Kaggle competition slug.")


def summary(line: str) -> None:
    """The one-line summary every command ends with."""
    typer.echo(line)


# ---- fetch ------------------------------------------------------------------------------------

@app.command()
def fetch(
    competition: str = COMPETITION,
    data_dir: Path = DATA_DIR,
    from_dir: Optional[Path] = typer.Option(None, "--from-dir", help="Build the cache from a folder that already "
                                            "holds the competition files (train.7z, test.7z, trainLabels.csv, "
                                            "sampleSubmission.csv); no network at all."),
    force: bool = typer.Option(False, "--force", help="Download again and rebuild the cache even when up to date."),
    keep_png: bool = typer.Option(False, "--keep-png", help="Also write the PNG files to DATA_DIR/train/ and test/."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="PNG decoding processes beside the main one; "
                                         "0 decodes in the main process (default: 1 for big splits on 2+ cores)."),
) -> None:
    """Download the competition files from Kaggle (resumable) and build the uint8 image cache from them."""
    import time

    from kagglecifar import pipeline

    started = time.perf_counter()
    line, _ = pipeline.fetch(competition, data_dir, from_dir=from_dir, force=force, keep_png=keep_png, workers=workers)
    summary(f"fetch: {line}; {time.perf_counter() - started:.1f} s")


# ---- end fetch --------------------------------------------------------------------------------

# ---- models, train ----------------------------------------------------------------------------

@app.command("models")
def models_command(
    width: float = typer.Option(1.0, "--width", help="Width multiplier to size the models at (e.g. 0.25)."),
) -> None:
    """List the models `train` accepts: parameters, GFLOPs per 32x32 image, default GPU batch, options."""
    from kagglecifar import models

    for line in models.model_table(width):
        typer.echo(line)
    summary(f"{len(models.model_names())} models at width {width:g}; GFLOPs = forward pass of one image "
            "(2 per multiply-add); train one with `kagglecifar train MODEL`")


@app.command("train")
def train_command(
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="Model to train (see `kagglecifar models`; "
                                          "default: the preset's)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="gpu: resnet18, 40 epochs, ~95% val accuracy; cpu: "
                                         "simplecnn, ~74% in a few minutes (default: gpu with CUDA, else cpu). "
                                         "Options given explicitly override it."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the training split."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step (all processes together)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd (Nesterov momentum 0.9) or adamw "
                                            "(then lr 2e-3 and weight decay 0.05 unless given)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="onecycle (linear warm-up, linear decay to 0) "
                                           "or cosine (warm-up, cosine decay to 0)."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs",
                                                  help="Linear learning-rate warm-up, in epochs."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="On weights, not on norms and biases."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Cross-entropy label smoothing."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an exponential moving average of the "
                                       "weights; it is what gets evaluated and saved."),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="EMA decay per step (default 0.999)."),
    augment: Optional[str] = typer.Option(None, "--augment", help="none, standard (pad-crop + flip), strong (+ cutout, "
                                          "affine, colour jitter), or an albumentations pipeline saved with A.save "
                                          "(.json/.yaml; see kagglecifar/augment.py)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Stratified validation share of the "
                                                 "train images (default 0.1); 0 trains on all of them."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds the split, initialisation, order and augmentation."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader processes augmenting batches."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (CUDA only)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="channels_last memory format (CUDA only)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop after this many seconds, at a step "
                                                "boundary, with last.pt saved (continue with --resume)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many epochs without a better "
                                           "validation accuracy (default 0: never)."),
    width: Optional[float] = typer.Option(None, "--width", help="Model width multiplier (e.g. 0.25)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Dropout before the classifier."),
    freeze_stages: Optional[int] = typer.Option(None, "--freeze-stages", help="Frozen stages (resnet50-imagenet)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: MODEL-DATE-TIME)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a stopped run (name or folder) from its "
                                         "last.pt; only --time-budget (per session), --workers, --device and "
                                         "--compile may change."),
    data_dir: Path = DATA_DIR,
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Train a model on the cached train images; writes RUNS_DIR/NAME/ (config, metrics, checkpoints, plots).

    Unset options come from the preset. gpu: resnet18, 40 epochs, batch 512, lr 0.2, SGD Nesterov, onecycle,
    weight decay 5e-4, label smoothing 0.1, standard augmentation, bf16, channels_last.
    cpu: simplecnn, 6 epochs, batch 128, lr 0.05, no bf16/channels_last, otherwise the same (~74% in minutes).

    Several GPUs: torchrun --nproc_per_node N -m kagglecifar train MODEL ...
    """
    import os

    from kagglecifar import train

    options = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                   warmup_epochs=warmup_epochs, weight_decay=weight_decay, label_smoothing=label_smoothing, ema=ema,
                   ema_decay=ema_decay, augment=augment, val_fraction=val_fraction, seed=seed, device=device,
                   workers=workers, amp=amp, channels_last=channels_last, compile=compile, time_budget=time_budget,
                   patience=patience, width=width, dropout=dropout, freeze_stages=freeze_stages, name=name,
                   data_dir=data_dir, runs_dir=runs_dir)
    if resume:
        config = train.resume_config(resume, model=model, preset=preset, **options)
    else:
        config = train.make_config(model, preset, **options)
    result = train.train(config)
    if int(os.environ.get("RANK", 0)) == 0:
        summary(f"train: {result.line()}")
    if result.stopped_reason == "interrupted":
        raise typer.Exit(130)


# ---- end models, train ------------------------------------------------------------------------

# ---- predict, evaluate ------------------------------------------------------------------------

DEVICE = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")
BATCH_SIZE = typer.Option(None, "--batch-size", min=1, help="Images per forward pass (default: 1024 on CUDA, 256 on CPU).")


@app.command()
def predict(
    runs: List[Path] = typer.Argument(..., metavar="RUN_OR_CHECKPOINT",
                                      help="Run folders (their best.pt) or checkpoint files; several make an ensemble. "
                                      "Probabilities saved earlier with --save-probs x.npz can join it."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Average over test-time augmented views."),
    tta_mode: str = typer.Option("flip", "--tta-mode", help="flip (2 views) or shift (flips + 2 px shifts, 10 views)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Ensemble weights, one per checkpoint, e.g. 2,1."),
    data_dir: Path = DATA_DIR,
    out: Optional[Path] = typer.Option(None, "--out", help="Submission CSV (default: submissions/RUN[-ensemble]-TTA.csv)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    save_probs: Optional[Path] = typer.Option(None, "--save-probs", help="Also save ids, probabilities and confidence "
                                              "(.npz for ensembling later, or .csv)."),
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
    ood_threshold: float = typer.Option(0.5, "--ood-threshold", min=0.0, max=1.0,
                                        help="Confidence (top probability) below which an image counts as "
                                        "out-of-distribution in the summary."),
) -> None:
    """Predict every test image (undecodable ones get a fallback label) and write a submission CSV."""
    from kagglecifar import predict as prediction

    mode = prediction.check_tta_mode(tta_mode) if tta else "none"
    out = out or prediction.default_submission_path(runs, mode, SUBMISSIONS_DIR)
    result = prediction.predict_to_submission(
        runs, data_dir, out, tta=mode, weights=prediction.parse_weights(weights, len(runs)), batch_size=batch_size,
        device=device, force=force, save_probs_path=save_probs, ood_threshold=ood_threshold)
    summary(f"predict: {result.line()}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder (its best.pt) or checkpoint file."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Also evaluate each TTA mode (flip, shift)."),
    data_dir: Path = DATA_DIR,
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
) -> None:
    """Per-class accuracy on the run's validation split, without and with TTA, and a confusion matrix image."""
    from kagglecifar import predict as prediction

    report = prediction.evaluate(run, data_dir, ("flip", "shift") if tta else (), batch_size=batch_size, device=device)
    typer.echo(report.table())
    accuracies = ", ".join(f"{mode} {accuracy:.2%}" for mode, accuracy in report.overall.items())
    summary(f"evaluate: {report.count} validation images, accuracy {accuracies}; "
            f"confusion matrix {report.confusion_path}")

# ---- end predict, evaluate --------------------------------------------------------------------

# ---- submit, submissions, leaderboard ---------------------------------------------------------

@app.command()
def submit(
    csv_path: Optional[Path] = typer.Argument(None, metavar="CSV", help="Submission file (default: the newest "
                                              "CSV in submissions/)."),
    message: str = typer.Option(..., "-m", "--message", help="Description shown with the submission on Kaggle."),
    competition: str = COMPETITION,
    data_dir: Path = DATA_DIR,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle to score it and print the score."),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="Seconds to wait for the score."),
) -> None:
    """Check a submission CSV locally, upload it to Kaggle and print its public score."""
    from kagglecifar import kaggle_io, submission

    csv_path = csv_path or submission.newest_submission(SUBMISSIONS_DIR)
    result = kaggle_io.submit(csv_path, message, competition, wait=wait, timeout=timeout, data_dir=data_dir)
    if result.status == "complete":
        summary(f"submit: {csv_path} scored {result.public_score:.5f} (public) on {competition}, "
                f"submission {result.ref}, {result.seconds:.1f} s")
    else:
        summary(f"submit: {csv_path} uploaded to {competition} as submission {result.ref}, not scored yet"
                f"{'' if wait else ' (--no-wait)'}; see `kagglecifar submissions`")


@app.command()
def submissions(competition: str = COMPETITION) -> None:
    """Your submissions to the competition: date, file, message, status, public score."""
    from kagglecifar import kaggle_io

    items = kaggle_io.list_submissions(competition)
    if not items:
        return summary(f"submissions: none yet to {competition}; make one with `kagglecifar submit`")
    for line in kaggle_io.submissions_table(items):
        typer.echo(line)
    scores = [s.public_score for s in items if s.public_score is not None]
    best = f", best public score {max(scores):.5f}" if scores else ""
    summary(f"submissions: {len(items)} latest to {competition}{best}")


@app.command()
def leaderboard(
    competition: str = COMPETITION,
    top: int = typer.Option(20, "--top", min=1, help="How many of the leading teams to show."),
) -> None:
    """The top of the public leaderboard and where you stand."""
    from kagglecifar import kaggle_io

    board = kaggle_io.leaderboard(competition, top=top)
    for line in kaggle_io.leaderboard_table(board):
        typer.echo(line)
    summary(f"leaderboard {competition}: {kaggle_io.standing(board)}")


# ---- end submit, submissions, leaderboard -----------------------------------------------------

# ---- run ----------------------------------------------------------------------------------------

@app.command()
def run(
    model: Optional[str] = typer.Argument(None, help="Model to train (default: the preset's; see `kagglecifar models`)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="gpu (ResNet-18, ~95%) or cpu (minutes on a laptop). "
                                         "Default: gpu with CUDA; without it you are told what to expect and offered cpu."),
    data_dir: Path = DATA_DIR,
    runs_dir: Path = RUNS_DIR,
    competition: str = COMPETITION,
    from_dir: Optional[Path] = typer.Option(None, "--from-dir", help="Use competition files already downloaded here."),
    tta: str = typer.Option("flip", "--tta-mode", help="none, flip or shift (see `kagglecifar predict --help`)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: MODEL-PRESET)."),
    message: Optional[str] = typer.Option(None, "-m", "--message", help="Submission message."),
    submit: bool = typer.Option(True, "--submit/--no-submit", help="Upload the CSV at the end."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle's score."),
    force: bool = typer.Option(False, "--force", help="Re-download, rebuild the cache and re-predict even when up to date."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Don't ask; take the CPU preset when there is no GPU."),
) -> None:
    """The whole pipeline: fetch, train, predict with TTA, submit; stages already complete are skipped."""
    import time

    from kagglecifar import pipeline

    started = time.perf_counter()
    confirm = None if yes or not pipeline.interactive() else (lambda q: typer.confirm(q, default=True))
    reports = pipeline.run(model, preset=preset, data_dir=data_dir, runs_dir=runs_dir,
                           submissions_dir=SUBMISSIONS_DIR, competition=competition, from_dir=from_dir, tta=tta,
                           message=message, submit=submit, wait=wait, force=force, name=name, confirm=confirm,
                           echo=typer.echo)
    done = [r.name for r in reports if not r.skipped]
    summary(f"run: {len(done)} of {len(reports)} stages ran ({', '.join(done) or 'all up to date'}) "
            f"in {time.perf_counter() - started:.1f} s")


# ---- end run ------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: one-line errors, non-zero exit, no traceback for user mistakes."""
    try:
        app(args=argv, prog_name="kagglecifar")
    except KaggleCifarError as exc:
        typer.echo(f"kagglecifar: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("kagglecifar: interrupted", err=True)
        sys.exit(130)
