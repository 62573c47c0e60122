"""The `kagglecifar` command line: parses options and calls the stage modules, nothing more.

Each command ends with a one-line summary; a KaggleCifarError (or an OS error) becomes one line on stderr
and exit 1; Ctrl-C and SIGTERM stop cleanly with exit 130. The `train` options are generated from
config.TrainConfig, where each is declared once. Over 400 lines because it holds every command's options,
help text and examples; each command body only parses and calls.
"""
from __future__ import annotations

import inspect
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from kagglecifar.errors import KaggleCifarError

app = typer.Typer(
    help="From nothing to a scored submission in Kaggle's CIFAR-10 competition.\n\n"
    "Typical session:  fetch  ->  train  ->  predict  ->  submit   (or all at once: run)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)

DATA_DIR = typer.Option(Path("data"), "--data-dir", help="Where downloads and the image cache live.")
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help="Where training runs are written.")
SUBMISSIONS_DIR = typer.Option(Path("submissions"), "--submissions-dir", help="Where submission CSVs are written.")
COMPETITION = typer.Option("cifar-10", "--competition", help="Kaggle competition slug.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")
BATCH_SIZE = typer.Option(None, "--batch-size", min=1,
                          help="Images per forward pass (default: 1024 on CUDA, 256 on CPU).")
CONFIG_FILE = typer.Option(None, "--config", metavar="FILE", help="A recipe file (YAML/JSON), e.g. a run's "
                           "config.yaml or tune's best.yaml; overrides the preset.")
SETS = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override any config field, e.g. --set lr=0.1 "
                    "(repeatable).")
TTA_HELP = ("Test-time augmentation: none (1 view), flip (2 views), translate (airbench's: flips + 1 px "
            "shifts, 6 views) or shift (flips + 2 px shifts, 10 views).")  # tta.py's modes; a test keeps them in step


def summary(line: str) -> None:
    """The one-line summary every command ends with."""
    typer.echo(line)


