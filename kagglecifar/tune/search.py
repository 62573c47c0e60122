"""`kagglecifar tune MODEL`: hyper-parameter search with Optuna, every trial an ordinary training run.

    RUNS_DIR/tune-NAME/
      study.db                the Optuna study (SQLite); --storage URL keeps it in any database Optuna supports
      trial-0000/, ...        one run folder per trial: config.yaml, metrics.csv, best.pt, last.pt, ...
      results.csv             trial, state, parameters, best validation accuracy, epochs, seconds
      best.yaml               the best trial's recipe: `kagglecifar train --config` takes it
      history.png, importance.png, slices.png, trial_curves.png

Each trial reports its validation accuracy per epoch; the pruner (median or Hyperband) stops unpromising
ones (stopped_reason "pruned"); a trial whose training loss stops being finite ends at once and is recorded
as failed (Optuna's FAIL state, "diverged" in results.csv), never as a result. A search continues when the
same command runs again: a trial stopped by --timeout or Ctrl-C saves last.pt and is queued again with its
parameters, and so is one whose process died (storage.py); the retry resumes the run folder. Several
processes (or machines, with a shared --storage) running the same command work one study together. What a
search writes when it stops: results.py.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagglecifar import rundir
from kagglecifar.config import MODEL_OPTIONS
from kagglecifar.console import duration
from kagglecifar.errors import KaggleCifarError, TrainingDiverged
from kagglecifar.recipes import make_config
from kagglecifar.tune import space as search_space
from kagglecifar.tune.results import best_trial, state_counts, trial_line, write_outputs
from kagglecifar.tune.storage import HOST, open_storage, recover_dead_trials, requeue, shown_url

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
FINISHED = ("completed", "early_stopping", "pruned")  # a trial's run folder that needs no more training


class SearchStopped(Exception):
    """A trial stopped by the time limit or Ctrl-C: last.pt is saved and the trial is queued again."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TuneResult:
    tune_dir: Path
    storage: str  # password hidden
    counts: dict  # state -> trials
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    stopped: str = ""  # "", "time_budget" or "interrupted"
    seconds: float = 0.0

    def line(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.counts.items() if n) or "no trials"
        best = (
            f"best trial {self.best_number}: val accuracy {self.best_value:.2%}"
            if self.best_number is not None
            else "no completed trial yet"
        )
        stop = {
            "time_budget": "; --timeout reached: the running trial continues when the same command runs again",
            "interrupted": "; interrupted: run the same command to continue",
        }.get(self.stopped, "")
        return f"{counts}; {best}; {duration(self.seconds)}{stop}: {self.tune_dir}"


# ---- samplers and pruners -----------------------------------------------------------------------


