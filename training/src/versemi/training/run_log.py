"""Training records: JSON-lines logs, TensorBoard scalars and the progress bar (rank 0 only).

The run folder gets ``train_log.jsonl`` (``start``, ``train`` every ``log_every`` steps, ``resume``,
``end``), ``validation_log.jsonl`` (one record per validation) and ``tensorboard/``. A run resumed at
step ``S`` redoes the steps after ``S``, so :class:`RunLog` first rewrites both logs (atomically)
without records after ``S``, ``end`` records and torn lines, and TensorBoard purges those steps:
every step appears once. docs/TRAINING.md, "Output folder".
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from versemi.fileio import atomic_write_text


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


def _record_step(record: dict[str, Any]) -> int | None:
    step = record.get("step")
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a JSON-lines log atomically with only the records ``keep`` accepts (torn or invalid
    lines are dropped too); returns how many lines were dropped (0: the file is left as it is)."""
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1  # a line torn by a killed process
            continue
        if isinstance(record, dict) and keep(record):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


class RunLog:
    """Everything a training run records; every method is a no-op on ranks other than 0.

    Args:
        folder: The run folder (one stage of one method).
        enabled: False on ranks > 0.
        tensorboard: Write TensorBoard event files (needs the ``tensorboard`` package).
        resume_step: The step this run resumes from, if it resumes: records of later steps (which
            the run redoes) are dropped before the first new record (see the module docstring).
    """

    def __init__(
        self, folder: Path, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.folder = folder
        self.enabled = enabled
        self.train = JsonlWriter(folder / "train_log.jsonl")
        self.validation = JsonlWriter(folder / "validation_log.jsonl")
        self._tb = None
        self._tb_wanted = enabled and tensorboard
        self._resume_step = resume_step
        self._purge_step: int | None = None

    def _before_write(self) -> None:
        """On the first record of a resumed run: drop what the resumed steps will write again."""
        if self._resume_step is None:
            return
        step, self._resume_step = self._resume_step, None
        truncate_jsonl(
            self.train.path,
            lambda r: r.get("event") != "end" and (_record_step(r) is None or _record_step(r) <= step),
        )
        truncate_jsonl(self.validation.path, lambda r: _record_step(r) is not None and _record_step(r) <= step)
        self._purge_step = step + 1

    def _tensorboard(self):  # noqa: ANN202 - SummaryWriter | None (an optional dependency)
        if self._tb is None and self._tb_wanted:
            self._tb_wanted = False
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                return None
            self._tb = SummaryWriter(log_dir=str(self.folder / "tensorboard"), purge_step=self._purge_step)
        return self._tb

    def event(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self._before_write()
            self.train.write(record)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        self._before_write()
        tb = self._tensorboard()
        if tb is not None:
            for name, value in values.items():
                if value is not None and math.isfinite(float(value)):
                    tb.add_scalar(f"{prefix}/{name}", float(value), step)

    def validation_record(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self._before_write()
            self.validation.write(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