def examples(*lines: str) -> str:
    """A help epilog; click keeps a paragraph that starts with \\b as written."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


# ---- fetch ------------------------------------------------------------------------------------

FROM_DIR_HELP = ("a folder or file already here: the competition's files (train.7z, test.7z, trainLabels.csv, "
                 "sampleSubmission.csv), a cifar-10/100-python.tar.gz or its folder, or an image folder "
                 "(train/CLASS/*.png|jpg, optional test/); no network.")
DATASET = typer.Option(None, "--dataset", metavar="OWNER/NAME", help="A Kaggle dataset in any of those shapes, "
                       "downloaded (resumable) into DATA_DIR/datasets/OWNER/NAME.")
FORMAT = typer.Option(None, "--format", metavar="FORMAT", help="competition, cifar-python or image-folder: what "
                      "--from-dir/--dataset holds (default: recognised from what is there).")
LABELS = typer.Option(None, "--labels", metavar="fine|coarse", help="CIFAR-100: its 100 classes (fine, the "
                      "default) or its 20 super-classes (coarse).")


@app.command(epilog=examples("kagglecifar fetch", "kagglecifar fetch --from-dir ~/Downloads/cifar-10",
                             "kagglecifar fetch --from-dir ~/Downloads/cifar-100-python.tar.gz --labels coarse",
                             "kagglecifar fetch --dataset OWNER/NAME --format image-folder"))
def fetch(
    competition: str = COMPETITION,
    data_dir: Path = DATA_DIR,
    from_dir: Optional[Path] = typer.Option(None, "--from-dir", metavar="PATH", help="Build the cache from "
                                            + FROM_DIR_HELP),
    dataset: Optional[str] = DATASET,
    fmt: Optional[str] = FORMAT,
    labels: Optional[str] = LABELS,
    force: bool = typer.Option(False, "--force", help="Download again and rebuild the cache even when up to date."),
    keep_png: bool = typer.Option(False, "--keep-png", help="Also write the PNG files to DATA_DIR/train/ and test/ "
                                  "(competition files only)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="PNG decoding processes beside the main one; "
                                         "0 decodes in the main process (default: 1 for big splits on 2+ cores)."),
) -> None:
    """Download the competition files from Kaggle (resumable), or take another CIFAR source, and build the uint8
    image cache from it."""
    import time

    from kagglecifar import pipeline

    started = time.perf_counter()
    line, _ = pipeline.fetch(competition, data_dir, from_dir=from_dir, dataset=dataset, fmt=fmt, labels=labels,
                             force=force, keep_png=keep_png, workers=workers)
    summary(f"fetch: {line}; {time.perf_counter() - started:.1f} s")


# ---- models, train ----------------------------------------------------------------------------

@app.command("models", epilog=examples("kagglecifar models", "kagglecifar models --width 0.25"))
def models_command(
    width: float = typer.Option(1.0, "--width", help="Width multiplier to size the models at (e.g. 0.25)."),
) -> None:
    """List the models `train` accepts: parameters, GFLOPs per 32x32 image, default GPU batch, options."""
    from kagglecifar import models

    for line in models.model_table(width):
        typer.echo(line)
    summary(f"{len(models.model_names())} models at width {width:g}; GFLOPs = forward pass of one image "
            "(2 per multiply-add); train one with `kagglecifar train MODEL`")


def _config_parameters() -> tuple[list[inspect.Parameter], dict]:
    """One Typer option per TrainConfig field (but the model, which is the MODEL argument), defaulting to None
    so that only what the user gives overrides the preset; --help shows the default and each preset's value."""
    from kagglecifar import config

    presets = {name: config.preset_values(name) for name in config.preset_names()}
    parameters, annotations = [], {}
    for section in config.SECTIONS.values():
        types = config.field_types(section)
        for name, spec in config.fields_of(section).items():
            if name == "model":
                continue
            flag = "--" + name.replace("_", "-")
            shown = f"{spec.default}" if spec.default not in (None, "") else "none"
            differ = [f"{preset} preset: {values[name]}" for preset, values in presets.items()
                      if name in values and values[name] != spec.default]
            kind = types[name]
            decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
            metavar = spec.metadata["metavar"] or ("|".join(spec.metadata["choices"] or ()) or
                                                   {int: "INT", float: "NUMBER", str: "TEXT"}.get(kind))
            option = typer.Option(None, *decls, help=spec.metadata["help"], metavar=metavar,
                                  show_default="; ".join([shown, *differ]), rich_help_panel=section.__name__)
            annotations[name] = Optional[kind]
            parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                                annotation=Optional[kind]))
    return parameters, annotations


def _train_command(model, preset, config_file, sets, **options):
    import os

    from kagglecifar import config as train_config
    from kagglecifar.training import train

    resume = options.pop("resume", None)
    if resume:
        if preset or config_file or sets:
            raise KaggleCifarError(f"--resume {resume}: a resumed run keeps its recipe; --preset, --config and "
                                   "--set cannot be combined with it")
        runs_dir = options.pop("runs_dir") or "runs"
        config = train.resume_config(resume, runs_dir, model=model, **options)
    else:
        config = train_config.make_config(model, preset, config_file=config_file, sets=sets or [], **options)
    result = train.train(config)
    if int(os.environ.get("RANK", 0)) == 0:
        summary(f"train: {result.line()}")
    if result.stopped_reason == "interrupted":
        raise typer.Exit(130)


