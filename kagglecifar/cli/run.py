"""`kagglecifar run`: the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    COMPETITION,
    CONFIG_FILE,
    DATA_DIR,
    DATASET,
    DEVICE,
    FORMAT,
    FROM_DIR_HELP,
    LABELS,
    RUNS_DIR,
    SETS,
    SUBMISSIONS_DIR,
    TTA_FRACTION,
    TTA_HELP,
    app,
    examples,
    preset_help,
    summary,
)


@app.command(
    epilog=examples(
        "kagglecifar run",
        'kagglecifar run resnet18 --preset gpu -m "resnet18, 40 epochs"',
        "kagglecifar run --config runs/tune-airbench94/best.yaml --name tuned",
        "kagglecifar run --from-dir ~/Downloads/cifar-10 --no-submit",
        "kagglecifar run --from-dir ~/Downloads/cifar-100-python.tar.gz --no-submit",
    )
)
def run(
    model: Optional[str] = typer.Argument(
        None, metavar="MODEL", help="Model to train (see `kagglecifar models`; default: the preset's)."
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help=preset_help(
            "Base recipe", "Default: gpu with CUDA; without it you are told what to expect and offered cpu."
        ),
    ),
    config_file: Optional[Path] = CONFIG_FILE,
    sets: Optional[list[str]] = SETS,
    data_dir: Optional[Path] = DATA_DIR,
    runs_dir: Optional[Path] = RUNS_DIR,
    submissions_dir: Optional[Path] = SUBMISSIONS_DIR,
    competition: str = COMPETITION,
    from_dir: Optional[Path] = typer.Option(
        None,
        "--from-dir",
        metavar="PATH",
        help="Take the data from " + FROM_DIR_HELP + " Other data than the competition's needs --no-submit.",
    ),
    dataset: Optional[str] = DATASET,
    fmt: Optional[str] = FORMAT,
    labels: Optional[str] = LABELS,
    tta: str = typer.Option("flip", "--tta", metavar="MODE", help=TTA_HELP),
    tta_fraction: Optional[float] = TTA_FRACTION,
    device: str = DEVICE,
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: MODEL-PRESET)."),
    message: Optional[str] = typer.Option(None, "-m", "--message", help="Submission message."),
    submit: bool = typer.Option(True, "--submit/--no-submit", help="Upload the CSV at the end."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle's score."),
    force: bool = typer.Option(
        False, "--force", help="Re-download, rebuild the cache and re-predict even when up to date."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Don't ask; take the CPU preset when there is no GPU."),
    log: Optional[list[str]] = typer.Option(
        None, "--log", metavar="TRACKER", help="Log training to tensorboard, wandb or mlflow (repeatable)."
    ),
) -> None:
    """The whole pipeline: fetch, train, predict with TTA, submit; stages already complete are skipped."""
    from kagglecifar import api, pipeline

    confirm = None if yes or not pipeline.interactive() else (lambda q: typer.confirm(q, default=True))
    result = api.run(
        model,
        preset=preset,
        config=config_file,
        set=sets,
        data_dir=data_dir,
        runs_dir=runs_dir,
        submissions_dir=submissions_dir,
        competition=competition,
        from_dir=from_dir,
        dataset=dataset,
        format=fmt,
        labels=labels,
        tta=tta,
        tta_fraction=tta_fraction,
        device=device,
        message=message,
        submit=submit,
        wait=wait,
        force=force,
        name=name,
        log=log,
        confirm=confirm,
        echo=typer.echo,
    )
    summary(f"run: {result.line()}")
