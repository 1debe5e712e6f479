"""The engine's only window to the outside while training: report metrics, ask whether to stop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class TrialContext(Protocol):
    out_dir: Path  # where the family writes weights, checkpoints and plots
    device: str  # "cuda", "cuda:1", "mps" or "cpu", already chosen

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record metrics at an epoch (``step``); e.g. train_loss, val_loss, accuracy. A step already
        recorded is not recorded again (a resumed trial says its last evaluation once more)."""
        ...

    def should_stop(self) -> str | None:
        """A reason to stop now (cancelled, timed out, early-terminated), or None to go on."""
        ...

    def progress(self, epochs: float) -> None:
        """How far training is, in epochs (2.5: half-way through the third), after each batch; cheap to call."""
        ...


@dataclass
class MemoryContext:
    """A context that keeps reports in memory: for tests and library use without storage."""

    out_dir: Path
    device: str = "cpu"
    reports: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    stop_reason: str | None = None
    positions: list[float] = field(default_factory=list)  # what progress() was told, in order

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        if all(step != done for done, _ in self.reports):
            self.reports.append((step, dict(metrics)))

    def should_stop(self) -> str | None:
        return self.stop_reason

    def progress(self, epochs: float) -> None:
        self.positions.append(epochs)
