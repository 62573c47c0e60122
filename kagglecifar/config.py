"""Training configuration: the one place where every `train` option is declared.

    TrainConfig = preset name
                + Recipe   what the trained model is: fixed once a run starts, so `--resume` keeps it
                + Session  how and where this invocation runs: may differ when a run is resumed

Each field declares its help text, its check and (for strings) its choices once, in field metadata;
the `train` command's options, `--help` defaults, validation, recipe files and `--set` all come from it.
Values are layered, later wins:

    field defaults < preset (kagglecifar/presets/NAME.yaml) < --config FILE < --set key=value < options

recipes.make_config layers them and says where each part came from.
A recipe file is YAML (or JSON) with `recipe:` and `session:` sections or flat keys; every run folder's
config.yaml is one, so `kagglecifar train --config runs/NAME/config.yaml` trains that run again.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagglecifar.console import choices_text
from kagglecifar.data.augment import PRESETS as AUGMENT_PRESETS
from kagglecifar.errors import KaggleCifarError, excerpt

PRESETS_DIR = Path(__file__).with_name("presets")
ADAMW_DEFAULTS = {"lr": 2e-3, "weight_decay": 0.05}  # taken, with a line saying so, when adamw comes without them
# passed to create_model when set
MODEL_OPTIONS = (
    "width",
    "dropout",
    "freeze_stages",
    "unfreeze_epoch",
    "pretrained",
    "image_size",
    "head",
    "head_dropout",
)


def option(
    default,
    help: str,
    check: tuple[Callable[[Any], bool], str] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
):
    """A config field with its help, an optional (predicate, rule) check and choices."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "metavar": metavar})


AT_LEAST_0 = (lambda v: v >= 0, "must be 0 or more")
POSITIVE = (lambda v: v > 0, "must be positive")
FINITE_POSITIVE = (lambda v: not math.isfinite(v) or v > 0, "must be positive")  # check_config refuses inf, nan
UNIT_INTERVAL = (lambda v: 0 <= v < 1, "must be in [0, 1)")
AT_MOST_1 = (lambda v: 0 < v <= 1, "must be in (0, 1]")
HEADS = (lambda v: v in ("linear", "mlp"), "choose linear or mlp")