def _build_train_command():
    fixed = [
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[str],
                          default=typer.Argument(None, metavar="MODEL", help="Model to train (see `kagglecifar "
                                                 "models`; default: the preset's).")),
        inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                          default=typer.Option(None, "--preset", metavar="NAME", help="Base recipe, one of "
                                               "kagglecifar/presets/NAME.yaml: gpu (ResNet-18), fast (airbench94), "
                                               "fast96 (airbench96), cpu (minutes on a laptop). Default: gpu with "
                                               "CUDA, else cpu.")),
        inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=CONFIG_FILE),
        inspect.Parameter("sets", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[List[str]], default=SETS),
    ]
    generated, annotations = _config_parameters()

    def train_command(**kwargs):
        """Train a model on the cached train images; writes RUNS_DIR/NAME/ (config.yaml, metrics, checkpoints,
        curves, confusion matrix).

        Values come from, later winning: the defaults, the preset, --config FILE, --set KEY=VALUE, then the
        options below. Several GPUs: torchrun --nproc_per_node N -m kagglecifar train MODEL ...
        """
        _train_command(kwargs.pop("model"), kwargs.pop("preset"), kwargs.pop("config_file"), kwargs.pop("sets"),
                       **kwargs)

    train_command.__signature__ = inspect.Signature(fixed + generated)
    train_command.__annotations__ = {**{p.name: p.annotation for p in fixed}, **annotations}
    return train_command


app.command("train", epilog=examples(
    "kagglecifar train                                   # the preset for this machine",
    "kagglecifar train resnet18 --preset gpu --epochs 60",
    "kagglecifar train --config runs/resnet18-20261123-101500/config.yaml --set seed=1",
    "kagglecifar train --resume resnet18-20261123-101500",
))(_build_train_command())


# ---- predict, evaluate ------------------------------------------------------------------------

@app.command(epilog=examples("kagglecifar predict runs/resnet18-gpu", "kagglecifar predict runs/a runs/b --weights 2,1 "
                             "--tta shift --save-probs probs.npz"))
def predict(
    runs: List[Path] = typer.Argument(..., metavar="RUN_OR_CHECKPOINT...",
                                      help="Run folders (their best.pt) or checkpoint files; several make an ensemble. "
                                      "Probabilities saved earlier with --save-probs x.npz can join it."),
    tta: str = typer.Option("flip", "--tta", metavar="MODE", help=TTA_HELP),
    weights: Optional[str] = typer.Option(None, "--weights", help="Ensemble weights, one per checkpoint, e.g. 2,1."),
    data_dir: Path = DATA_DIR,
    submissions_dir: Path = SUBMISSIONS_DIR,
    out: Optional[Path] = typer.Option(None, "--out", help="Submission CSV (default: "
                                       "SUBMISSIONS_DIR/RUN[-ensemble]-TTA.csv)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    save_probs: Optional[Path] = typer.Option(None, "--save-probs", help="Also save ids, probabilities and confidence "
                                              "(.npz for ensembling later, or .csv)."),
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
    ood_threshold: Optional[float] = typer.Option(None, "--ood-threshold", min=0.0, max=1.0,
                                        help="Confidence (top probability) below which an image counts as "
                                        "out-of-distribution in the summary (default: 0.5 with 10 classes, "
                                        "5/classes with more: 0.05 for CIFAR-100)."),
) -> None:
    """Predict every test image (undecodable ones get a fallback label) and write a submission CSV (for other
    data than the competition's: id,label for every test id, and the file of each for an image folder)."""
    from kagglecifar.inference import predict as prediction
    from kagglecifar.inference.tta import check_tta_mode

    check_tta_mode(tta)
    out = out or prediction.default_submission_path(runs, tta, submissions_dir)
    result = prediction.predict_to_submission(
        runs, data_dir, out, tta=tta, weights=prediction.parse_weights(weights, len(runs)), batch_size=batch_size,
        device=device, force=force, save_probs_path=save_probs, ood_threshold=ood_threshold)
    summary(f"predict: {result.line()}")


