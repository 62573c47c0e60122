"""Which recipe a training run gets: a preset is a model with its recipe (and maybe session settings); a model
trained with another model's preset takes its own family's recipe (models.recipe_preset) unless asked otherwise.

    field defaults < preset < --config FILE < --set key=value < options

make_config layers them and says, in config.notes, where each part came from and every value it did not take
or changed on the way; `train` prints those lines first. Options are declared in config.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kagglecifar.config import (
    ADAMW_DEFAULTS,
    MODEL_OPTIONS,
    SECTIONS,
    TrainConfig,
    check_config,
    default_preset,
    fields_of,
    from_flat,
    parse_sets,
    preset_values,
    read_recipe_file,
    section_of,
)


def model_recipe(model: str) -> tuple[dict, str]:
    """The recipe a model trains with when the preset asked for is another model's: its family's preset's
    recipe (models.recipe_preset; its width etc. only when that preset is this very model), at the model's
    default batch size with the rate scaled linearly. Returns (flat recipe values but the model, where they
    come from in words)."""
    from kagglecifar import models

    preset = models.recipe_preset(model)
    base = preset_values(preset)
    same_model = base.get("model") == model
    values = {
        k: v
        for k, v in base.items()
        if section_of(k) == "recipe" and k != "model" and (same_model or k not in MODEL_OPTIONS)
    }
    where = f"the {preset} preset's"
    batch, recipe_batch = models.default_batch_size(model), values.get("batch_size", default_of("batch_size"))
    if batch != recipe_batch:
        values["batch_size"] = batch
        values["lr"] = values.get("lr", default_of("lr")) * batch / recipe_batch
        where += f" at {model}'s batch {batch}, lr scaled to {values['lr']:g}"
    return values, where


def default_of(key: str):
    return fields_of(SECTIONS[section_of(key)])[key].default


def shown(values: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def make_config(
    model: str | None = None,
    preset: str | None = None,
    *,
    config_file: Path | None = None,
    sets: Sequence[str] = (),
    recipe_from_preset: bool = False,
    **options,
) -> TrainConfig:
    """Field defaults < preset (default: gpu with CUDA, else cpu) < config_file < sets < options (not None).

    A preset is a model with its recipe (and maybe session settings). When the model asked for is not the
    preset's, it trains with its own recipe (model_recipe) and the preset's session settings, or with the
    preset's recipe (less its width/dropout, which belong to its model) when recipe_from_preset is set.
    config.notes says where each part came from and names every preset value not taken and every value
    changed on the way (adamw's defaults, a model's options dropped when the model changes); `train` prints
    them first.
    """
    preset = preset or default_preset()
    base = preset_values(preset)
    layers = [
        (f"--config {config_file}", read_recipe_file(config_file) if config_file else {}),
        ("--set", parse_sets(list(sets))),
        ("options", {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}),
    ]
    if model:
        layers[-1][1]["model"] = model
    preset_model = base.get("model", default_of("model"))
    chosen = next((layer["model"] for _, layer in reversed(layers) if "model" in layer), preset_model)
    session = {k: v for k, v in base.items() if section_of(k) == "session"}
    session_from = (
        f"the {preset} preset's ({shown(session)})" if session else f"defaults (the {preset} preset sets none)"
    )
    notes, values = [], dict(base)
    if chosen == preset_model:
        recipe_from = f"the {preset} preset's"
    elif recipe_from_preset:
        values = {**{k: v for k, v in base.items() if k not in MODEL_OPTIONS}, "model": chosen}
        recipe_from = f"the {preset} preset's, made for {preset_model} (--recipe-from-preset)"
    else:
        own, where = model_recipe(chosen)
        values = {**session, **own, "model": chosen}
        recipe_from = (
            f"{chosen}'s own ({where}; not the {preset} preset's, made for {preset_model}: "
            "--recipe-from-preset takes that)"
        )
    unused = {k: v for k, v in base.items() if k != "model" and values.get(k, default_of(k)) != v}
    given = []
    for index, (name, layer) in enumerate(layers):
        if layer.get("model", values.get("model")) != values.get("model", preset_model):
            dropped = {k: values.pop(k) for k in MODEL_OPTIONS if k in values and k not in layer}
            if dropped:
                notes.append(
                    f"{name}: model {layer['model']}: {shown(dropped)} dropped (set for {values.get('model')})"
                )
        if layer.get("optimizer") == "adamw" and values.get("optimizer", default_of("optimizer")) != "adamw":
            later = {k for _, after in layers[index:] for k in after}
            injected = {k: v for k, v in ADAMW_DEFAULTS.items() if k not in later}
            if injected:
                before = {k: values.get(k, default_of(k)) for k in injected}
                notes.append(
                    f"{name}: optimizer adamw takes AdamW's {shown(injected)} in place of the recipe's "
                    f"{shown(before)}; give --{' and --'.join(k.replace('_', '-') for k in injected)} to choose"
                )
                values.update(injected)
        values.update(layer)
        shown_keys = {k: v for k, v in layer.items() if k != "model"}
        if shown_keys:
            given.append(f"{name}: {shown(shown_keys)}")
    model_name = values.get("model", preset_model)
    first = f"config: {model_name}; recipe: {recipe_from}; session: {session_from}"
    notes.insert(0, "; ".join([first, *given]))
    if unused:
        notes.insert(1, f"not taken from the {preset} preset: {shown(unused)}")
    config = from_flat(values, preset)
    config.notes = notes
    check_config(config)
    return config
