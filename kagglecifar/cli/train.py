"""`kagglecifar models` and `kagglecifar train` (its options generated from config.TrainConfig)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from kagglecifar.cli.app import (
    CONFIG_FILE,
    SETS,
    app,
    examples,
    preset_help,
    summary,
)


@app.command("models", epilog=examples("kagglecifar models", "kagglecifar models --width 0.25"))
def models_command(
    width: float = typer.Option(1.0, "--width", help="Width multiplier to size the models at (e.g. 0.25)."),
) -> None:
    """List the models `train` accepts: parameters, GFLOPs per image, default GPU batch, options."""
    from kagglecifar import models

    for line in models.model_table(width):
        typer.echo(line)
    summary(
        f"{len(models.model_names())} models at width {width:g} and a few recommended timm backbones; GFLOPs = "
        "forward pass of one image at the size the model sees (2 per multiply-add); train one with "
        "`kagglecifar train MODEL`. Any other timm model works too: `kagglecifar train timm/NAME` "
        "(timm.list_models(); pretrained weights from the Hugging Face hub, or --pretrained FILE offline)"
    )


def _config_parameters() -> tuple[list[inspect.Parameter], dict]:
    """One Typer option per TrainConfig field (but the model, which is the MODEL argument), defaulting to None
    so that only what the user gives overrides the preset; --help shows the default and each preset's value."""
    from kagglecifar import config, recipes

    presets = {name: recipes.preset_values(name) for name in recipes.preset_names()}
    parameters, annotations = [], {}
    for section in config.SECTIONS.values():
        types = config.field_types(section)
        for name, spec in config.fields_of(section).items():
            if name == "model":
                continue
            flag = "--" + name.replace("_", "-")
            shown = f"{spec.default}" if spec.default not in (None, "") else "none"
            differ = [
                f"{preset} preset: {values[name]}"
                for preset, values in presets.items()
                if name in values and values[name] != spec.default
            ]
            kind = types[name]
            decls = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
            metavar = spec.metadata["metavar"] or (
                "|".join(spec.metadata["choices"] or ()) or {int: "INT", float: "NUMBER", str: "TEXT"}.get(kind)
            )
            option = typer.Option(
                None,
                *decls,
                help=spec.metadata["help"],
                metavar=metavar,
                show_default="; ".join([shown, *differ]),
                rich_help_panel=section.__name__,
            )
            annotation = Optional[list[str]] if name == "log" else Optional[kind]  # --log is repeatable
            annotations[name] = annotation
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            )
    return parameters, annotations


def _train_command(model, preset, config_file, sets, recipe_from_preset=False, **options):
    import os

    from kagglecifar import api

    result = api.train(
        model, preset=preset, config=config_file, set=sets, recipe_from_preset=recipe_from_preset, **options
    )
    if int(os.environ.get("RANK", 0)) == 0:
        summary(f"train: {result.line()}")
    if result.stopped_reason == "interrupted":
        raise typer.Exit(130)


def _build_train_command():
    fixed = [
        inspect.Parameter(
            "model",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Optional[str],
            default=typer.Argument(
                None, metavar="MODEL", help="Model to train (see `kagglecifar models`; default: the preset's)."
            ),
        ),
        inspect.Parameter(
            "preset",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[str],
            default=typer.Option(
                None,
                "--preset",
                metavar="NAME",
                help=preset_help("A model with its recipe")
                + " With a MODEL that is not the preset's, MODEL trains with its own family's recipe (ResNets: "
                "gpu's, airbench: fast's, simplecnn and mlp: baseline's, resnet50-imagenet: transfer-resnet50's, "
                "timm/NAME: transfer's) and the "
                "preset's session settings; the first line says where each part came from.",
            ),
        ),
        inspect.Parameter(
            "recipe_from_preset",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(
                False,
                "--recipe-from-preset",
                help="Train MODEL with the preset's recipe even though it was made for another model "
                "(its width and dropout are left out, with a line saying so).",
            ),
        ),
        inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=CONFIG_FILE
        ),
        inspect.Parameter("sets", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]], default=SETS),
    ]
    generated, annotations = _config_parameters()

    def train_command(**kwargs):
        """Train a model on the cached train images; writes RUNS_DIR/NAME/ (config.yaml, metrics, checkpoints,
        curves, confusion matrix).

        Values come from, later winning: the defaults, the preset, --config FILE, --set KEY=VALUE, then the
        options below. A preset is a model and its recipe: MODEL other than the preset's trains with its own
        family's recipe and the preset's session settings (or the preset's recipe with --recipe-from-preset).
        The first line printed says where each part came from and names every preset value not taken or
        changed (a model's width or dropout, AdamW's lr and weight decay).
        Several GPUs: one process each by default (--processes N; --processes 2 --device cpu runs two CPU
        processes); torchrun --nproc_per_node N -m kagglecifar train MODEL ... works too.
        """
        _train_command(
            kwargs.pop("model"),
            kwargs.pop("preset"),
            kwargs.pop("config_file"),
            kwargs.pop("sets"),
            kwargs.pop("recipe_from_preset"),
            **kwargs,
        )

    train_command.__dict__["__signature__"] = inspect.Signature(fixed + generated)  # what Typer reads
    train_command.__annotations__ = {**{p.name: p.annotation for p in fixed}, **annotations}
    return train_command


app.command(
    "train",
    epilog=examples(
        "kagglecifar train                                   # the preset for this machine",
        "kagglecifar train resnet18 --preset gpu --epochs 60",
        "kagglecifar train simplecnn                         # simplecnn's own recipe (the baseline preset's)",
        "kagglecifar train resnet18 --preset cpu --recipe-from-preset",
        "kagglecifar train --config runs/resnet18-20261123-101500/config.yaml --set seed=1",
        "kagglecifar train --resume resnet18-20261123-101500",
    ),
)(_build_train_command())