@dataclass
class Recipe:
    model: str = option("resnet18", "Model to train (see `kagglecifar models`).", metavar="MODEL")
    width: float | None = option(None, "Model width multiplier (e.g. 0.25); default: the model's.", POSITIVE)
    dropout: float | None = option(None, "Dropout before the classifier; default: the model's.", UNIT_INTERVAL)
    freeze_stages: int | None = option(None, "Frozen stem and first stages of a pretrained backbone.", AT_LEAST_0)
    unfreeze_epoch: int | None = option(None, "Epochs before the frozen stages train too (0: never).", AT_LEAST_0)
    pretrained: str | None = option(None, "timm/ weights: hub (default), none, or a .safetensors/.pt/.pth file.")
    image_size: int | None = option(None, "Upsample to this size on the device (default: the backbone's).", POSITIVE)
    head: str | None = option(None, "timm/ classifier: linear (default) or mlp (dropout, 256 units + BN).", HEADS)
    head_dropout: float | None = option(None, "Dropout in front of the mlp head (default 0.25).", UNIT_INTERVAL)
    backbone_lr_scale: float | None = option(
        None, "timm/ backbone's rate relative to the head's (default 1).", POSITIVE
    )
    layer_decay: float | None = option(None, "Per-layer rate factor from the head down (timm/; 1: off).", AT_MOST_1)
    epochs: int = option(
        40, "Passes over the training split.", (lambda v: 1 <= v <= 100_000, "must be at least 1 (and at most 100,000)")
    )
    batch_size: int = option(
        512,
        "Images per step (all processes together).",
        (lambda v: 2 <= v <= 1 << 20, "must be at least 2 (and at most 1,048,576)"),
    )
    accumulate: int = option(
        1,
        "Split each batch into this many micro-batches whose gradients add up to one step (when the batch does "
        "not fit in memory).",
        (lambda v: v >= 1, "must be at least 1"),
    )
    hardest_share: float = option(
        1.0,
        "Train each step on this share of its batch: the images with the highest loss in a forward pass without "
        "gradients (airbench96_faster's data selection, the net as its own judge; two images at least); 1: every "
        "image.",
        AT_MOST_1,
    )
    lr: float = option(0.2, "Peak learning rate.", FINITE_POSITIVE)
    optimizer: str = option(
        "sgd",
        "sgd (Nesterov momentum), adamw (then lr 2e-3 and weight decay 0.05 "
        "unless given) or muon (Muon on conv filters at --muon-lr, Nesterov SGD at --lr "
        "on the rest).",
        choices=("sgd", "adamw", "muon"),
    )
    muon_lr: float = option(
        0.24, "Peak rate of Muon's conv-filter updates (--optimizer muon); scheduled like --lr.", FINITE_POSITIVE
    )
    momentum: float = option(0.9, "SGD's Nesterov momentum.", UNIT_INTERVAL)
    schedule: str = option(
        "onecycle",
        "onecycle (linear warm-up, linear decay to 0), cosine (warm-up, cosine "
        "decay to 0) or triangle (airbench: 0.2x rising to 1x at 23% of the steps, down to "
        "0.07x; no warm-up).",
        choices=("onecycle", "cosine", "triangle"),
    )
    warmup_epochs: float = option(2.0, "Linear learning-rate warm-up, in epochs.", AT_LEAST_0)
    weight_decay: float = option(5e-4, "Weight decay on weights (not on norms and biases).", AT_LEAST_0)
    label_smoothing: float = option(0.1, "Cross-entropy label smoothing.", UNIT_INTERVAL)
    ema: bool = option(False, "Keep an exponential moving average of the weights; it is what gets evaluated and saved.")
    ema_decay: float = option(0.999, "EMA decay per step.", (lambda v: 0 < v < 1, "must be in (0, 1)"))
    lookahead: bool = option(
        False,
        "airbench's Lookahead: every 5 steps pull the weights towards a slow copy "
        "(decay 0.95^5 x progress^3); the run ends on the slow weights.",
    )
    augment: str = option(
        "standard",
        f"A preset: {choices_text(AUGMENT_PRESETS)}; or an albumentations pipeline saved with A.save (.json/.yaml).",
        metavar="PRESET|FILE",
    )
    batched_augment: bool = option(
        True,
        "Run the augmentation as per-sample-random tensor ops on the training "
        "device, a batch at a time, when every transform has a batched equivalent; "
        "otherwise albumentations in CPU workers (said in one line).",
    )
    alternate_flip: bool = option(
        False,
        "airbench's flips: each image gets one random flip, mirrored every "
        "other epoch, instead of a fresh coin per epoch (batched only).",
    )
    val_fraction: float = option(
        0.1,
        "Stratified validation share of the train images; 0 trains on all.",
        (lambda v: 0 <= v < 1, "must be in [0, 1) (0 = train on everything)"),
    )
    seed: int = option(0, "Seeds the split, initialisation, data order and augmentation.", AT_LEAST_0)
    patience: int = option(
        0,
        "Stop after this many epochs without a better validation accuracy (0: never).",
        (lambda v: v >= 0, "must be 0 (off) or more epochs"),
    )
    val_every: int = option(
        1,
        "Validate every N epochs and after the last; 0: after the last only (validation stays out of the "
        "timed training, as in the speed records).",
        AT_LEAST_0,
    )
    amp: bool = option(
        True,
        "Mixed precision where the device has it: bf16 autocast on CUDA capability 8.0+, fp16 with loss "
        "scaling on 7.x; fp32 elsewhere (`kagglecifar doctor` shows the plan).",
    )
    channels_last: bool = option(True, "channels_last memory format: faster convolutions on CUDA and on CPU.")


