"""Confusion matrices that stay readable at 100 classes, and the most frequent mistakes listed."""

import numpy as np

from kagglecifar.reports import plots


def test_top_confusions_lists_the_most_frequent_mistakes_first():
    counts = np.array([[50, 3, 0, 7], [1, 40, 3, 0], [0, 9, 30, 0], [2, 0, 0, 60]])
    classes = ["cat", "dog", "frog", "ship"]
    top = plots.top_confusions(counts, classes, k=4)
    assert [(c.true, c.predicted, c.count) for c in top] == [
        ("frog", "dog", 9),
        ("cat", "ship", 7),
        ("cat", "dog", 3),
        ("dog", "frog", 3),
    ]  # tie: class order
    assert top[0].share == 9 / 39 and top[1].share == 7 / 60
    assert len(plots.top_confusions(counts, classes, k=100)) == 6  # only the non-zero mistakes
    assert plots.top_confusions(np.diag([5, 5]), ["a", "b"]) == []


def test_merge_classes_sums_into_super_classes():
    counts = np.arange(16).reshape(4, 4)
    merged = plots.merge_classes(counts, [1, 0, 1, 0], 2)
    assert merged.tolist() == [[5 + 7 + 13 + 15, 4 + 6 + 12 + 14], [1 + 3 + 9 + 11, 0 + 2 + 8 + 10]]
    assert merged.sum() == counts.sum()


def test_confusion_figure_numbers_cells_only_for_few_classes(tmp_path):
    rng = np.random.default_rng(0)
    few = plots.confusion_figure(rng.integers(0, 9, (10, 10)), [f"c{i}" for i in range(10)])
    many_classes = [f"class_{i:02d}" for i in range(100)]
    many = plots.confusion_figure(rng.integers(0, 9, (100, 100)), many_classes, "val")
    few_ax, many_ax = few.axes[0], many.axes[0]
    assert len(few_ax.texts) == 100 and len(many_ax.texts) == 0
    assert [t.get_text() for t in many_ax.get_yticklabels()] == many_classes
    assert many_ax.get_yticklabels()[0].get_fontsize() < few_ax.get_yticklabels()[0].get_fontsize()
    assert many.get_size_inches()[0] > 2 * few.get_size_inches()[0]
    assert len(many.axes) == 2  # the colour bar explains the colours the numbers would have
    path = plots.plot_confusion_matrix(rng.integers(0, 9, (100, 100)), many_classes, tmp_path / "cm.png")
    assert path.stat().st_size > 10_000


def test_curves_of_a_diverged_run_say_so_instead_of_an_empty_legend(tmp_path, recwarn):
    nan = float("nan")
    rows = [{"epoch": e, "train_loss": nan, "train_acc": 0.1, "val_loss": nan, "val_acc": 0.1} for e in (1, 2)]
    path = plots.plot_curves(rows, tmp_path / "curves.png")
    assert path.stat().st_size > 5_000
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
