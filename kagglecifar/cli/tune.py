"""`kagglecifar tune` and `kagglecifar compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    DATA_DIR,
    DEVICE,
    RUNS_DIR,
    SUBMISSIONS_DIR,
    app,
    examples,
    preset_help,
    summary,
)
from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io.kaggle_env import default_dir


@app.command(
    epilog=examples(
        "kagglecifar tune --preset cpu --trials 10",
        "kagglecifar tune resnet18 --preset gpu --trials 40 --pruner hyperband",
        "kagglecifar tune resnet18 --space my-space.yaml --sampler random --trials 20 --name r18-random",
        "kagglecifar tune resnet18 --trials 100 --storage postgresql://me@db-host/optuna   # on each machine",
    )
)
def tune(
    model: Optional[str] = typer.Argument(
        None, metavar="MODEL", help="Model to tune (see `kagglecifar models`; default: the preset's)."
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        metavar="NAME",
        help=preset_help("Base recipe the search varies"),
    ),
    sets: Optional[list[str]] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Override a base recipe or session option for every trial, e.g. --set epochs=10 (repeatable).",
    ),
    space: Optional[Path] = typer.Option(
        None,
        "--space",
        metavar="FILE",
        help="Search space (YAML/JSON): per "
        "recipe option {low, high, log} or {choices: [...]}. Default: the model "
        "family's, kagglecifar/spaces/.",
    ),
    sampler: str = typer.Option("tpe", "--sampler", metavar="tpe|random|grid", help="How trials are chosen."),
    pruner: str = typer.Option(
        "median",
        "--pruner",
        metavar="median|hyperband|none",
        help="How unpromising trials are stopped early, from their accuracy per epoch.",
    ),
    trials: Optional[int] = typer.Option(
        None,
        "--trials",
        min=1,
        metavar="N",
        help="Stop once the study holds this many finished (complete or pruned) trials, all workers together.",
    ),
    timeout: Optional[float] = typer.Option(
        None,
        "--timeout",
        min=1,
        metavar="SECONDS",
        help="Stop after this long; the running trial stops with last.pt saved and continues next time.",
    ),
    storage: Optional[str] = typer.Option(
        None,
        "--storage",
        metavar="URL",
        help="Study database (default: "
        "sqlite:///RUNS_DIR/tune-NAME/study.db); postgresql://... or "
        "mysql+pymysql://... for workers on several machines.",
    ),
    name: Optional[str] = typer.Option(
        None,
        "--name",
        metavar="NAME",
        help="Study name; trials go to RUNS_DIR/tune-NAME/ (default: MODEL). The same command continues it.",
    ),
    preset_first: bool = typer.Option(
        True,
        "--preset-first/--no-preset-first",
        help="Make the first trial of a "
        "new study the base recipe's own values (where the space allows), so the "
        "results show what the search adds.",
    ),
    data_dir: Optional[Path] = DATA_DIR,
    runs_dir: Optional[Path] = RUNS_DIR,
    device: str = DEVICE,
) -> None:
    """Search hyper-parameters with Optuna: every trial is a training run in RUNS_DIR/tune-NAME/; writes
    results.csv, best.yaml (for `train --config`) and plots there."""
    from kagglecifar.tune import search as tuning

    if sampler not in tuning.SAMPLERS:
        raise KaggleCifarError(f"--sampler {sampler}: choose {', '.join(tuning.SAMPLERS)}")
    if pruner not in tuning.PRUNERS:
        raise KaggleCifarError(f"--pruner {pruner}: choose {', '.join(tuning.PRUNERS)}")
    result = tuning.tune(
        model,
        preset=preset,
        sets=sets or [],
        space_file=space,
        sampler=sampler,
        pruner=pruner,
        trials=trials,
        timeout=timeout,
        storage=storage,
        name=name,
        runs_dir=runs_dir or default_dir("runs"),
        data_dir=data_dir or default_dir("data"),
        device=device,
        preset_first=preset_first,
        echo=typer.echo,
    )
    summary(f"tune: {result.line()}")
    if result.stopped == "interrupted":
        raise typer.Exit(130)


@app.command(
    epilog=examples(
        "kagglecifar compare runs/mlp-cpu runs/simplecnn-cpu runs/resnet18-gpu",
        "kagglecifar compare runs/tune-simplecnn --out tune-report.html",
        "kagglecifar compare runs --out report.md",
    )
)
def compare(
    runs: list[Path] = typer.Argument(
        ...,
        metavar="RUN...",
        help="Run folders; a folder holding runs (runs/, runs/tune-NAME/) stands for the runs in it.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        metavar="FILE",
        help="Also write a report: .html (images "
        "embedded) or .md, with FILE-curves.png, FILE-confusion.png and FILE.csv "
        "beside it.",
    ),
    submissions_dir: Optional[Path] = SUBMISSIONS_DIR,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing report."),
) -> None:
    """Runs side by side: model, parameters, epochs, time, device, validation accuracy (with each TTA mode
    evaluated), Kaggle public score; with --out, curves and confusion matrices in a report."""
    from kagglecifar.reports import compare as comparison

    compared = comparison.compare(runs, submissions_dir or default_dir("submissions"))
    for line in comparison.table_lines(compared):
        typer.echo(line)
    best = max((r for r in compared if r.best_val_acc is not None), key=lambda r: r.best_val_acc, default=None)
    best_text = f"best val accuracy {best.best_val_acc:.2%} ({best.name})" if best else "no validation accuracy yet"
    written = comparison.write_report(compared, out, force) if out else []
    report = (
        f"; report {written[0]} (+ {', '.join(p.name for p in written[1:])})"
        if written
        else "; --out report.html for curves, confusion matrices and a report"
    )
    summary(f"compare: {len(compared)} runs, {best_text}{report}")
