"""The figures of a search (matplotlib, no display, no plotly), each written atomically into RUNS_DIR/tune-NAME/:

history.png       validation accuracy per trial and the best so far; pruned trials at their last epoch
importance.png    parameter importance (optuna.importance, PED-ANOVA), from 2 completed trials on
slices.png        accuracy against each parameter's value
trial_curves.png  validation accuracy per epoch of every trial; pruned ones stop early
"""

from __future__ import annotations

import warnings
from pathlib import Path

from kagglecifar.reports.plots import pyplot
from kagglecifar.rundir import write_figure

PRUNED_STYLE = {"color": "tab:gray", "marker": "x"}


def write_plots(study, dimensions: list, tune_dir: Path) -> list[Path]:
    import optuna

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    written = []
    if complete or pruned:
        written.append(write_figure(tune_dir / "history.png", lambda p: plot_history(complete, pruned, p)))
        written.append(write_figure(tune_dir / "trial_curves.png", lambda p: plot_trial_curves(trials, p)))
    if complete:
        written.append(write_figure(tune_dir / "slices.png", lambda p: plot_slices(complete, dimensions, p)))
    importances = param_importances(study, complete)
    if importances:
        written.append(write_figure(tune_dir / "importance.png", lambda p: plot_importance(importances, p)))
    return written


def param_importances(study, complete: list) -> dict[str, float]:
    """Optuna's importance of each parameter; {} when there is too little to tell (fewer than 2 completed
    trials, or no parameter that varied)."""
    import optuna

    varied = [k for k in (complete[0].params if complete else {}) if len({repr(t.params.get(k)) for t in complete}) > 1]
    if len(complete) < 2 or not varied:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "importances will be equal" with very few trials
            return optuna.importance.get_param_importances(study, params=varied)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def plot_history(complete: list, pruned: list, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if pruned:
        ax.scatter([t.number for t in pruned], [_last(t) for t in pruned], label="pruned (last epoch)", **PRUNED_STYLE)
    if complete:
        ax.scatter([t.number for t in complete], [t.value for t in complete], color="tab:blue", label="complete")
        ordered = sorted(complete, key=lambda t: t.number)
        best, line = float("-inf"), []
        for trial in ordered:
            best = max(best, trial.value)
            line.append(best)
        ax.step([t.number for t in ordered], line, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_importance(importances: dict[str, float], path: Path) -> None:
    plt = pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_title("parameter importance")
    _save(fig, path)


def plot_slices(complete: list, dimensions: list, path: Path) -> None:
    plt = pyplot()
    columns = min(4, len(dimensions))
    rows = -(-len(dimensions) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    values = [t.value for t in complete]
    for ax, dimension in zip(axes.flat, dimensions):
        xs = [t.params.get(dimension.key) for t in complete]
        if dimension.choices is not None:
            labels = [str(c) for c in dimension.choices]
            ax.scatter(
                [labels.index(str(x)) if str(x) in labels else -1 for x in xs],
                values,
                c=[t.number for t in complete],
                cmap="viridis",
            )
            ax.set_xticks(range(len(labels)), labels, rotation=30)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            ax.scatter(xs, values, c=[t.number for t in complete], cmap="viridis")
            if dimension.log:
                ax.set_xscale("log")
        ax.set_xlabel(dimension.key)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(dimensions) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("val accuracy")
    fig.suptitle("accuracy against each parameter (colour: trial number)")
    _save(fig, path)


def plot_trial_curves(trials: list, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in trials:
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        pruned = trial.state.name == "PRUNED"
        ax.plot(
            steps,
            [trial.intermediate_values[s] for s in steps],
            marker="o",
            markersize=3,
            linestyle="--" if pruned else "-",
            alpha=0.8,
            label=f"{trial.number}{' (pruned)' if pruned else ''}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("trials per epoch")
    ax.grid(alpha=0.3)
    if len(trials) <= 15:
        ax.legend(fontsize=7, title="trial")
    _save(fig, path)


def _last(trial) -> float:
    return trial.intermediate_values[max(trial.intermediate_values)]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
