"""`kagglecifar compare RUN...`: runs side by side, for a write-up.

Per run, from its folder: model and parameter count, the recipe options in which the runs differ, epochs
(and why it stopped), training time and device (run.json, metrics.csv, result.json), best validation
accuracy, accuracy with each TTA mode `evaluate` measured (evaluation.json) and the best Kaggle public
score of a submission made from it (SUBMISSIONS_DIR/*.submitted.json, see provenance.py).

A folder that is not a run but holds runs (runs/, runs/tune-NAME/) stands for the runs in it.
`--out report.html` (images embedded) or `report.md` also writes report-curves.png (validation accuracy
and training loss per epoch, overlaid), report-confusion.png (confusion matrices side by side) and
report.csv (the table's numbers) beside it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kagglecifar import provenance, rundir
from kagglecifar.console import duration, table
from kagglecifar.errors import KaggleCifarError
from kagglecifar.files import atomic_output, refuse_existing, write_text_atomic
from kagglecifar.inference.evaluate import read_evaluation
from kagglecifar.records import warn_damaged
from kagglecifar.reports.plots import pyplot
from kagglecifar.rundir import write_figure

MAX_CONFUSION_PANELS = 12  # the best runs by validation accuracy, when more are compared
REPORT_SUFFIXES = (".html", ".md")


@dataclass
class RunSummary:
    path: Path
    name: str
    model: str
    params: int | None
    recipe: dict
    epochs: int
    planned: int | None
    stopped: str  # result.json's stopped_reason; "" when the run never finished a session
    seconds: float
    device: str
    best_val_acc: float | None
    tta: dict[str, float] = field(default_factory=dict)  # TTA mode -> accuracy of best.pt (evaluation.json)
    public_score: float | None = None
    submission: str = ""  # "pending", "ensemble" or ""
    metrics: list[dict] = field(default_factory=list)
    confusion: dict = field(default_factory=dict)  # evaluation.json's {"tta", "counts"}, with "classes"


def expand(paths: list[Path]) -> list[Path]:
    """Run folders; a folder of runs stands for the runs in it (sorted by name)."""
    runs = []
    for path in map(Path, paths):
        if rundir.is_run(path):
            runs.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if rundir.is_run(p)) if path.is_dir() else []
        if not inside:
            raise KaggleCifarError(f"{path}: not a run folder (no run.json written by kagglecifar) and holds none")
        runs += inside
    unique = list(dict.fromkeys(p.resolve() for p in runs))
    return [next(p for p in runs if p.resolve() == u) for u in unique]


def summarize(run_dir: Path, submissions: dict[Path, list[dict]]) -> RunSummary:
    config = rundir.read_config(run_dir)
    recipe = config.get("recipe", {})
    environment = rundir.read_environment(run_dir)
    metrics = rundir.read_metrics(run_dir)
    accuracies = [row["val_acc"] for row in metrics if row.get("val_acc") is not None]
    evaluation = read_evaluation(run_dir) or {}
    world = environment.get("world_size", 1)
    summary = RunSummary(
        path=run_dir,
        name=run_dir.name,
        model=recipe.get("model", "?"),
        params=_parameter_count(recipe),
        recipe=recipe,
        epochs=len(metrics),
        planned=recipe.get("epochs"),
        stopped=rundir.read_result(run_dir).get("stopped_reason", ""),
        seconds=sum(row.get("seconds") or 0 for row in metrics),
        device=f"{environment.get('device', '?')}" + (f" x{world}" if world > 1 else ""),
        best_val_acc=max(accuracies) if accuracies else None,
        tta={m: a for m, a in evaluation.get("accuracy", {}).items() if m != "none"},
        metrics=metrics,
    )
    if evaluation.get("confusion"):
        summary.confusion = {**evaluation["confusion"], "classes": evaluation.get("classes", [])}
    scored = [r for r in submissions.get(run_dir.resolve(), []) if r.get("public_score") is not None]
    if scored:
        best = max(scored, key=lambda r: r["public_score"])
        summary.public_score, summary.submission = best["public_score"], "ensemble" if best["ensemble"] else ""
    elif submissions.get(run_dir.resolve()):
        summary.submission = "pending"
    return summary


def _parameter_count(recipe: dict) -> int | None:
    from kagglecifar import models

    kwargs = {k: recipe[k] for k in ("width", "dropout", "freeze_stages") if recipe.get(k) is not None}
    try:
        if "weights" in models.model_options(recipe.get("model", "")):
            kwargs["weights"] = None  # no download just to count
        return models.model_info(recipe["model"], **kwargs)["params"]
    except (KaggleCifarError, KeyError, TypeError, ValueError, RuntimeError):
        return None


def compare(paths: list[Path], submissions_dir: Path = Path("submissions")) -> list[RunSummary]:
    if not paths:
        raise KaggleCifarError("compare: give at least one run folder (or a folder of runs)")
    submissions = provenance.submissions_by_run(submissions_dir) if Path(submissions_dir).is_dir() else {}
    runs: list[RunSummary] = []
    for folder in expand(paths):
        try:
            runs.append(summarize(folder, submissions))
        except KaggleCifarError as exc:  # one damaged run folder leaves the others to compare
            warn_damaged(exc)
    if not runs:
        raise KaggleCifarError("compare: no run left to compare (each one above was skipped)")
    names = [r.name for r in runs]
    for run in runs:  # the same name in two folders: say which
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    return runs


# ---- the table -------------------------------------------------------------------------------------


def differing_options(runs: list[RunSummary]) -> list[str]:
    """Recipe options (but the model, which has its own column) whose values differ between the runs."""
    keys = dict.fromkeys(k for run in runs for k in run.recipe if k != "model")
    return [k for k in keys if len({repr(run.recipe.get(k)) for run in runs}) > 1]


def tta_modes(runs: list[RunSummary]) -> list[str]:
    order = ("flip", "shift")
    found = {m for run in runs for m in run.tta}
    return [m for m in order if m in found] + sorted(found - set(order))


def rows(runs: list[RunSummary]) -> tuple[tuple, list[tuple], tuple[int, ...]]:
    """(header, rows, right-aligned columns) of the text table (also the report's)."""
    differ, modes = differing_options(runs), tta_modes(runs)
    header = (
        "run",
        "model",
        "params",
        "recipe",
        "epochs",
        "time",
        "device",
        "best val acc",
        *(f"TTA {m}" for m in modes),
        "public score",
    )
    shown = []
    for run in runs:
        stopped = "" if run.stopped in ("completed", "") else f" {run.stopped.replace('_', ' ')}"
        epochs = f"{run.epochs}/{run.planned}{stopped}" if run.epochs != run.planned or stopped else str(run.epochs)
        score = "" if run.public_score is None else f"{run.public_score:.5f}"
        recipe = " ".join(f"{k}={_fmt(run.recipe.get(k))}" for k in differ)
        shown.append(
            (
                run.name,
                run.model,
                _millions(run.params),
                recipe,
                epochs,
                duration(run.seconds),
                run.device,
                _percent(run.best_val_acc),
                *(_percent(run.tta.get(m)) for m in modes),
                f"{score} ({run.submission})" if run.submission and score else score or run.submission,
            )
        )
    return header, shown, (2, 5, 7, *range(8, 8 + len(modes) + 1))


def _millions(params: int | None) -> str:
    return "" if params is None else f"{params / 1e6:.2f}M"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table_lines(runs: list[RunSummary]) -> list[str]:
    header, shown, right = rows(runs)
    return table(header, shown, right)


def csv_text(runs: list[RunSummary]) -> str:
    out = io.StringIO()
    differ, modes = differing_options(runs), tta_modes(runs)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "run",
            "path",
            "model",
            "params",
            *differ,
            "epochs",
            "planned_epochs",
            "stopped",
            "seconds",
            "device",
            "best_val_acc",
            *(f"tta_{m}" for m in modes),
            "public_score",
        ]
    )
    for r in runs:
        writer.writerow(
            [
                r.name,
                r.path,
                r.model,
                r.params,
                *(r.recipe.get(k) for k in differ),
                r.epochs,
                r.planned,
                r.stopped,
                round(r.seconds, 1),
                r.device,
                r.best_val_acc,
                *(r.tta.get(m) for m in modes),
                r.public_score,
            ]
        )
    return out.getvalue()


