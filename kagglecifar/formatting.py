"""Text for people: durations and aligned tables, the same on every command."""
from __future__ import annotations


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
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in cells]
