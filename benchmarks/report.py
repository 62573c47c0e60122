"""results/*.json -> the README's benchmark section (tables) and results/summary.png (one plot).

    python benchmarks/report.py
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
PLOT = common.RESULTS / "summary.png"


def load(name: str) -> dict | None:
    path = common.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def tables(r: dict) -> list[str]:
    lines = []
    if cache := r.get("archive_to_cache"):
        o = cache["ours"]
        lines += [f"**Archive to cache** (train.7z + test.7z, {o['images']:,} images): ours takes "
                  f"**{cache['ours_over_stdlib_test']}x** the time Python's lzma needs to decompress test.7z alone, "
                  f"and is **{cache['naive_over_ours']}x** as fast as the naive way.", "",
                  "| method | seconds | peak memory (process tree) |", "|---|---|---|"]
        lines += [f"| {name}: {m['method']} | {m['seconds']} | {m.get('peak_tree_rss_mb', '-')} MB |"
                  for name in ("stdlib", "7zz", "ours", "naive") if (m := cache.get(name))]
        lines.append("")
    if loader := r.get("input_pipeline"):
        speedups = ", ".join(f"{k.replace('=', ' ')}: **{v}x**" for k, v in loader["speedup_ours_vs_torchvision"].items())
        lines += [f"**Input pipeline** ({loader['augmentation']}, real train images): ours vs torchvision (PIL) "
                  f"{speedups}.", "", "| loader | workers | images/s |", "|---|---|---|"]
        lines += [f"| {row['loader']} | {row['workers']} | {row['images_per_s']:,.0f} |" for row in loader["rows"]]
        lines.append("")
    if budget := r.get("accuracy_in_budget"):
        runs = budget["runs"]
        lines += [f"**Accuracy in a {budget['budget_s']:.0f} s budget** (preset `{budget['preset']}`, "
                  f"{runs['ours']['config']['model']}): ours {_pct(runs['ours']['best_val_accuracy'])} vs "
                  f"torchvision loader {_pct(runs['torchvision']['best_val_accuracy'])} validation accuracy "
                  f"({budget['throughput_ratio']}x the training throughput).", "",
                  "| loader | val accuracy | epochs done | train images/s |", "|---|---|---|---|"]
        lines += [f"| {name} | {_pct(run['best_val_accuracy'])} | {run['epochs_completed']}/{run['epochs_planned']} | "
                  f"{run['train_images_per_s']:,} |" for name, run in runs.items()]
        lines.append("")
    if predict := r.get("prediction"):
        lines += [f"**Prediction** ({predict['model']}, {predict['device']}, batch {predict['batch_size']}, "
                  f"{predict['test_images']:,} test images):", "",
                  "| TTA | views | images/s | whole test set | measured on |", "|---|---|---|---|---|"]
        lines += [f"| {mode} | {m['views']} | {m['images_per_s']:,.0f} | {m['full_test_seconds']:.0f} s | {m['note']} |"
                  for mode, m in predict["modes"].items()]
        lines.append("")
    if step := r.get("train_step"):
        lines += [f"**Training step** ({step['device']}, {step['precision']}; {step['batch_note']}):", "",
                  "| model | batch | images/s |", "|---|---|---|"]
        lines += [f"| {row['model']} | {row['batch_size']} | {row['images_per_s']:,.1f} |" for row in step["models"]]
        lines.append("")
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name in ("archive_to_cache", "input_pipeline", "accuracy_in_budget", "prediction") if r.get(name)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, name in zip(axes[0], panels):
        d = r[name]
        if name == "archive_to_cache":
            bars = {name: d[name]["seconds"] for name in ("stdlib", "7zz", "ours", "naive") if d.get(name)}
            bars["baseline\n(naive)"] = bars.pop("naive")
            ax.set_title("archive -> cache (both splits)"), ax.set_ylabel("seconds")
        elif name == "input_pipeline":
            bars = {f"{row['loader']}\n{row['workers']}w": row["images_per_s"] for row in d["rows"]}
            ax.set_title("augmented input pipeline"), ax.set_ylabel("images/s")
        elif name == "accuracy_in_budget":
            bars = {k: 100 * (v["best_val_accuracy"] or 0) for k, v in d["runs"].items()}
            ax.set_title(f"val accuracy in {d['budget_s']:.0f} s"), ax.set_ylabel("%")
        else:
            bars = {mode: m["images_per_s"] for mode, m in d["modes"].items()}
            ax.set_title(f"prediction ({d['model']})"), ax.set_ylabel("images/s")
        ax.bar(list(bars), list(bars.values()), color=["#999" if "baseline" in k or "torchvision" in k else "#3a7"
                                                         for k in bars])
        ax.tick_params(axis="x", labelsize=8)
    machine = next(iter(r.values()))["machine"]
    fig.suptitle(f"{machine['cpu']}, {machine['cores']} cores" + (f", {machine['gpu']}" if machine["gpu"] else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)


def main() -> None:
    names = ("archive_to_cache", "input_pipeline", "accuracy_in_budget", "prediction", "train_step")
    results = {name: doc for name in names if (doc := load(name))}
    if not results:
        sys.exit("report: no results in benchmarks/results/ yet; run `make bench`")
    plot(results)
    machine = next(iter(results.values()))["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    section = [f"Measured with `make bench` on {machine['cpu']} ({machine['cores']} cores, "
               f"GPU: {machine['gpu'] or 'none'}; {versions}). Each figure comes from the JSON in "
               "`benchmarks/results/`, which also records the exact command; baseline and ours run side by "
               "side in one run.", "", *tables(results), "![benchmark summary](benchmarks/results/summary.png)"]
    text = README.read_text()
    text = re.sub(r"(<!-- bench:start -->\n).*?(<!-- bench:end -->)", lambda m: m[1] + "\n".join(section) + "\n" + m[2],
                  text, flags=re.S)
    README.write_text(text)
    print(f"report: README benchmark section and {PLOT} updated from {len(results)} result files")


if __name__ == "__main__":
    main()