@dataclass
class Session:
    device: str = option("auto", "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")
    workers: int | None = option(
        None,
        "DataLoader processes augmenting batches; default: min(8, cores) on CUDA, 0 on CPU.",
        (lambda v: 0 <= v <= 256, "must be 0 or more (and at most 256)"),
    )
    compile: bool = option(False, "torch.compile the model.")
    time_budget: float = option(
        0.0,
        "Stop after this many seconds at a step boundary, with last.pt saved (continue with --resume); 0: no limit.",
        (lambda v: v >= 0, "must be 0 (none) or more seconds"),
    )
    data_dir: str = option("data", "Where downloads and the image cache live.")
    runs_dir: str = option("runs", "Where training runs are written.")
    name: str = option("", "Run folder name (default: MODEL-DATE-TIME).")
    resume: str = option(
        "",
        "Continue a stopped run (name or folder) from its last.pt; only session options "
        "(device, workers, compile, time budget, folders) may change.",
        metavar="RUN",
    )
    processes: int | None = option(
        None,
        "Training processes (DDP), launched by this command: default one per visible CUDA GPU when there are "
        "several, else 1; on CPU, N gloo processes.",
        (lambda v: v >= 1, "must be at least 1"),
        metavar="N",
    )
    log: str = option(
        "",
        "Experiment trackers to log to: tensorboard (into the run folder), wandb, mlflow (repeatable).",
        (lambda v: check_trackers(v), "choose tensorboard, wandb or mlflow"),
        metavar="TRACKER",
    )


@dataclass
class TrainConfig:
    recipe: Recipe = field(default_factory=Recipe)
    session: Session = field(default_factory=Session)
    preset: str = ""
    notes: list[str] = field(default_factory=list, compare=False, repr=False)  # where each part came from

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "recipe": dataclasses.asdict(self.recipe),
            "session": dataclasses.asdict(self.session),
        }

    def to_yaml(self) -> str:
        """The recipe file of this run: `train --config` on it reproduces the run (under a new name)."""
        import yaml

        values = self.to_dict()
        for per_run in ("name", "resume"):
            values["session"].pop(per_run)
        return "# kagglecifar train recipe: `kagglecifar train --config THIS_FILE` trains it again\n" + yaml.safe_dump(
            values, sort_keys=False
        )

    def model_kwargs(self) -> dict:
        """What create_model needs besides the name and class count (saved in every checkpoint)."""
        return {key: getattr(self.recipe, key) for key in MODEL_OPTIONS if getattr(self.recipe, key) is not None}


SECTIONS = {"recipe": Recipe, "session": Session}


def check_trackers(names: str) -> bool:
    from kagglecifar.training.trackers import TRACKERS

    return all(name in TRACKERS for name in tracker_names(names))


def tracker_names(value: str) -> list[str]:
    """--log's value: tracker names, comma-separated (the CLI joins a repeated --log)."""
    return [name.strip() for name in str(value or "").split(",") if name.strip()]


def fields_of(section: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section)}


def field_types(section: type) -> dict[str, type]:
    """Each field's plain type (int, float, str, bool), with Optional unwrapped."""
    hints = typing.get_type_hints(section)
    plain = {}
    for name, hint in hints.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        plain[name] = args[0] if args else hint
    return plain


def section_of(key: str) -> str:
    for section, cls in SECTIONS.items():
        if key in fields_of(cls):
            return section
    raise KaggleCifarError(f"unknown train option {excerpt(key, 40)}; known: {', '.join(all_keys())}")


def all_keys() -> list[str]:
    return [name for cls in SECTIONS.values() for name in fields_of(cls)]


def read_yaml_or_json(path: Path, where: str, what: str):
    """The data of a YAML file (JSON when it ends in .json), or one line naming `where` and the problem."""
    from kagglecifar import records

    return records.read_yaml_or_json(path, where, what)


def coerce(key: str, value, where: str):
    """value converted to the field's type (YAML gives 1 for 1.0, strings for paths), or a clear error."""
    kind = field_types(SECTIONS[section_of(key)])[key]
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise KaggleCifarError(f"{where}: expected true or false, got {excerpt(value)}")
    if kind is str:
        if isinstance(value, (dict, list)):
            raise KaggleCifarError(f"{where}: expected a text value, got {excerpt(value)}")
        return str(value)
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise KaggleCifarError(
            f"{where}: expected {'an integer' if kind is int else 'a number'}, got {excerpt(value)}"
        ) from None


