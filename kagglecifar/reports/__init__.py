"""Reports on finished runs: curves and confusion matrices (plots), and `compare` (runs side by side)."""