# ---- figures -----------------------------------------------------------------------------------------


def plot_curves(runs: list[RunSummary], path: Path) -> None:
    """Validation accuracy and training loss per epoch, one line per run."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        epochs = [row["epoch"] for row in run.metrics]
        (line,) = left.plot(
            epochs, [row.get("val_acc") for row in run.metrics], marker="o", markersize=3, label=run.name
        )
        right.plot(
            epochs, [row.get("train_loss") for row in run.metrics], marker="o", markersize=3, color=line.get_color()
        )
    for axis, label in ((left, "validation accuracy"), (right, "training loss")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend(fontsize=7 if len(runs) > 6 else 9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusions(runs: list[RunSummary], path: Path) -> None:
    """Each run's validation confusion matrix (rates per true class), side by side, four to a row."""
    plt = pyplot()
    columns = min(4, len(runs))
    count = -(-len(runs) // columns)
    fig, axes = plt.subplots(count, columns, figsize=(4.2 * columns, 4.4 * count), squeeze=False, layout="constrained")
    for ax, run in zip(axes.flat, runs):
        counts = np.asarray(run.confusion.get("counts", []))
        image = run.path / "confusion_matrix.png"
        if counts.size:
            classes = run.confusion.get("classes") or [str(i) for i in range(len(counts))]
            ax.imshow(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ticks = range(len(classes)) if len(classes) <= 20 else []
            ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=90, fontsize=7)
            ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=7)
            accuracy = np.trace(counts) / max(counts.sum(), 1)
            ax.set_title(f"{run.name}\n{accuracy:.2%} (TTA {run.confusion.get('tta')})", fontsize=9)
        elif image.is_file():  # a run from before evaluation.json: its own figure
            ax.imshow(plt.imread(image))
            ax.set_title(run.name, fontsize=9)
            ax.axis("off")
        else:
            ax.text(0.5, 0.5, f"{run.name}\nnot evaluated", ha="center", va="center")
            ax.axis("off")
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    fig.supxlabel("predicted")
    fig.supylabel("true")
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- the report --------------------------------------------------------------------------------------