# ---- building and checking a config --------------------------------------------------------------


def from_flat(values: dict, preset: str = "") -> TrainConfig:
    parts = {section: {k: v for k, v in values.items() if section_of(k) == section} for section in SECTIONS}
    return TrainConfig(Recipe(**parts["recipe"]), Session(**parts["session"]), preset)


def resume_config(saved: dict, run: str, **options) -> TrainConfig:
    """A stopped run's config (as saved) with new session options; recipe options must not change.

    A time budget is per session: it applies again only when given again.
    """
    flat = {**saved.get("recipe", {}), **saved.get("session", {}), "time_budget": 0.0, "name": ""}
    flat = {key: coerce(str(key), value, f"--resume {run}: its config.yaml: {key}") for key, value in flat.items()}
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}
    changed = [k for k, v in options.items() if section_of(k) == "recipe" and flat.get(k) != v]
    if changed:
        names = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise KaggleCifarError(
            f"--resume {run}: cannot change {names} of a run "
            f"(it has {', '.join(f'{k}={flat.get(k)!r}' for k in changed)})"
        )
    config = from_flat({**flat, **options}, saved.get("preset", ""))
    check_config(config, resuming=True)
    return config


MAX_INT = 2**31  # every integer option (epochs, batch size, seed, ...) stays below it


def _check_model_options(recipe: Recipe) -> None:
    """--width, --dropout, --freeze-stages only for a model that takes them: never saved and silently unused."""
    from kagglecifar import models

    given = [key for key in MODEL_OPTIONS if getattr(recipe, key) is not None]
    if not given or recipe.model not in models.model_names():
        return  # an unknown model is refused where it is built, with the list of models
    takes = models.model_options(recipe.model)
    for key in given:
        if key not in takes:
            options = [k for k in MODEL_OPTIONS if k in takes]
            raise KaggleCifarError(
                f"--{key.replace('_', '-')} {getattr(recipe, key)}: model {recipe.model} has no {key} option"
                + (f" (it takes {', '.join('--' + k.replace('_', '-') for k in options)})" if options else "")
            )


def check_config(config: TrainConfig, resuming: bool = False) -> None:
    """One clear KaggleCifarError for the first bad value."""
    for part in (config.recipe, config.session):
        for name, spec in fields_of(type(part)).items():
            value = getattr(part, name)
            check, choices = spec.metadata["check"], spec.metadata["choices"]
            flag = "--" + name.replace("_", "-")
            shown = excerpt(value)[1:-1] if isinstance(value, str) else excerpt(value)
            if value is not None and check and not check[0](value):
                raise KaggleCifarError(f"{flag} {shown}: {check[1]}")
            if isinstance(value, float) and not math.isfinite(value):
                raise KaggleCifarError(f"{flag} {shown}: must be a finite number")
            if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT < value < MAX_INT:
                raise KaggleCifarError(f"{flag} {shown}: out of range (at most {MAX_INT - 1:,})")
            if choices and value not in choices:
                raise KaggleCifarError(f"{flag} {shown}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    recipe, session = config.recipe, config.session
    _check_model_options(recipe)
    if recipe.accumulate > recipe.batch_size // 2:
        raise KaggleCifarError(
            f"--accumulate {recipe.accumulate}: needs micro-batches of at least 2 images (--batch-size "
            f"{recipe.batch_size})"
        )
    if recipe.patience and not recipe.val_fraction:
        raise KaggleCifarError(f"--patience {recipe.patience}: needs a validation split (--val-fraction > 0)")
    if session.name and not resuming:
        from kagglecifar import rundir

        rundir.check_new_run(Path(session.runs_dir), session.name)
    from kagglecifar.data.augment import build_pipeline
    from kagglecifar.device import resolve_device

    if recipe.augment not in AUGMENT_PRESETS:
        build_pipeline(recipe.augment)  # a clear error for a bad pipeline file
    resolve_device(session.device)
    from kagglecifar.training.trackers import check_installed

    check_installed(tracker_names(session.log))
