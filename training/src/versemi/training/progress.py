"""Step timing and the progress bar of the training loop."""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm


@dataclass
class StepTimer:
    """Seconds spent waiting for data and seconds per whole step, per logging window and in total."""

    wait_window: float = 0.0
    step_window: float = 0.0
    steps_in_window: int = 0
    wait_total: float = 0.0
    step_total: float = 0.0

    def add(self, wait: float, step: float) -> None:
        """One step that waited ``wait`` seconds for its batches and took ``step`` seconds in all."""
        self.wait_window += wait
        self.step_window += step
        self.steps_in_window += 1

    def flush(self) -> tuple[float, float]:
        """Close the window: its data-wait fraction and seconds per step (added to the totals)."""
        fraction = self.wait_window / self.step_window if self.step_window > 0 else 0.0
        per_step = self.step_window / max(1, self.steps_in_window)
        self.wait_total += self.wait_window
        self.step_total += self.step_window
        self.wait_window = self.step_window = 0.0
        self.steps_in_window = 0
        return fraction, per_step

    @property
    def wait_fraction(self) -> float:
        """The data-wait fraction of every flushed window."""
        return self.wait_total / self.step_total if self.step_total > 0 else 0.0


def progress_bar(enabled: bool, total: int, initial: int, desc: str) -> tqdm | None:
    """A tqdm bar over the steps of a stage, or None when ``enabled`` is False."""
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
