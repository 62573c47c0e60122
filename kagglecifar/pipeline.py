"""`kagglecifar run`: fetch -> train -> predict with TTA -> submit, each stage skipped when its output
is complete and up to date, so an interrupted run picks up where it stopped.

    stage    output                              skipped when
    fetch    DATA_DIR/cache/{train,test}         the cache matches its source (cache.build, cache.sources decide)
    train    RUNS_DIR/NAME/ (NAME = MODEL-PRESET)  result.json says the run ended for good; a stopped run resumes
    predict  submissions/NAME-TTA.csv            the CSV is newer than the checkpoint it came from
    submit   submissions/NAME-TTA.submitted.json the record is newer than the CSV
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kagglecifar import checkpoint, provenance, records, rundir
from kagglecifar.cache.sources import COMPETITION, cache_format
from kagglecifar.console import duration
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_path
from kagglecifar.kaggle_io import kaggle_env
from kagglecifar.recipes import make_config, preset_names, preset_values

# What each preset gives. cpu: measured on a 2-core machine (benchmarks/README.md); gpu: what this recipe is
# known to reach.
PRESET_EXPECTATIONS = {
    "gpu": "ResNet-18's recipe, known to reach about 95% validation accuracy in minutes on a modern GPU",
    "cpu": "airbench94 at a quarter width; it reached 85.8-86.0% validation accuracy with flip TTA on the real "
    "images in 4-4.5 minutes of training on a 2-core machine",
}
CSV_FILES = ("trainLabels.csv", "sampleSubmission.csv")


@dataclass
class StageReport:
    name: str
    seconds: float
    skipped: bool
    detail: str

    def line(self) -> str:
        return f"{self.name:<8} {'skipped' if self.skipped else 'done':<8} {self.seconds:8.1f} s  {self.detail}"


def fetch(
    competition: str,
    data_dir: Path,
    *,
    from_dir: Path | None = None,
    dataset: str | None = None,
    fmt: str | None = None,
    labels: str | None = None,
    force: bool = False,
    keep_png: bool = False,
    workers: int | None = None,
) -> tuple[str, bool]:
    """Build the cache from the competition download (default), Kaggle dataset OWNER/NAME (downloaded into
    DATA_DIR/datasets/OWNER/NAME) or from_dir; return (summary, whether anything was done).

    A dataset or from_dir may hold any source format (kagglecifar.cache.formats), recognised unless fmt is given;
    labels ("fine"/"coarse") picks CIFAR-100's label set.
    """
    from kagglecifar import kaggle_io
    from kagglecifar.cache import formats

    data_dir = Path(data_dir)
    if from_dir is not None and dataset is not None:
        raise KaggleCifarError("--from-dir and --dataset: give one of them")
    if fmt is not None and fmt not in formats.FORMATS:
        raise KaggleCifarError(f"--format {fmt}: choose from {', '.join(formats.FORMATS)}")
    found, fetched, did_download = None, "", False
    if dataset is not None:
        folder = data_dir / "datasets" / kaggle_io.dataset_folder(dataset)
        downloads = kaggle_io.download_dataset(dataset, folder, force=force)
        fetched, did_download = f"dataset {dataset}: {downloads.line()}", bool(downloads.downloaded)
        found = formats.locate(folder, fmt)
    elif from_dir is not None:
        found = formats.locate(from_dir, fmt)
    elif fmt in (None, COMPETITION) and (attached := kaggle_env.competition_input(competition)) is not None:
        found = formats.locate(attached, COMPETITION)  # a Kaggle notebook's attached data: no download
    elif fmt not in (None, COMPETITION):
        raise KaggleCifarError(
            f"--format {fmt}: the {competition} download is in the competition format; "
            f"give --from-dir PATH or --dataset OWNER/NAME with {fmt} data"
        )
    if found is None or found.format == COMPETITION:
        if labels is not None:
            raise KaggleCifarError(
                f"--labels {labels}: only CIFAR-100 python data has fine and coarse labels; "
                "the competition's files are CIFAR-10"
            )
        line, did_work = _fetch_competition(competition, data_dir, found, force, keep_png, workers)
        return "; ".join(filter(None, [fetched, line])), did_download or did_work

    from kagglecifar.cache.sources import build_from_source

    if keep_png:
        raise KaggleCifarError(f"--keep-png: only for the competition's archives; {found.path} is {found.format} data")
    fetched = fetched or f"{found.path} read in place"
    built = build_from_source(found, data_dir, labels=labels or "fine", force=force)
    splits = list(built.splits.values())
    what = found.format + (f" {found.kind}" if found.kind else "") + (f", {labels} labels" if labels else "")
    test = "" if "test" in built.splits else " (no test split)"
    images = ", ".join(f"{s.split} {s.count:,}" + (" (up to date)" if s.skipped else "") for s in splits)
    line = f"{fetched} ({what}); {images} images{test} in {built.cache_dir}, {sum(s.bad for s in splits)} undecodable"
    return line, did_download or not all(s.skipped for s in splits)


def _fetch_competition(
    competition: str, data_dir: Path, found, force: bool, keep_png: bool, workers: int | None
) -> tuple[str, bool]:
    """The competition's files, downloaded (found is None) or found in place, through cache.build."""
    from kagglecifar import kaggle_io
    from kagglecifar.cache.build import build_cache

    if found is None:
        downloads = kaggle_io.download_competition(competition, data_dir, force=force)
        fetched, did_download, source = downloads.line(), bool(downloads.downloaded), data_dir
    else:
        fetched, did_download, source = f"archives read in place from {found.path}", False, found.path
        _copy_csvs(found.path, data_dir)
    built = build_cache(source, data_dir, force=force, keep_png=keep_png, workers=workers)
    splits = list(built.splits.values())
    images = ", ".join(f"{s.split} {s.count:,}" + (" (up to date)" if s.skipped else "") for s in splits)
    line = f"{fetched}; {images} images in {built.cache_dir}, {sum(s.bad for s in splits)} undecodable"
    return line, did_download or not all(s.skipped for s in splits)


