"""Progress reporting: live bars on a terminal, one plain line per finished task in a log file.

A bar redrawn with carriage returns fills a log file with frames; when stderr is not a terminal the bar
is silent and `note` prints the per-epoch / per-stage lines instead.
"""
from __future__ import annotations

import sys

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, **options) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and interactive()), file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1, **options)


def note(line: str) -> None:
    """A line on stderr that does not break a live bar."""
    tqdm.write(line, file=sys.stderr)