@app.command(epilog=examples("kagglecifar evaluate runs/resnet18-gpu", "kagglecifar evaluate runs/resnet18-gpu --tta flip"))
def evaluate(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder (its best.pt) or checkpoint file."),
    tta: Optional[List[str]] = typer.Option(None, "--tta", metavar="MODE", help=TTA_HELP + " Repeatable; "
                                            "default: every mode. `none` is always included."),
    data_dir: Path = DATA_DIR,
    batch_size: Optional[int] = BATCH_SIZE,
    device: str = DEVICE,
) -> None:
    """Per-class accuracy on the run's validation split and, when the cache's test split is labelled (CIFAR
    python data, image folders with test/CLASS/), on the test split, without and with TTA; per super-class for
    CIFAR-100; the most frequent confusions; confusion matrices and per_class.csv in the run folder."""
    from kagglecifar.inference.evaluate import evaluate as evaluate_run
    from kagglecifar.inference.tta import TTA_VIEWS

    report = evaluate_run(run, data_dir, tta or list(TTA_VIEWS), test=True, batch_size=batch_size, device=device)
    typer.echo(report.table())
    parts = []
    for scores in report.splits.values():
        accuracies = ", ".join(f"{mode} {accuracy:.2%}" for mode, accuracy in scores.overall.items())
        parts.append(f"{scores.count} {scores.name} images, accuracy {accuracies}")
    for scores in report.super_splits().values():
        parts.append(f"super-class {scores.name} accuracy {scores.overall[report.largest_mode]:.2%} "
                     f"({report.largest_mode})")
    figures = ", ".join(str(p) for p in report.confusion_paths.values())
    summary(f"evaluate: {'; '.join(parts)}; confusion matrix {figures}; per class {report.csv_path}")


# ---- submit, submissions, leaderboard ---------------------------------------------------------

@app.command(epilog=examples('kagglecifar submit -m "resnet18, flip TTA"',
                             'kagglecifar submit submissions/resnet18-gpu-flip.csv -m "first try" --no-wait'))
def submit(
    csv_path: Optional[Path] = typer.Argument(None, metavar="CSV", help="Submission file (default: the newest "
                                              "CSV in SUBMISSIONS_DIR)."),
    message: str = typer.Option(..., "-m", "--message", help="Description shown with the submission on Kaggle."),
    competition: str = COMPETITION,
    data_dir: Path = DATA_DIR,
    submissions_dir: Path = SUBMISSIONS_DIR,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle to score it and print the score."),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="Seconds to wait for the score."),
) -> None:
    """Check a submission CSV locally, upload it to Kaggle and print its public score."""
    from kagglecifar.kaggle_io import submission_csv as submission

    csv_path = csv_path or submission.newest_submission(submissions_dir)
    result = submission.submit(csv_path, message, competition, data_dir=data_dir, wait=wait, timeout=timeout)
    if result.status == "complete":
        summary(f"submit: {csv_path} scored {result.public_score:.5f} (public) on {competition}, "
                f"submission {result.ref}, {result.seconds:.1f} s")
    else:
        summary(f"submit: {csv_path} uploaded to {competition} as submission {result.ref}, not scored yet"
                f"{'' if wait else ' (--no-wait)'}; see `kagglecifar submissions`")


@app.command(epilog=examples("kagglecifar submissions"))
def submissions(competition: str = COMPETITION) -> None:
    """Your submissions to the competition: date, file, message, status, public score."""
    from kagglecifar import kaggle_io
    from kagglecifar.kaggle_io import listings as reports

    items = kaggle_io.list_submissions(competition)
    if not items:
        return summary(f"submissions: none yet to {competition}; make one with `kagglecifar submit`")
    for line in reports.submissions_table(items):
        typer.echo(line)
    scores = [s.public_score for s in items if s.public_score is not None]
    best = f", best public score {max(scores):.5f}" if scores else ""
    summary(f"submissions: {len(items)} latest to {competition}{best}")


@app.command(epilog=examples("kagglecifar leaderboard --top 10"))
def leaderboard(
    competition: str = COMPETITION,
    top: int = typer.Option(20, "--top", min=1, help="How many of the leading teams to show."),
) -> None:
    """The top of the public leaderboard and where you stand."""
    from kagglecifar import kaggle_io
    from kagglecifar.kaggle_io import listings as reports

    board = kaggle_io.leaderboard(competition, top=top)
    for line in reports.leaderboard_table(board):
        typer.echo(line)
    summary(f"leaderboard {competition}: {reports.standing(board)}")


# ---- run ----------------------------------------------------------------------------------------