def _copy_csvs(from_dir: Path, data_dir: Path) -> None:
    """Predict and submit read the CSVs from DATA_DIR; copy them there (they are small) when missing or changed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in CSV_FILES:
        source, target = from_dir / name, data_dir / name
        if not source.is_file():
            raise KaggleCifarError(f"{source}: missing; --from-dir needs {', '.join(CSV_FILES)}, train.7z and test.7z")
        if source.resolve() == target.resolve():
            continue
        if target.is_file() and target.read_bytes() == source.read_bytes():
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def choose_preset(
    model: str | None, preset: str | None, confirm: Callable[[str], bool] | None, echo: Callable[[str], None]
) -> tuple[str, str | None]:
    """(preset, model) to run: as given; else gpu with CUDA; else (CPU only) say what MODEL (or the gpu preset)
    would take here and what the cpu preset would, both measured, and offer the cpu preset, which trains its
    own model (the model returned is then None)."""
    import torch

    if preset:
        return preset, model
    if torch.cuda.is_available():
        return "gpu", model
    asked, cpu = _estimate(model, "gpu"), _estimate(None, "cpu")
    what = "The gpu preset" if model is None else model
    echo(f"No CUDA GPU here. {what} ({asked.what}{_expected(asked, 'gpu')}) would take {asked.time} on this CPU.")
    echo(f"The cpu preset ({cpu.what}{_expected(cpu, 'cpu')}) would take {cpu.time}.")
    if confirm is not None and not confirm("Run the cpu preset?"):
        again = f"kagglecifar run {model} --preset gpu" if model else "kagglecifar run --preset gpu"
        raise KaggleCifarError(
            f"stopped: run `{again}` on a GPU machine (or here, if you can wait), or `kagglecifar run --preset cpu`"
        )
    instead = f" in place of {model}" if model and model != cpu.model else ""
    echo(f"Using --preset cpu ({cpu.model}{instead}; pass --preset gpu to insist on the full recipe).")
    return "cpu", (model if not instead else None)


def _expected(estimate: Estimate, preset: str) -> str:
    """What the preset is known to reach, when it trains the preset's own model."""
    return f"; {PRESET_EXPECTATIONS[preset]}" if estimate.model == preset_values(preset)["model"] else ""


