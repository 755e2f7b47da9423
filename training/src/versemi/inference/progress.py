"""Progress reporting for prediction: a tqdm bar for people, JSON lines for programs.

Reporters take ``(stage, fraction, message)`` calls: ``stage`` is ``"preprocess"``, ``"inference"`` or
``"export"``, ``fraction`` the share of the WHOLE job done (0..1, never decreasing), so a reader needs
one bar. The JSON lines follow docs/DEVELOPMENT.md, "Progress lines".
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Protocol

STAGES = ("preprocess", "inference", "export")

# Share of the whole job given to each stage; inference dominates the run time.
STAGE_SPANS: dict[str, tuple[float, float]] = {
    "preprocess": (0.0, 0.1),
    "inference": (0.1, 0.9),
    "export": (0.9, 1.0),
}


class ProgressReporter(Protocol):
    """Receives progress of one prediction (see module docstring)."""

    def update(self, stage: str, fraction: float, message: str = "") -> None: ...

    def close(self) -> None: ...


class StageProgress:
    """Maps a stage's own 0..1 progress to the job's overall fraction and forwards it.

    Args:
        reporter: Where to send the overall progress (``None`` = nowhere).
        stage: One of :data:`STAGES`.
        span: ``(start, end)`` overall fractions of this stage; default from :data:`STAGE_SPANS`.
    """

    def __init__(
        self, reporter: ProgressReporter | None, stage: str, span: tuple[float, float] | None = None
    ) -> None:
        if stage not in STAGE_SPANS:
            raise ValueError(f"unknown progress stage {stage!r}; expected one of {', '.join(STAGES)}")
        self.reporter = reporter
        self.stage = stage
        self.start, self.end = span or STAGE_SPANS[stage]

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.reporter is None:
            return
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.reporter.update(self.stage, self.start + (self.end - self.start) * fraction, message)


class NullProgress:
    """Discards progress."""

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class JsonLinesProgress:
    """Writes the machine-readable JSON lines of the progress contract (default: stdout).

    Repeated updates with the same rounded fraction and message are dropped, so a reader is not
    flooded when many small steps happen.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._last: tuple[str, float, str] | None = None
        self._fraction = 0.0

    def _emit(self, obj: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        stream.write(json.dumps(obj) + "\n")
        stream.flush()

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        # Keep the overall fraction monotonic even if a stage is re-run (e.g. CPU fallback).
        self._fraction = max(self._fraction, round(float(fraction), 4))
        key = (stage, self._fraction, message)
        if key == self._last:
            return
        self._last = key
        self._emit({"type": "progress", "stage": stage, "fraction": self._fraction, "message": message})

    def info(self, message: str) -> None:
        """A human-readable note (e.g. the device chosen, a CPU fallback) as a progress line."""
        self._emit({"type": "progress", "stage": self._last[0] if self._last else "preprocess",
                    "fraction": self._fraction, "message": message})

    def done(self, **fields: Any) -> None:
        self._emit({"type": "done", **fields})

    def error(self, message: str) -> None:
        self._emit({"type": "error", "message": message})

    def close(self) -> None:
        pass


class TqdmProgress:
    """A tqdm bar (on stderr) showing the overall percentage and the current stage."""

    def __init__(self, description: str = "predict") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1000, desc=description, unit="‰", leave=True, dynamic_ncols=True,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self._n = 0

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        n = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        if n > self._n:
            self._bar.update(n - self._n)
            self._n = n
        self._bar.set_postfix_str(f"{stage} {message}".strip(), refresh=False)

    def info(self, message: str) -> None:
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


def make_progress(mode: str) -> ProgressReporter:
    """A reporter by CLI name: ``"json"``, ``"bar"``, ``"none"``, or ``"auto"`` (bar on a terminal)."""
    if mode == "json":
        return JsonLinesProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return TqdmProgress()
    if mode in ("none", "auto"):
        return NullProgress()
    raise ValueError(f"unknown progress mode {mode!r}; expected auto, bar, json or none")


def report_info(reporter: ProgressReporter | None, message: str) -> None:
    """Send a note to the reporter if it can show one (JSON line / tqdm.write); otherwise ignore it."""
    info = getattr(reporter, "info", None)
    if info is not None:
        info(message)


class SubtaskProgress:
    """Forwards one sub-task's progress (e.g. one case of many) into ``[start, end]`` of a reporter.

    Stage names pass through unchanged; only the overall fraction is rescaled, so a folder run emits
    the same JSON lines as a single prediction with one monotonic fraction for the whole folder.
    """

    def __init__(self, reporter: ProgressReporter | None, start: float, end: float, prefix: str = "") -> None:
        self.reporter = reporter
        self.start, self.end = start, end
        self.prefix = prefix

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        if self.reporter is not None:
            text = f"{self.prefix}{message}" if message else self.prefix.rstrip(": ")
            self.reporter.update(stage, self.start + (self.end - self.start) * fraction, text)

    def info(self, message: str) -> None:
        report_info(self.reporter, f"{self.prefix}{message}")

    def close(self) -> None:
        pass