@app.command(epilog=examples("kagglecifar run", "kagglecifar run resnet18 --preset gpu -m \"resnet18, 40 epochs\"",
                             "kagglecifar run --config runs/tune-airbench94/best.yaml --name tuned",
                             "kagglecifar run --from-dir ~/Downloads/cifar-10 --no-submit",
                             "kagglecifar run --from-dir ~/Downloads/cifar-100-python.tar.gz --no-submit"))
def run(
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="Model to train (see `kagglecifar models`; "
                                          "default: the preset's)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="gpu (ResNet-18) or cpu (minutes on a laptop). "
                                         "Default: gpu with CUDA; without it you are told what to expect and offered cpu."),
    config_file: Optional[Path] = CONFIG_FILE,
    sets: Optional[List[str]] = SETS,
    data_dir: Path = DATA_DIR,
    runs_dir: Path = RUNS_DIR,
    submissions_dir: Path = SUBMISSIONS_DIR,
    competition: str = COMPETITION,
    from_dir: Optional[Path] = typer.Option(None, "--from-dir", metavar="PATH", help="Take the data from "
                                            + FROM_DIR_HELP + " Other data than the competition's needs --no-submit."),
    dataset: Optional[str] = DATASET,
    fmt: Optional[str] = FORMAT,
    labels: Optional[str] = LABELS,
    tta: str = typer.Option("flip", "--tta", metavar="MODE", help=TTA_HELP),
    device: str = DEVICE,
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
    from kagglecifar.inference.tta import check_tta_mode

    check_tta_mode(tta)
    started = time.perf_counter()
    confirm = None if yes or not pipeline.interactive() else (lambda q: typer.confirm(q, default=True))
    reports = pipeline.run(model, preset=preset, config_file=config_file, sets=sets or [], data_dir=data_dir,
                           runs_dir=runs_dir, submissions_dir=submissions_dir, competition=competition, from_dir=from_dir,
                           dataset=dataset, fmt=fmt, labels=labels, tta=tta,
                           device=device, message=message, submit=submit, wait=wait, force=force, name=name,
                           confirm=confirm, echo=typer.echo)
    done = [r.name for r in reports if not r.skipped]
    summary(f"run: {len(done)} of {len(reports)} stages ran ({', '.join(done) or 'all up to date'}) "
            f"in {time.perf_counter() - started:.1f} s")


# ---- tune, compare ------------------------------------------------------------------------------

