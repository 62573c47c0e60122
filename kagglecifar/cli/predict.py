"""`kagglecifar predict` and `kagglecifar evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    BATCH_SIZE,
    DATA_DIR,
    DEVICE,
    RUNS_DIR,
    SUBMISSIONS_DIR,
    TTA_DEFAULT,
    TTA_FRACTION,
    TTA_HELP,
    app,
    examples,
    summary,
)
from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io.kaggle_env import default_dir

NO_TTA = typer.Option(False, "--no-tta", help="One view per image (the same as --tta none).")


def newest_run(runs_dir: Path, command: str) -> Path:
    """The newest finished run in runs_dir, said in the command's first line; one line when there is none."""
    from kagglecifar import rundir

    run = rundir.newest_finished_run(runs_dir)
    if run is None:
        raise KaggleCifarError(
            f"{command}: no finished training run in {runs_dir}; train one first (kagglecifar train) or give a run"
        )
    typer.echo(f"{command}: using {run}, the newest finished run in {runs_dir}")
    return run


def say_if_diverged(runs: list[Path], command: str) -> None:
    from kagglecifar import rundir

    for run in runs:
        found = rundir.divergence(run) if run.is_dir() else None
        if found:
            typer.echo(f"{command}: {run}: {found}")


@app.command(
    epilog=examples(
        "kagglecifar predict --tta                   # the newest finished run in runs/, flip TTA",
        "kagglecifar predict runs/resnet18-gpu --tta shift",
        "kagglecifar predict runs/a runs/b --weights 2,1 --tta shift --save-probs probs.npz",
    )
)
def predict(
    runs: Optional[list[Path]] = typer.Argument(
        None,
        metavar="[RUN_OR_CHECKPOINT...]",
        help="Run folders (their best.pt) or checkpoint files; several make an ensemble. "
        "Probabilities saved earlier with --save-probs x.npz can join it. Default: the newest finished run "
        "in RUNS_DIR.",
    ),
    tta: str = typer.Option(TTA_DEFAULT, "--tta", metavar="[MODE]", help=TTA_HELP + f" --tta alone: {TTA_DEFAULT}."),
    no_tta: bool = NO_TTA,
    tta_fraction: Optional[float] = TTA_FRACTION,
    runs_dir: Optional[Path] = RUNS_DIR,
    weights: Optional[str] = typer.Option(None, "--weights", help="Ensemble weights, one per checkpoint, e.g. 2,1."),
    data_dir: Optional[Path] = DATA_DIR,
    submissions_dir: Optional[Path] = SUBMISSIONS_DIR,
    out: Optional[Path] = typer.Option(
        None, "--out", help="Submission CSV (default: SUBMISSIONS_DIR/RUN[-ensemble]-TTA.csv)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    save_probs: Optional[Path] = typer.Option(
        None, "--save-probs", help="Also save ids, probabilities and confidence (.npz for ensembling later, or .csv)."
    ),
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
    backend: str = typer.Option(
        "auto",
        "--backend",
        metavar="auto|eager|onnx",
        help="What runs the net: eager (PyTorch) or onnx (ONNX Runtime, CPU only, the optional extra: "
        "pip install 'kagglecifar[onnx]'); auto: eager, measured as fast or faster.",
    ),
    ood_threshold: Optional[float] = typer.Option(
        None,
        "--ood-threshold",
        min=0.0,
        max=1.0,
        help="Confidence (top probability) below which an image counts as "
        "out-of-distribution in the summary (default: 0.5 with 10 classes, "
        "5/classes with more: 0.05 for CIFAR-100).",
    ),
) -> None:
    """Predict every test image (undecodable ones get a fallback label) and write a submission CSV (for other
    data than the competition's: id,label for every test id, and the file of each for an image folder)."""
    from kagglecifar import api
    from kagglecifar.inference.tta import check_tta_mode

    tta = "none" if no_tta else check_tta_mode(tta)
    runs = runs or [newest_run(runs_dir or default_dir("runs"), "predict")]
    say_if_diverged(runs, "predict")
    result = api.predict(
        runs,
        tta=tta,
        weights=weights,
        data_dir=data_dir,
        submissions_dir=submissions_dir,
        out=out,
        force=force,
        save_probs=save_probs,
        batch_size=batch_size,
        device=device,
        ood_threshold=ood_threshold,
        tta_fraction=tta_fraction,
        backend=backend,
    )
    summary(f"predict: {result.line()}")


@app.command(
    epilog=examples(
        "kagglecifar evaluate                        # the newest finished run in runs/, every TTA mode",
        "kagglecifar evaluate runs/resnet18-gpu --tta flip",
    )
)
def evaluate(
    run: Optional[Path] = typer.Argument(
        None,
        metavar="[RUN]",
        help="Run folder (its best.pt) or checkpoint file. Default: the newest finished run in RUNS_DIR.",
    ),
    tta: Optional[list[str]] = typer.Option(
        None,
        "--tta",
        metavar="[MODE]",
        help=TTA_HELP + f" Repeatable; --tta alone: {TTA_DEFAULT}; default: every mode. `none` is always included.",
    ),
    no_tta: bool = NO_TTA,
    runs_dir: Optional[Path] = RUNS_DIR,
    tta_fraction: Optional[float] = typer.Option(
        None,
        "--tta-fraction",
        metavar="F",
        help="Also score each mode with gated TTA: only the least confident share F (0 < F <= 1) of the images "
        "gets every view (default: predict's, 0.3); the accuracy with every view on every image is always shown.",
    ),
    data_dir: Optional[Path] = DATA_DIR,
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
) -> None:
    """Per-class accuracy on the run's validation split and, when the cache's test split is labelled (CIFAR
    python data, image folders with test/CLASS/), on the test split, without and with TTA; per super-class for
    CIFAR-100; the most frequent confusions; confusion matrices and per_class.csv in the run folder."""
    from kagglecifar import api

    run = run or newest_run(runs_dir or default_dir("runs"), "evaluate")
    say_if_diverged([run], "evaluate")
    report = api.evaluate(
        run,
        tta=["none"] if no_tta else tta,
        data_dir=data_dir,
        batch_size=batch_size,
        device=device,
        tta_fraction=tta_fraction,
    )
    typer.echo(report.table())
    summary(f"evaluate: {report.line()}")
