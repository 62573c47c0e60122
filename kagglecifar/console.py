"""Text for people: live progress bars on a terminal (one plain line per finished task in a log file),
durations and aligned tables, the same on every command.

A bar redrawn with carriage returns fills a log file with frames; when stderr is not a terminal the bar
is silent and `note` prints the per-epoch / per-stage lines instead. In a Jupyter kernel (Jupyter, Colab,
Kaggle) the bars are notebook widgets.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty() or in_notebook()


def in_notebook() -> bool:
    """Running in a Jupyter kernel (Jupyter, Colab, Kaggle): an IPython shell with a kernel, not a terminal IPython."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # an IPython too old or half imported: not a notebook we can draw in
        return False
    return getattr(shell, "kernel", None) is not None


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, **options) -> tqdm:
    """A live bar on a terminal, a widget bar in a notebook (tqdm.notebook; its text form without ipywidgets),
    nothing in a log file."""
    settings = dict(total=total, desc=desc, unit=unit, disable=not (enabled and interactive()), smoothing=0.1)
    if in_notebook() and enabled:
        from tqdm import notebook

        try:
            return notebook.tqdm(**settings, **options)
        except ImportError:  # tqdm.notebook without ipywidgets: "IProgress not found"
            pass
    return tqdm(**settings, file=sys.stderr, dynamic_ncols=True, **options)


def note(line: str) -> None:
    """A line on stderr that does not break a live bar."""
    tqdm.write(line, file=sys.stderr)


def duration(seconds: float) -> str:
    """12.3 s, 3m02s, 14.1 h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, seconds = divmod(int(round(seconds)), 60)
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds / 3600:.1f} h"


def table(header: tuple, rows: list[tuple], right: tuple[int, ...] = ()) -> list[str]:
    """Aligned columns, two spaces apart; columns whose index is in `right` are right-aligned (numbers)."""
    cells = [tuple(str(c) for c in row) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in cells
    ]


def choices_text(described: dict[str, str]) -> str:
    """`a (what a does), b (what b does)`: a declared table of choices as --help text."""
    return ", ".join(f"{name} ({what})" for name, what in described.items())
