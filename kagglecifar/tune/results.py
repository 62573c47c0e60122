"""The results of a `tune` study: the trial counts, a line per finished trial, and what is written when a
search stops: results.csv (also printed as a table), best.yaml (the best trial's recipe) and the plots."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kagglecifar.console import duration, table
from kagglecifar.files import write_text_atomic
from kagglecifar.recipes import make_config


def state_counts(study) -> dict:
    counts = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts


def best_trial(study):
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def trial_line(study, trial) -> str:
    best = best_trial(study)
    value = trial.user_attrs.get("best_val_acc")
    shown = f"{value:.2%}" if value is not None else "-"
    params = " ".join(f"{k}={fmt(v)}" for k, v in trial.params.items())
    tail = f"; best so far: trial {best.number}, {best.value:.2%}" if best is not None else ""
    state = trial.state.name.lower() + (" (diverged)" if trial.user_attrs.get("diverged") else "")
    return (
        f"trial {trial.number} {state}: val accuracy {shown} after "
        f"{trial.user_attrs.get('epochs', 0)} epochs ({params}){tail}"
    )


def fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def note(trial) -> str:
    attrs = trial.user_attrs
    notes = []
    if attrs.get("preset_values"):
        notes.append("preset's values")
    if "retry_of" in attrs:
        notes.append(f"resumes trial {attrs['retry_of']}")
    if attrs.get("stopped"):
        notes.append(f"stopped ({attrs['stopped']}), queued again")
    if attrs.get("diverged"):
        notes.append(f"failed: {attrs['diverged']}" if isinstance(attrs["diverged"], str) else "diverged")
    return "; ".join(notes)


def results_rows(study, dimensions: list) -> list[dict]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "note": note(trial),
                **{d.key: trial.params.get(d.key, "") for d in dimensions},
                "best_val_acc": blank(attrs.get("best_val_acc")),
                "epochs": blank(attrs.get("epochs")),
                "seconds": blank(attrs.get("seconds") and round(attrs["seconds"], 1)),
                "run": attrs.get("run", ""),
                "host": (attrs.get("worker") or {}).get("host", ""),
            }
        )
    return rows


def blank(value):
    return "" if value is None else value


def write_outputs(
    study, dimensions: list, tune_dir: Path, model: str, preset: str, sets: list, session: dict, echo
) -> list[Path]:
    """results.csv, the printed table, best.yaml and the plots; returns the files written."""
    from kagglecifar.tune import plots as tune_plots

    rows = results_rows(study, dimensions)
    written = []
    if rows:
        out = io.StringIO()
        writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        written.append(write_text_atomic(tune_dir / "results.csv", out.getvalue()))
        keys = [d.key for d in dimensions]
        header = ("trial", "state", *keys, "best val acc", "epochs", "time", "note")
        shown = [
            (
                r["trial"],
                r["state"],
                *(fmt(r[k]) for k in keys),
                f"{r['best_val_acc']:.2%}" if r["best_val_acc"] != "" else "",
                r["epochs"],
                duration(r["seconds"]) if r["seconds"] != "" else "",
                r["note"],
            )
            for r in rows
        ]
        for line in table(header, shown, right=(0, *range(2, len(keys) + 5))):
            echo(line)
    best = best_trial(study)
    if best is not None:
        config = make_config(model, preset, sets=sets, **session, **best.params)
        origin = (
            f"# best of study {study.study_name}: trial {best.number}, val accuracy {best.value:.2%} "
            f"({best.user_attrs.get('run', '')})"
        )
        text = config.to_yaml().replace("\n", f"\n{origin}\n", 1)
        written.append(write_text_atomic(tune_dir / "best.yaml", text))
    written += tune_plots.write_plots(study, dimensions, tune_dir)
    return written
