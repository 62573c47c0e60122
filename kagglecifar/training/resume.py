"""The resume guard: every way of continuing a run (`train --resume`, `--set resume=`, a recipe file's
`session: {resume: ...}`, `run` and `tune` continuing their folders) goes through `guard`, and the last.pt it
continues from through `check_resumable`.

A run keeps its recipe: continuing it with another one (more epochs, another learning rate, another model)
would leave config.yaml describing weights it did not train. What differs is said in one line; a last.pt
that does not belong to the run (copied from another, damaged, a best.pt renamed) is one line too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kagglecifar import rundir
from kagglecifar.config import MODEL_OPTIONS, Recipe, TrainConfig, coerce, fields_of
from kagglecifar.errors import KaggleCifarError, excerpt

TRAIN_STATE_KEYS = ("rng", "optimizer", "progress")


def saved_recipe(run_dir: Path) -> Recipe:
    """The recipe in a run's config.yaml (fields it predates take their defaults), or one line naming it."""
    saved = rundir.read_config(run_dir)["recipe"]
    where = str(Path(run_dir) / rundir.CONFIG)
    known = fields_of(Recipe)
    unknown = [key for key in saved if key not in known]
    if unknown:
        raise KaggleCifarError(f"{where}: recipe option {excerpt(unknown[0], 40)} is not one train knows")
    return Recipe(**{key: coerce(key, value, f"{where}: {key}") for key, value in saved.items()})


def differences(saved: Recipe, asked: Recipe, limit: int = 4) -> list[str]:
    shown = []
    for key in fields_of(Recipe):
        before, now = getattr(saved, key), getattr(asked, key)
        if before != now:
            shown.append(f"{key} {excerpt(before, 30)} there, {excerpt(now, 30)} now")
    return shown[:limit] + ([f"{len(shown) - limit} more"] if len(shown) > limit else [])


def guard(config: TrainConfig) -> TrainConfig:
    """config with session.resume resolved to the run folder; refused in one line when the run was trained
    with another recipe than config's (whether the run is finished or stopped)."""
    session = config.session
    run_dir = rundir.find_run(session.resume, session.runs_dir)
    differ = differences(saved_recipe(run_dir), config.recipe)
    if differ:
        raise KaggleCifarError(
            f"resume {run_dir}: was trained with another recipe ({'; '.join(differ)}); a run keeps its recipe: "
            "continue it with `train --resume` and no recipe options, or train a new run"
        )
    return dataclasses.replace(
        config, session=dataclasses.replace(session, resume=str(run_dir), runs_dir=str(run_dir.parent))
    )


def check_resumable(payload: dict, path: Path, config: TrainConfig) -> None:
    """last.pt must be this run's: its model, model options and recipe, with the state resuming needs."""
    recipe = config.recipe
    kwargs = payload.get("model_kwargs")
    if payload.get("model") != recipe.model:
        raise KaggleCifarError(
            f"{path}: holds a {excerpt(payload.get('model'), 40)} model, the run's recipe trains {recipe.model}; "
            "it is not this run's checkpoint"
        )
    asked = {k: v for k, v in config.model_kwargs().items() if k in MODEL_OPTIONS}
    if not isinstance(kwargs, dict) or {k: v for k, v in kwargs.items() if k in MODEL_OPTIONS} != asked:
        raise KaggleCifarError(
            f"{path}: its model options {excerpt(kwargs, 60) if not isinstance(kwargs, dict) else kwargs} differ "
            f"from the run's {asked}; it is not this run's checkpoint"
        )
    saved = payload.get("config")
    if isinstance(saved, dict) and isinstance(saved.get("recipe"), dict):
        try:
            checkpoint_recipe = Recipe(**{k: coerce(k, v, str(path)) for k, v in saved["recipe"].items()})
        except (KaggleCifarError, TypeError):
            checkpoint_recipe = None
        differ = differences(checkpoint_recipe, recipe) if checkpoint_recipe else ["an unreadable recipe"]
        if differ:
            raise KaggleCifarError(
                f"{path}: was saved by a run with another recipe ({'; '.join(differ)}); it is not this run's checkpoint"
            )
    state = payload.get("train_state")
    if not isinstance(state, dict) or any(key not in state for key in TRAIN_STATE_KEYS):
        raise KaggleCifarError(f"{path}: holds no training state to resume from (a best.pt, or damaged)")
    if not isinstance(state["progress"], dict) or not isinstance(payload.get("classes"), list):
        raise KaggleCifarError(f"{path}: its training state is damaged")
    done = state["progress"].get("epoch")
    if isinstance(done, int) and done >= recipe.epochs:  # resuming would only rewrite a finished run's results
        raise KaggleCifarError(
            f"{path.parent}: already trained all {recipe.epochs} epochs; nothing to resume "
            "(predict or evaluate it, or train a new run)"
        )
    _check_rng_state(state["rng"], path)


def _check_rng_state(rng, path: Path) -> None:
    """Set the saved random-number state once and put the current one back: a damaged one fails here, before
    the session prints or builds anything."""
    from kagglecifar.training import runtime

    current = runtime.rng_state(False)
    try:
        runtime.set_rng_state(rng, False)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError):
        raise KaggleCifarError(f"{path}: its random-number state is damaged") from None
    finally:
        runtime.set_rng_state(current, False)
