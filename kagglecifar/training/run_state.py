"""What a training run reports when it ends (TrainResult) and where it stands while it runs (Progress,
saved in last.pt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kagglecifar.console import duration


@dataclass
class TrainResult:
    run_dir: Path
    best_val_accuracy: float | None
    best_epoch: int | None
    epochs_run: int  # completed epochs, earlier sessions included
    seconds: float  # this session
    stopped_reason: str  # completed | time_budget | early_stopping | interrupted | pruned | diverged

    def line(self) -> str:
        if self.best_val_accuracy is not None:
            accuracy = f"best val accuracy {self.best_val_accuracy:.2%} (epoch {self.best_epoch})"
        else:
            accuracy = "no epoch completed yet" if self.epochs_run == 0 else "no validation split"
        line = f"{accuracy}, {self.epochs_run} epochs, {duration(self.seconds)}, {self.stopped_reason}: {self.run_dir}"
        if self.stopped_reason in ("time_budget", "interrupted"):
            line += f"  (continue with --resume {self.run_dir})"
        return line


@dataclass
class Progress:
    """Where a run is; saved in last.pt."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done in the current epoch (non-zero only after a mid-epoch stop)
    step: int = 0
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    elapsed: float = 0.0  # training seconds over all sessions
    warmup_seconds: float = 0.0  # the first step with --compile (compiling), left out of the epoch's seconds
    partial: dict = field(default_factory=dict)  # running sums of the current epoch
    metrics: list = field(default_factory=list)
