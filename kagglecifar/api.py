"""The Python API: every command as a function, for notebooks and scripts; the CLI is a thin layer over it.

    import kagglecifar
    kagglecifar.fetch()                                    # kagglecifar fetch
    result = kagglecifar.train("airbench94", epochs=10)    # kagglecifar train airbench94 --epochs 10
    result.best_val_accuracy, result.run_dir
    kagglecifar.predict(result.run_dir, tta="translate")   # kagglecifar predict RUN --tta translate
    kagglecifar.submit(message="airbench94, 10 epochs")    # kagglecifar submit -m ...

Options are named as the command's, with `-` as `_` (`data_dir=`, `runs_dir=`, `batch_size=`); `--config` is
`config=`, `--set` is `set=` (a list of KEY=VALUE or a dict), `--format` is `format=`, `-m` is `message=`. Each
function returns what its command prints its summary from (`.line()` is that summary), and raises
KaggleCifarError with the command's one-line message on bad input, an unknown option included.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

from kagglecifar.errors import KaggleCifarError
from kagglecifar.kaggle_io.kaggle_env import default_dir

__all__ = ["fetch", "train", "predict", "evaluate", "submit", "run", "FetchResult", "SubmitResult", "RunResult"]


def unknown_option(command: str, name: str, known: list[str]) -> KaggleCifarError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"options: {', '.join(sorted(known))}"
    return KaggleCifarError(f"{command}: unknown option {name!r}; {hint}")


def _checked(function):
    """An unknown keyword is a KaggleCifarError naming it and the close matches, not a TypeError."""
    known = [name for name, p in inspect.signature(function).parameters.items() if p.kind is not p.VAR_KEYWORD]

    @functools.wraps(function)
    def checked(*args, **kwargs):
        for name in kwargs:
            if name not in known:
                raise unknown_option(function.__name__, name, known)
        return function(*args, **kwargs)

    return checked


def _path(value, default: str) -> Path:
    return Path(value) if value is not None else default_dir(default)


# ---- fetch -------------------------------------------------------------------------------------------


@dataclass
class FetchResult:
    data_dir: Path
    detail: str  # what was downloaded or found, and the cache built
    changed: bool  # False: everything was up to date
    seconds: float

    def line(self) -> str:
        return f"{self.detail}; {self.seconds:.1f} s"


@_checked
def fetch(
    competition: str = "cifar-10",
    data_dir: str | Path | None = None,
    from_dir: str | Path | None = None,
    dataset: str | None = None,
    format: str | None = None,
    labels: str | None = None,
    force: bool = False,
    keep_png: bool = False,
    workers: int | None = None,
) -> FetchResult:
    """`kagglecifar fetch`: the competition's files (downloaded, or attached under /kaggle/input in a Kaggle
    notebook), a Kaggle dataset or a folder, into the image cache."""
    from kagglecifar import pipeline

    started, data_dir = time.perf_counter(), _path(data_dir, "data")
    detail, changed = pipeline.fetch(
        competition,
        data_dir,
        from_dir=Path(from_dir) if from_dir is not None else None,
        dataset=dataset,
        fmt=format,
        labels=labels,
        force=force,
        keep_png=keep_png,
        workers=workers,
    )
    return FetchResult(data_dir, detail, changed, time.perf_counter() - started)


# ---- train -------------------------------------------------------------------------------------------

TRAIN_ONLY = ("preset", "config", "set", "recipe_from_preset")  # besides every TrainConfig field


def train(model: str | None = None, **options):
    """`kagglecifar train`: returns the TrainResult (`.best_val_accuracy`, `.best_epoch`, `.run_dir`,
    `.stopped_reason`, `.line()`). `processes=2` trains in two DDP processes; `log="tensorboard"` (or a list)
    logs to trackers. Ctrl-C (interrupting the cell) stops at a step boundary with last.pt saved."""
    from kagglecifar import config as train_config
    from kagglecifar import recipes
    from kagglecifar.training import train as training
    from kagglecifar.training.launch import train_processes

    known = [*TRAIN_ONLY, *train_config.all_keys()]
    for name in options:
        if name not in known:
            raise unknown_option("train", name, known)
    preset, config_file = options.pop("preset", None), options.pop("config", None)
    sets, recipe_from_preset = _sets(options.pop("set", None)), bool(options.pop("recipe_from_preset", False))
    options = {key: _option_value(key, value) for key, value in options.items() if value is not None}
    resume = options.pop("resume", None)
    if resume:
        if preset or config_file or sets or recipe_from_preset:
            raise KaggleCifarError(
                f"--resume {resume}: a resumed run keeps its recipe; --preset, --config and "
                "--set cannot be combined with it"
            )
        runs_dir = options.pop("runs_dir", None) or str(default_dir("runs"))
        config = training.resume_config(resume, runs_dir, model=model, **options)
    else:
        for key in ("data_dir", "runs_dir"):  # the Kaggle working folder, unless a layer names the folder
            if key not in options and not _named_in(key, config_file, sets):
                options[key] = str(default_dir(key[: -len("_dir")]))
        config = recipes.make_config(
            model, preset, config_file=config_file, sets=sets, recipe_from_preset=recipe_from_preset, **options
        )
    return train_processes(config)


def _sets(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{key}={item}" for key, item in value.items()]
    return [value] if isinstance(value, str) else list(value)


def _option_value(key: str, value):
    from kagglecifar.config import coerce

    if key == "log" and isinstance(value, (list, tuple)):
        value = ",".join(value)
    if isinstance(value, Path):
        value = str(value)
    return coerce(key, value, f"--{key.replace('_', '-')}")


def _named_in(key: str, config_file, sets: list[str]) -> bool:
    from kagglecifar.recipes import parse_sets, read_recipe_file

    return key in parse_sets(sets) or (config_file is not None and key in read_recipe_file(Path(config_file)))


# ---- predict and evaluate ----------------------------------------------------------------------------


@_checked
def predict(
    runs,
    tta: str = "flip",
    weights=None,
    data_dir: str | Path | None = None,
    submissions_dir: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    save_probs: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    ood_threshold: float | None = None,
    tta_fraction: float | None = None,
    backend: str = "auto",
):
    """`kagglecifar predict`: runs is a run folder, a checkpoint or a list of them (an ensemble); weights a list
    of numbers or "2,1". Returns the PredictResult (`.csv_path`, `.predictions`, `.line()`)."""
    from kagglecifar.inference import gating
    from kagglecifar.inference import predict as prediction
    from kagglecifar.inference.tta import check_tta_mode

    runs = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    check_tta_mode(tta)
    tta_fraction = gating.check_fraction(gating.DEFAULT_FRACTION if tta_fraction is None else tta_fraction)
    if weights is not None and not isinstance(weights, str):
        weights = ",".join(str(w) for w in weights)
    out = (
        Path(out)
        if out is not None
        else prediction.default_submission_path(runs, tta, submissions_dir_of(submissions_dir))
    )
    return prediction.predict_to_submission(
        runs,
        _path(data_dir, "data"),
        out,
        tta=tta,
        weights=prediction.parse_weights(weights, len(runs)),
        batch_size=batch_size,
        device=device,
        force=force,
        save_probs_path=Path(save_probs) if save_probs is not None else None,
        ood_threshold=ood_threshold,
        tta_fraction=tta_fraction,
        backend=backend,
    )


def submissions_dir_of(value) -> Path:
    return _path(value, "submissions")


@_checked
def evaluate(
    run,
    tta=None,
    data_dir: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    tta_fraction: float | None = None,
):
    """`kagglecifar evaluate`: the EvalReport (`.overall`, `.per_class`, `.table()`, `.line()`); tta is a mode or
    a list of them (default: every mode); each mode is also scored gated at tta_fraction (default: predict's)."""
    from kagglecifar.inference import gating
    from kagglecifar.inference.evaluate import evaluate as evaluate_run
    from kagglecifar.inference.tta import TTA_VIEWS

    fraction = gating.check_fraction(gating.DEFAULT_FRACTION if tta_fraction is None else tta_fraction)
    modes = [tta] if isinstance(tta, str) else list(tta or TTA_VIEWS)
    return evaluate_run(
        Path(run),
        _path(data_dir, "data"),
        modes,
        test=True,
        batch_size=batch_size,
        device=device,
        tta_fraction=fraction,
    )


# ---- submit ------------------------------------------------------------------------------------------


@dataclass
class SubmitResult:
    csv_path: Path
    competition: str
    ref: int
    status: str  # complete, or pending when not scored yet
    public_score: float | None
    seconds: float
    waited: bool

    def line(self) -> str:
        if self.status == "complete":
            return (
                f"{self.csv_path} scored {self.public_score:.5f} (public) on {self.competition}, "
                f"submission {self.ref}, {self.seconds:.1f} s"
            )
        return (
            f"{self.csv_path} uploaded to {self.competition} as submission {self.ref}, not scored yet"
            f"{'' if self.waited else ' (--no-wait)'}; see `kagglecifar submissions`"
        )


@_checked
def submit(
    csv=None,
    message: str | None = None,
    competition: str = "cifar-10",
    data_dir: str | Path | None = None,
    submissions_dir: str | Path | None = None,
    wait: bool = True,
    timeout: float = 600.0,
) -> SubmitResult:
    """`kagglecifar submit`: check the CSV (default: the newest in submissions_dir), upload it with the message
    (default: 'kagglecifar CSV_NAME'), wait for its public score."""
    from kagglecifar.kaggle_io import submission_csv as submission

    csv_path = Path(csv) if csv is not None else submission.newest_submission(submissions_dir_of(submissions_dir))
    message = message or f"kagglecifar {csv_path.name}"
    result = submission.submit(
        csv_path, message, competition, data_dir=_path(data_dir, "data"), wait=wait, timeout=timeout
    )
    return SubmitResult(csv_path, competition, result.ref, result.status, result.public_score, result.seconds, wait)


# ---- run ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    runs_dir: Path
    stages: list = field(default_factory=list)  # pipeline.StageReport per stage
    seconds: float = 0.0

    def line(self) -> str:
        done = [r.name for r in self.stages if not r.skipped]
        return (
            f"{len(done)} of {len(self.stages)} stages ran ({', '.join(done) or 'all up to date'}) "
            f"in {self.seconds:.1f} s"
        )


@_checked
def run(
    model: str | None = None,
    preset: str | None = None,
    config: str | Path | None = None,
    set=None,
    data_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    submissions_dir: str | Path | None = None,
    competition: str = "cifar-10",
    from_dir: str | Path | None = None,
    dataset: str | None = None,
    format: str | None = None,
    labels: str | None = None,
    tta: str = "flip",
    tta_fraction: float | None = None,
    device: str = "auto",
    name: str | None = None,
    message: str | None = None,
    submit: bool = True,
    wait: bool = True,
    force: bool = False,
    log=None,
    confirm=None,
    echo=print,
) -> RunResult:
    """`kagglecifar run`: fetch, train, predict with TTA, submit; stages already complete are skipped. Without
    a preset and without CUDA it says what each preset would take here and takes cpu (confirm(question) -> bool
    may refuse). echo(line) gets one line per stage as it finishes."""
    from kagglecifar import pipeline
    from kagglecifar.inference.tta import check_tta_mode

    check_tta_mode(tta)
    sets = _sets(set)
    if log:
        sets.append(f"log={','.join([log] if isinstance(log, str) else log)}")
    started, runs_dir = time.perf_counter(), _path(runs_dir, "runs")
    stages = pipeline.run(
        model,
        preset=preset,
        config_file=Path(config) if config is not None else None,
        sets=sets,
        data_dir=_path(data_dir, "data"),
        runs_dir=runs_dir,
        submissions_dir=submissions_dir_of(submissions_dir),
        competition=competition,
        from_dir=Path(from_dir) if from_dir is not None else None,
        dataset=dataset,
        fmt=format,
        labels=labels,
        tta=tta,
        tta_fraction=tta_fraction,
        device=device,
        message=message,
        submit=submit,
        wait=wait,
        force=force,
        name=name,
        confirm=confirm,
        echo=echo,
    )
    return RunResult(runs_dir, stages, time.perf_counter() - started)
