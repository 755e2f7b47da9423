"""Training records: JSON-lines logs, TensorBoard scalars and the progress bar (rank 0 only).

Files in the run folder:

- ``train_log.jsonl``: one JSON object per line. First ``{"event": "start", ...}`` with the method,
  stage, device, and the labeled and unlabeled cases used per dataset; then ``{"event": "train",
  "step": ..., "losses": {term: value}, "lr": ..., "data_wait_fraction": ...}`` every ``log_every``
  steps; ``{"event": "resume", ...}``, ``{"event": "end", ...}``.
- ``validation_log.jsonl``: ``{"step": ..., "mean_dice": ..., "metrics": {prompt: {dataset: {dice,
  hd95, nsd}}}, "best": bool}`` per validation.
- ``tensorboard/``: the same scalars for TensorBoard.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None marks "undefined" (e.g. HD95 of an empty mask)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


class JsonlWriter:
    """Appends one JSON object per line and flushes (safe to read while training runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines log."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class RunLog:
    """Everything a training run records; every method is a no-op on ranks other than 0.

    Args:
        folder: The run folder (one stage of one method).
        enabled: False on ranks > 0.
        tensorboard: Write TensorBoard event files (needs the ``tensorboard`` package).
    """

    def __init__(self, folder: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.folder = folder
        self.enabled = enabled
        self.train = JsonlWriter(folder / "train_log.jsonl")
        self.validation = JsonlWriter(folder / "validation_log.jsonl")
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                self._tb = None
            else:
                self._tb = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def event(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.train.write(record)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.enabled and self._tb is not None:
            for name, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    self._tb.add_scalar(f"{prefix}/{name}", float(value), step)

    def validation_record(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.validation.write(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