def write_report(runs: list[RunSummary], out: Path, force: bool = False) -> list[Path]:
    """out (.html with the images embedded, or .md linking them) and, beside it, STEM-curves.png,
    STEM-confusion.png and STEM.csv; returns the files written."""
    out = Path(out)
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise KaggleCifarError(f"--out {out}: use a .html or .md file name")
    curves, confusion = (out.with_name(f"{out.stem}-{part}.png") for part in ("curves", "confusion"))
    table_csv = out.with_suffix(".csv")
    for path in (out, curves, confusion, table_csv):
        refuse_existing(path, force)
    shown = sorted(runs, key=lambda r: -(r.best_val_acc or 0))[:MAX_CONFUSION_PANELS]
    written = [
        write_figure(curves, lambda p: plot_curves(runs, p)),
        write_figure(confusion, lambda p: plot_confusions(shown, p)),
        write_text_atomic(table_csv, csv_text(runs)),
    ]
    render = _html if out.suffix.lower() == ".html" else _markdown
    with atomic_output(out, force=True) as tmp:
        tmp.write_text(render(runs, curves, confusion, len(shown)), encoding="utf-8")
    return [out, *written]


def _intro(runs: list[RunSummary], panels: int) -> tuple[str, list[str]]:
    title = f"Comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}"
    notes = [
        f"Generated by kagglecifar compare on {time.strftime('%Y-%m-%d %H:%M')}.",
        "best val acc: the best epoch's accuracy on the run's own validation split (no TTA); TTA columns: "
        "the same checkpoint with test-time augmentation (`kagglecifar evaluate`); public score: Kaggle's "
        "score of the best submission made from the run.",
        "recipe: the options in which these runs differ; epochs: done/planned and why a run stopped early.",
    ]
    if panels < len(runs):
        notes.append(f"Confusion matrices: the {panels} runs with the best validation accuracy.")
    return title, notes


def _html(runs: list[RunSummary], curves: Path, confusion: Path, panels: int) -> str:
    header, shown, right = rows(runs)
    title, notes = _intro(runs, panels)

    def cell(tag, i, value):
        align = ' style="text-align:right"' if i in right else ""
        return f"<{tag}{align}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in shown)
    paths = "".join(f"<li>{html.escape(r.name)}: <code>{html.escape(str(r.path))}</code></li>" for r in runs)
    images = "".join(
        f'<h2>{caption}</h2>\n<img alt="{caption}" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">\n'
        for caption, p in (("Curves", curves), ("Confusion matrices (validation)", confusion))
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n<style>body{{font-family:'
        "sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px "
        f"8px}}</style></head><body>\n<h1>{title}</h1>\n"
        + "".join(f"<p>{html.escape(n)}</p>\n" for n in notes)
        + f"<table>\n<tr>{head}</tr>\n{body}\n</table>\n{images}<h2>Run folders</h2><ul>{paths}</ul>\n"
        "</body></html>\n"
    )


def _markdown(runs: list[RunSummary], curves: Path, confusion: Path, panels: int) -> str:
    header, shown, right = rows(runs)
    title, notes = _intro(runs, panels)
    escape = lambda value: str(value).replace("|", "\\|")  # noqa: E731
    lines = [
        f"# {title}",
        "",
        *(f"{n}\n" for n in notes),
        "| " + " | ".join(map(escape, header)) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
        *("| " + " | ".join(map(escape, row)) + " |" for row in shown),
        "",
        f"![curves]({curves.name})",
        "",
        f"![confusion matrices]({confusion.name})",
        "",
        "Run folders:",
        "",
        *(f"- {r.name}: `{r.path}`" for r in runs),
    ]
    return "\n".join(lines) + "\n"