@dataclass
class Estimate:
    model: str
    what: str  # "resnet18 with its recipe, 40 epochs"
    time: str  # "about 14.1 h (21 m per epoch, 36 images/s measured)"


def _estimate(model: str | None, preset: str) -> Estimate:
    """Training time on this machine, from a few steps of the training code's own step (training_step) with the
    recipe's optimizer, at the recipe's batch size up to 64."""
    import torch

    from kagglecifar import models
    from kagglecifar.training.optim import make_optimizer
    from kagglecifar.training.step import training_step

    config = make_config(model, preset, device="cpu")
    recipe = config.recipe
    kwargs = models.without_pretrained_weights(recipe.model, config.model_kwargs())  # timing needs no weights
    net = models.create_model(recipe.model, num_classes=10, **kwargs)
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, recipe)
    batch = min(recipe.batch_size, 64)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    seconds = 0.0
    for step in range(3):
        started = time.perf_counter()
        training_step(net, optimizer, x, y, recipe.label_smoothing, hardest=recipe.hardest_share)
        seconds += (time.perf_counter() - started) if step else 0.0  # the first step warms up
    rate = 2 * batch / seconds
    epoch = 45_000 / rate
    width = f" at width {recipe.width:g}" if recipe.width else ""
    return Estimate(
        recipe.model,
        f"{recipe.model}{width}, {recipe.epochs} epochs",
        f"about {duration(recipe.epochs * epoch)} ({duration(epoch)} per epoch, {rate:,.0f} images/s measured)",
    )


def _existing_preset(model: str | None, runs_dir: Path, name: str | None) -> str | None:
    """The preset of a run that `run` already started with these arguments: no need to ask again."""
    for preset in preset_names():
        run_dir = Path(runs_dir) / (name or f"{model or preset_values(preset)['model']}-{preset}")
        if rundir.is_run(run_dir):
            saved = rundir.read_config(run_dir)
            if saved.get("preset") == preset and (model is None or saved["recipe"].get("model") == model):
                return preset
    return None