def make_sampler(name: str, dimensions: list):
    import optuna

    if name == "tpe":
        # constant_liar: workers sharing a study don't all propose the point a running trial is testing
        return optuna.samplers.TPESampler(n_startup_trials=5, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler()
    if name == "grid":
        return optuna.samplers.GridSampler(search_space.grid_space(dimensions))
    raise KaggleCifarError(f"--sampler {name}: choose {', '.join(SAMPLERS)}")


def pruning_starts(epochs: int, dimensions: list) -> int:
    """The first epoch a trial may be pruned at: half its run, at least 2. While the rate is high, validation
    accuracy says little about the end: in the airbench cpu search the run that finished best (83.9%) stood
    at 43.8% in epoch 3, 20 points under the preset's run (83.7% at the end)."""
    searched = next((d for d in dimensions if d.key == "epochs"), None)
    shortest = int(min(searched.grid())) if searched else epochs
    return max(2, shortest // 2)


def make_pruner(name, starts: int = 2):
    """median: below the median of earlier trials at the same epoch, from epoch `starts` on, once 2 trials are
    done; hyperband: successive halving over epochs, from `starts`; none. A pruner object is taken as it is."""
    import optuna

    if not isinstance(name, str):
        return name
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=starts)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=starts, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise KaggleCifarError(f"--pruner {name}: choose {', '.join(PRUNERS)}")


# ---- one trial -------------------------------------------------------------------------------------


@dataclass
class Objective:
    """Optuna's objective: suggest a recipe, train (or resume) the trial's run folder, return its best
    validation accuracy."""

    model: str
    preset: str
    sets: list
    dimensions: list
    tune_dir: Path
    session: dict  # data_dir, device
    deadline: float | None  # time.monotonic() when --timeout ends
    epochs: int  # the base recipe's, for a space without epochs
    study: object = None

    def __call__(self, trial) -> float:
        import optuna

        params = {d.key: d.suggest(trial) for d in self.dimensions}
        run_dir = self._run_folder(trial)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        trial.set_user_attr("run", str(run_dir))

        def report(row: dict) -> bool:
            trial.report(row["val_acc"], int(row["epoch"]))
            # Pruning at the last epoch saves nothing and throws a finished result away.
            return int(row["epoch"]) < int(params.get("epochs", self.epochs)) and trial.should_prune()

        try:
            reason, best = self._train(run_dir, params, report)
        except KeyboardInterrupt:  # a second Ctrl-C: last.pt of the last whole epoch is there to resume
            requeue(self.study, trial.number, params, trial.user_attrs)
            raise
        except TrainingDiverged:  # optimize(catch=...) records the trial as failed and goes on
            self._record_epochs(trial, run_dir)
            trial.set_user_attr("diverged", rundir.divergence(run_dir) or "loss not finite")
            raise
        self._record_epochs(trial, run_dir)
        trial.set_user_attr("best_val_acc", best)
        if reason in ("time_budget", "interrupted"):
            trial.set_user_attr("stopped", reason)
            requeue(self.study, trial.number, params, trial.user_attrs)
            raise SearchStopped(reason)
        if reason == "pruned":
            raise optuna.TrialPruned()
        if best is None:
            raise KaggleCifarError(f"{run_dir}: the trial finished without a validation accuracy")
        return best

    @staticmethod
    def _record_epochs(trial, run_dir: Path) -> None:
        rows = rundir.read_metrics(run_dir)
        trial.set_user_attr("epochs", len(rows))
        trial.set_user_attr("seconds", sum(row["seconds"] or 0 for row in rows))

    def _run_folder(self, trial) -> Path:
        """A retry's earlier folder when it can be continued (or holds nothing yet), else the trial's own.
        (A retry on another machine finds no earlier folder there, and starts the trial afresh.)"""
        if "run" in trial.user_attrs:
            earlier = self.tune_dir / Path(trial.user_attrs["run"]).name
            if _resumable(earlier) or not earlier.exists() or rundir.remove_unstarted(earlier):
                return earlier
        # A folder killed between its first best.pt and last.pt has nothing to resume: start afresh beside it.
        return self.tune_dir / f"trial-{trial.number:04d}"

    def _train(self, run_dir: Path, params: dict, report) -> tuple[str, float | None]:
        """(stopped_reason, best val accuracy) of the trial's run folder, training what is left."""
        from kagglecifar.training import train

        budget: dict[str, Any] = {"time_budget": max(self.deadline - time.monotonic(), 1.0)} if self.deadline else {}
        if _resumable(run_dir):
            # A retry: the epochs done so far go to the pruner first, as if they had just been trained.
            prune = False
            for row in rundir.read_metrics(run_dir):
                prune = report(row)
            previous = rundir.read_result(run_dir).get("stopped_reason")
            if previous in FINISHED:
                return previous, _best(run_dir)
            if prune:  # the run folder says so too, for `compare`
                rundir.write_result(run_dir, {**rundir.read_result(run_dir), "stopped_reason": "pruned"})
                return "pruned", _best(run_dir)
            config = train.resume_config(run_dir, self.tune_dir, **self.session, **budget)
        else:
            config = make_config(
                self.model,
                self.preset,
                sets=self.sets,
                name=run_dir.name,
                resume="",
                runs_dir=str(self.tune_dir),
                **self.session,
                **budget,
                **params,
            )
        result = train.train(config, on_epoch=report)
        return result.stopped_reason, result.best_val_accuracy


def _resumable(run_dir: Path) -> bool:
    """A trial's run folder that a retry continues: finished for good, or with a last.pt."""
    return rundir.is_run(run_dir) and (
        rundir.read_result(run_dir).get("stopped_reason") in FINISHED or (run_dir / "last.pt").is_file()
    )


def _best(run_dir: Path) -> float | None:
    accuracies = [row["val_acc"] for row in rundir.read_metrics(run_dir) if row["val_acc"] is not None]
    return max(accuracies) if accuracies else None


# ---- the search ------------------------------------------------------------------------------------


def tune(
    model: str | None = None,
    *,
    preset: str | None = None,
    sets: Sequence[str] = (),
    space_file: Path | None = None,
    sampler: str = "tpe",
    pruner="median",
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    name: str | None = None,
    runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"),
    device: str = "auto",
    preset_first: bool = True,
    echo=print,
) -> TuneResult:
    """Run (or continue) the study RUNS_DIR/tune-NAME until `trials` trials have finished (complete or
    pruned, all workers together) or `timeout` seconds have passed; then write results, best.yaml, plots."""
    import optuna

    started = time.monotonic()
    if not trials and not timeout:
        raise KaggleCifarError("tune: give --trials N or --timeout SECONDS (or both), or the search never ends")
    session: dict[str, Any] = {"data_dir": str(data_dir), "device": device}
    base = make_config(model, preset, sets=list(sets), runs_dir=str(runs_dir), **session)
    if not base.recipe.val_fraction:
        raise KaggleCifarError("tune: trials are scored on the validation split; --set val_fraction=0 leaves none")
    model, preset = base.recipe.model, base.preset
    name = rundir.check_run_name(name or model)
    dimensions = search_space.read_space(space_file or search_space.default_space_path(model))
    _check_space(dimensions, model, preset, list(sets), session)
    tune_dir = Path(runs_dir) / f"tune-{name}"
    if tune_dir.exists() and rundir.is_run(tune_dir):
        raise KaggleCifarError(f"{tune_dir}: is a training run, not a search; choose another --name")
    if not storage:
        tune_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial says how each ended
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study_options = dict(
        study_name=name,
        storage=open_storage(url),
        sampler=make_sampler(sampler, dimensions),
        pruner=make_pruner(pruner, pruning_starts(base.recipe.epochs, dimensions)),
    )
    tune_dir.mkdir(parents=True, exist_ok=True)
    try:
        study, created = optuna.create_study(direction="maximize", **study_options), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**study_options), False
    _check_same_search(study, base, dimensions, name)
    if created and preset_first and sampler != "grid":
        inside, outside = {}, []
        for dimension in dimensions:
            value = _recipe_value(base, dimension.key)
            if dimension.contains(value):
                inside[dimension.key] = value
            else:
                outside.append(f"{dimension.key} {value}")
        if outside:
            one = len(outside) == 1
            echo(
                f"tune: the base recipe's {', '.join(outside)} {'lies' if one else 'lie'} outside the space; its "
                f"first trial samples {'it' if one else 'them'} instead"
            )
        study.enqueue_trial(inside, user_attrs={"preset_values": True})
    recover_dead_trials(study, echo)

    counts = state_counts(study)
    remaining = None if not trials else trials - counts["complete"] - counts["pruned"]
    objective = Objective(
        model,
        preset,
        list(sets),
        dimensions,
        tune_dir,
        session,
        started + timeout if timeout else None,
        base.recipe.epochs,
        study,
    )
    stopped = ""
    if remaining is None or remaining > 0:
        callbacks = [lambda s, t: echo(trial_line(s, t))]
        if trials:
            callbacks.append(
                optuna.study.MaxTrialsCallback(
                    trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                )
            )
        try:
            import torch

            study.optimize(
                objective,
                n_trials=remaining,
                timeout=timeout,
                callbacks=callbacks,
                catch=(torch.OutOfMemoryError, TrainingDiverged),
            )
        except SearchStopped as stop:
            stopped = stop.reason
        except KeyboardInterrupt:
            stopped = "interrupted"
    result = TuneResult(tune_dir, shown_url(url), state_counts(study), stopped=stopped)
    result.outputs = write_outputs(
        study, dimensions, tune_dir, model, preset, list(sets), {**session, "runs_dir": str(runs_dir)}, echo
    )
    best = best_trial(study)
    if best is not None:
        result.best_number, result.best_value, result.best_params = best.number, best.value, best.params
    result.seconds = time.monotonic() - started
    return result


def _recipe_value(config, key: str):
    """A recipe option's value; for width and dropout left to the model, the model's own default."""
    from kagglecifar import models

    value = getattr(config.recipe, key)
    if value is None and key in MODEL_OPTIONS:
        value = models.model_options(config.recipe.model).get(key)
    return value


def _check_space(dimensions: list, model: str, preset: str, sets: list, session: dict) -> None:
    """Every value the space can give builds a valid recipe (a bad augment file fails here, not in trial 7)."""
    for dimension in dimensions:
        for value in dimension.grid():
            make_config(model, preset, sets=sets, **session, **{dimension.key: value})


def _check_same_search(study, base, dimensions: list, name: str) -> None:
    """Workers and reruns of one study must search the same base recipe over the same space."""
    from dataclasses import asdict

    mine = {"recipe": asdict(base.recipe), "space": {d.key: d.to_dict() for d in dimensions}}
    for key, value in mine.items():
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            differ = sorted(k for k in set(stored) | set(value) if stored.get(k) != value.get(k))
            raise KaggleCifarError(
                f"--name {name}: this study searches another {key} (differs in "
                f"{', '.join(differ)}); run the command that started it, or choose another --name"
            )