@app.command(epilog=examples(
    "kagglecifar tune --preset cpu --trials 10",
    "kagglecifar tune resnet18 --preset gpu --trials 40 --pruner hyperband",
    "kagglecifar tune resnet18 --space my-space.yaml --sampler random --trials 20 --name r18-random",
    "kagglecifar tune resnet18 --trials 100 --storage postgresql://me@db-host/optuna   # on each machine",
))
def tune(
    model: Optional[str] = typer.Argument(None, metavar="MODEL", help="Model to tune (see `kagglecifar models`; "
                                          "default: the preset's)."),
    preset: Optional[str] = typer.Option(None, "--preset", metavar="NAME", help="Base recipe the search varies "
                                         "(gpu or cpu; default: gpu with CUDA, else cpu)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override a base recipe or "
                                             "session option for every trial, e.g. --set epochs=10 (repeatable)."),
    space: Optional[Path] = typer.Option(None, "--space", metavar="FILE", help="Search space (YAML/JSON): per "
                                         "recipe option {low, high, log} or {choices: [...]}. Default: the model "
                                         "family's, kagglecifar/spaces/."),
    sampler: str = typer.Option("tpe", "--sampler", metavar="tpe|random|grid", help="How trials are chosen."),
    pruner: str = typer.Option("median", "--pruner", metavar="median|hyperband|none",
                               help="How unpromising trials are stopped early, from their accuracy per epoch."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, metavar="N", help="Stop once the study holds "
                                         "this many finished (complete or pruned) trials, all workers together."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, metavar="SECONDS", help="Stop after this "
                                            "long; the running trial stops with last.pt saved and continues next "
                                            "time."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL", help="Study database (default: "
                                          "sqlite:///RUNS_DIR/tune-NAME/study.db); postgresql://... or "
                                          "mysql+pymysql://... for workers on several machines."),
    name: Optional[str] = typer.Option(None, "--name", metavar="NAME", help="Study name; trials go to "
                                       "RUNS_DIR/tune-NAME/ (default: MODEL). The same command continues it."),
    preset_first: bool = typer.Option(True, "--preset-first/--no-preset-first", help="Make the first trial of a "
                                      "new study the base recipe's own values (where the space allows), so the "
                                      "results show what the search adds."),
    data_dir: Path = DATA_DIR,
    runs_dir: Path = RUNS_DIR,
    device: str = DEVICE,
) -> None:
    """Search hyper-parameters with Optuna: every trial is a training run in RUNS_DIR/tune-NAME/; writes
    results.csv, best.yaml (for `train --config`) and plots there."""
    from kagglecifar.tune import search as tuning

    if sampler not in tuning.SAMPLERS:
        raise KaggleCifarError(f"--sampler {sampler}: choose {', '.join(tuning.SAMPLERS)}")
    if pruner not in tuning.PRUNERS:
        raise KaggleCifarError(f"--pruner {pruner}: choose {', '.join(tuning.PRUNERS)}")
    result = tuning.tune(model, preset=preset, sets=sets or [], space_file=space, sampler=sampler, pruner=pruner,
                         trials=trials, timeout=timeout, storage=storage, name=name, runs_dir=runs_dir,
                         data_dir=data_dir, device=device, preset_first=preset_first, echo=typer.echo)
    summary(f"tune: {result.line()}")
    if result.stopped == "interrupted":
        raise typer.Exit(130)


@app.command(epilog=examples(
    "kagglecifar compare runs/mlp-cpu runs/simplecnn-cpu runs/resnet18-gpu",
    "kagglecifar compare runs/tune-simplecnn --out tune-report.html",
    "kagglecifar compare runs --out report.md",
))
def compare(
    runs: List[Path] = typer.Argument(..., metavar="RUN...", help="Run folders; a folder holding runs (runs/, "
                                      "runs/tune-NAME/) stands for the runs in it."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="Also write a report: .html (images "
                                       "embedded) or .md, with FILE-curves.png, FILE-confusion.png and FILE.csv "
                                       "beside it."),
    submissions_dir: Path = SUBMISSIONS_DIR,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing report."),
) -> None:
    """Runs side by side: model, parameters, epochs, time, device, validation accuracy (with each TTA mode
    evaluated), Kaggle public score; with --out, curves and confusion matrices in a report."""
    from kagglecifar.reports import compare as comparison

    compared = comparison.compare(runs, submissions_dir)
    for line in comparison.table_lines(compared):
        typer.echo(line)
    best = max((r for r in compared if r.best_val_acc is not None), key=lambda r: r.best_val_acc, default=None)
    best_text = f"best val accuracy {best.best_val_acc:.2%} ({best.name})" if best else "no validation accuracy yet"
    written = comparison.write_report(compared, out, force) if out else []
    report = f"; report {written[0]} (+ {', '.join(p.name for p in written[1:])})" if written else \
        "; --out report.html for curves, confusion matrices and a report"
    summary(f"compare: {len(compared)} runs, {best_text}{report}")


# -------------------------------------------------------------------------------------------------

def _stop_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C: a KeyboardInterrupt in the main thread, so every stage cleans up the same way
    (training installs its own handler for a clean stop at a step boundary)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: one-line errors, non-zero exit, no traceback for user mistakes or OS problems."""
    from kagglecifar.files import os_error

    _stop_on_sigterm()
    try:
        app(args=argv, prog_name="kagglecifar")
    except KaggleCifarError as exc:
        typer.echo(f"kagglecifar: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        typer.echo(f"kagglecifar: error: {os_error(Path(exc.filename or '.'), exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("kagglecifar: interrupted", err=True)
        sys.exit(130)