def run(
    model: str | None,
    *,
    preset: str | None,
    config_file: Path | None = None,
    sets: Sequence[str] = (),
    data_dir: Path,
    runs_dir: Path,
    submissions_dir: Path,
    competition: str,
    from_dir: Path | None = None,
    dataset: str | None = None,
    fmt: str | None = None,
    labels: str | None = None,
    tta: str = "flip",
    tta_fraction: float | None = None,
    device: str = "auto",
    message: str | None = None,
    submit: bool = True,
    wait: bool = True,
    force: bool = False,
    name: str | None = None,
    confirm: Callable[[str], bool] | None = None,
    echo: Callable[[str], None] = print,
) -> list[StageReport]:
    """All stages in order; echo()s one line per stage as it finishes and returns the reports.

    Data other than the competition's (--dataset, or --from-dir with another format) runs with submit=False
    only: Kaggle's competition scores its own test set alone.
    """
    from kagglecifar.inference import gating, predict
    from kagglecifar.kaggle_io import submission_csv as submission
    from kagglecifar.training import train
    from kagglecifar.training.launch import train_processes

    if tta_fraction is not None:
        gating.check_fraction(tta_fraction)
    if name is not None:
        rundir.check_run_name(name)  # before anything touches the disk
    preset = preset or _existing_preset(model, runs_dir, name)
    if not preset:
        preset, model = choose_preset(model, preset, confirm, echo)
    recipe: dict[str, Any] = dict(config_file=config_file, sets=list(sets))
    folders: dict[str, Any] = dict(data_dir=str(data_dir), runs_dir=str(runs_dir), device=device)
    config = make_config(model, preset, **recipe, **folders)
    name = name or f"{config.recipe.model}-{preset}"
    run_dir = Path(runs_dir) / name
    if run_dir.exists() and not rundir.is_run(run_dir):
        raise KaggleCifarError(f"{run_dir}: exists and is not a kagglecifar run; choose another --name")
    _check_same_recipe(run_dir, config)
    reports: list[StageReport] = []

    def stage(stage_name: str, work: Callable[[], tuple[str, bool]]) -> None:
        started = time.perf_counter()
        detail, did_work = work()
        reports.append(StageReport(stage_name, time.perf_counter() - started, not did_work, detail))
        echo(reports[-1].line())

    stage(
        "fetch",
        lambda: fetch(competition, data_dir, from_dir=from_dir, dataset=dataset, fmt=fmt, labels=labels, force=force),
    )
    built_from = cache_format(data_dir, "test") or cache_format(data_dir, "train")
    if submit and built_from != COMPETITION:
        raise KaggleCifarError(
            f"{Path(data_dir) / 'cache'}: holds {built_from} data, not the {competition} "
            "competition's files; there is nothing on Kaggle to submit its predictions to: "
            "add --no-submit"
        )

    def train_stage() -> tuple[str, bool]:
        if rundir.finished(run_dir):
            return f"{run_dir} already trained", False
        if (run_dir / "last.pt").is_file():
            result = train_processes(train.resume_config(run_dir, runs_dir, device=device))
        else:
            rundir.remove_unstarted(run_dir)  # killed before its first checkpoint: start afresh
            result = train_processes(make_config(model, preset, name=name, **recipe, **folders))
        if result.stopped_reason not in ("completed", "early_stopping"):
            raise KaggleCifarError(
                f"{run_dir}: training stopped ({result.stopped_reason}); run the same command again to continue it"
            )
        return result.line(), True

    stage("train", train_stage)

    best = checkpoint.resolve_checkpoint(run_dir)
    out = Path(submissions_dir) / f"{name}-{tta}.csv"

    def predict_stage() -> tuple[str, bool]:
        if built_from != COMPETITION and cache_format(data_dir, "test") is None:
            return f"nothing to predict: the {built_from} source has no test images", False
        if out.is_file() and out.stat().st_mtime >= best.stat().st_mtime and not force:
            return f"{out} is newer than {best}", False
        if out.is_file() and not force:
            raise KaggleCifarError(f"{out}: exists but is older than {best}; pass --force to replace it")
        fraction = gating.DEFAULT_FRACTION if tta_fraction is None else tta_fraction
        result = predict.predict_to_submission(
            [run_dir], data_dir, out, tta=tta, force=force, device=device, tta_fraction=fraction
        )
        return result.line(), True

    stage("predict", predict_stage)

    record = provenance.record_path(out)

    def submit_stage() -> tuple[str, bool]:
        if not submit and not out.is_file():
            return "not submitted (--no-submit)", False
        if not submit:
            return f"not submitted (--no-submit); later: kagglecifar submit {out} -m MESSAGE", False
        if record.is_file() and record.stat().st_mtime >= out.stat().st_mtime:
            try:
                previous = provenance.read_record(record)
            except records.Damaged as exc:
                raise KaggleCifarError(
                    f"{exc}; it is what says whether {out.name} was submitted: remove it to submit again, or "
                    "pass --no-submit"
                ) from None
            return (
                f"{out.name} was already submitted: {previous.get('status')}, score {previous.get('public_score')}",
                False,
            )
        text = message or f"kagglecifar {name}, TTA {tta}"
        result = submission.submit(out, text, competition, data_dir=data_dir, wait=wait)
        provenance.record_submission(out, result, text, competition, runs=[run_dir])
        score = f"public score {result.public_score}" if result.public_score is not None else result.status
        return f"{out.name}: {score}", True

    stage("submit", submit_stage)
    return reports


def _check_same_recipe(run_dir: Path, config) -> None:
    """A run folder `run` would skip or resume must hold the recipe asked for now, not an earlier one."""
    if not (run_dir / rundir.CONFIG).is_file():
        return
    saved = rundir.read_config(run_dir).get("recipe", {})
    asked = asdict(config.recipe)
    differ = [
        f"{key} {saved.get(key)!r} there, {value!r} now" for key, value in asked.items() if saved.get(key) != value
    ]
    if differ:
        raise KaggleCifarError(
            f"{run_dir}: was trained with another recipe ({'; '.join(differ)}); give another --name for this one"
        )


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()
