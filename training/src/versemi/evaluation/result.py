"""The result of an evaluation: its rows, per-label statistics and the files it writes.

:class:`EvaluationResult` holds one row per (case, label) and writes ``metrics.csv``, ``metrics.json``
and ``summary.md`` together (:class:`versemi.fileio.AtomicGroup`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from versemi import __version__
from versemi.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM
from versemi.fileio import AtomicGroup, remove_stale_temp_files

CSV_COLUMNS = (
    "case",
    "label",
    "dice",
    "hd95",
    "nsd",
    "status",
    "ref_values",
    "pred_values",
    "ref_voxels",
    "pred_voxels",
    "ref_volume_ml",
    "pred_volume_ml",
)
OUTPUT_FILES = ("metrics.csv", "metrics.json", "summary.md")

class EvaluationError(ValueError):
    """A problem with the inputs of an evaluation; the message names the file(s)."""


@dataclass
class EvaluationResult:
    """Per-case x per-label metrics of one evaluation and their per-label summary.

    Attributes:
        rows: one dict per (case, label): ``case``, ``label``, ``dice``, ``hd95`` (mm, ``inf`` when
            undefined), ``nsd``, ``status``, ``ref_values``, ``pred_values``, voxel counts, volumes.
        summary: :func:`versemi.evaluation.metrics.summarize` of ``rows`` (label -> statistics).
        labels: label name -> reference value(s), in report order.
        cases: the evaluated case ids, sorted.
        missing_predictions: reference cases without a prediction (only with ``allow_missing``).
        predictions_without_reference: prediction case ids with no reference file (ignored).
        not_predicted: case -> reference labels its prediction's sidecar does not name (not scored).
        files: case -> ``{"prediction": path, "reference": path}``.
        nsd_tolerance_mm: the NSD tolerance used.
        predictions_dir: the predictions folder.
        labels_dir: the reference folder.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    labels: dict[str, list[int]]
    cases: list[str]
    missing_predictions: list[str] = field(default_factory=list)
    predictions_without_reference: list[str] = field(default_factory=list)
    not_predicted: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    predictions_dir: str = ""
    labels_dir: str = ""

    @property
    def mean_over_labels(self) -> dict[str, float | None]:
        """Mean of the per-label means of Dice, HD95 and NSD (labels without a value skipped)."""
        out: dict[str, float | None] = {}
        for metric in ("dice", "hd95", "nsd"):
            means = [s[metric]["mean"] for s in self.summary.values() if s[metric]["mean"] is not None]
            out[metric] = float(np.mean(means)) if means else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``: strict JSON (undefined HD95 -> ``null``)."""
        per_case: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            files = self.files.get(row["case"], {})
            entry = per_case.setdefault(row["case"], {"case": row["case"], **files, "labels": {}})
            entry["labels"][row["label"]] = {k: row[k] for k in CSV_COLUMNS if k not in ("case", "label")}
        return _json_safe(
            {
                "versemi_version": __version__,
                "predictions": self.predictions_dir,
                "references": self.labels_dir,
                "nsd_tolerance_mm": self.nsd_tolerance_mm,
                "labels": self.labels,
                "conventions": (
                    "Dice/NSD/HD95 in mm on the reference grid. Both masks empty: Dice 1, NSD 1, "
                    "HD95 0 (status both_empty). One mask empty: Dice 0, NSD 0, HD95 undefined (null; "
                    "status pred_empty or ref_empty); HD95 statistics use defined cases only "
                    "(hd95_n) and count the rest (hd95_undefined). std is the population std."
                ),
                "summary": self.summary,
                "mean_over_labels": self.mean_over_labels,
                "cases": list(per_case.values()),
                "missing_predictions": self.missing_predictions,
                "predictions_without_reference": self.predictions_without_reference,
                "not_predicted": self.not_predicted,
            }
        )

    def to_csv(self) -> str:
        """The content of ``metrics.csv``: one row per case x label (undefined HD95 -> ``inf``)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row[k]) for k in CSV_COLUMNS})
        return buf.getvalue()

    def to_markdown(self) -> str:
        """The content of ``summary.md``: a table with one row per label."""
        tol = f"{self.nsd_tolerance_mm:g}"
        lines = [
            "# VerSemi evaluation",
            "",
            f"- predictions: `{self.predictions_dir}`",
            f"- references: `{self.labels_dir}`",
            f"- cases: {len(self.cases)}; NSD tolerance: {tol} mm",
            "",
            f"| label | n | Dice | HD95 (mm) | NSD@{tol}mm | HD95 undefined | missed | false positive | both empty |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in self.summary.items():
            hd = _mean_std(s["hd95"], 2)
            if s["hd95_undefined"]:
                hd += f" (n={s['hd95_n']})"
            lines.append(
                f"| {name} | {s['n']} | {_mean_std(s['dice'], 3)} | {hd} | {_mean_std(s['nsd'], 3)} | "
                f"{s['hd95_undefined']} | {s['n_pred_empty']} | {s['n_ref_empty']} | {s['n_both_empty']} |"
            )
        overall = self.mean_over_labels
        if len(self.summary) > 1:
            lines.append(
                f"| **mean over labels** | | {_fmt(overall['dice'], 3)} | {_fmt(overall['hd95'], 2)} | "
                f"{_fmt(overall['nsd'], 3)} | | | | |"
            )
        lines += [
            "",
            "Values are mean ± std (population) over cases. Both masks empty counts as Dice 1, NSD 1, "
            "HD95 0; a missed structure (prediction empty) or a false positive one (reference empty) "
            "counts as Dice 0 and NSD 0, and its HD95 is undefined: HD95 is averaged over the other "
            "cases (n) and never as a zero distance.",
        ]
        if self.missing_predictions:
            lines += ["", f"Not evaluated, no prediction ({len(self.missing_predictions)}): "
                      + ", ".join(self.missing_predictions)]
        if self.not_predicted:
            lines += ["", "Labels not predicted (absent from the prediction's sidecar), not scored:"]
            lines += [f"- {case}: {', '.join(names)}" for case, names in self.not_predicted.items()]
        if self.predictions_without_reference:
            lines += ["", f"Ignored, no reference ({len(self.predictions_without_reference)}): "
                      + ", ".join(self.predictions_without_reference)]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``metrics.csv``, ``metrics.json`` and ``summary.md`` into ``output_dir``.

        All three are written to temporary files first and then renamed, so a failure never leaves
        a partial file behind.

        Returns:
            File name -> written path.
        """
        out = Path(output_dir)
        contents = {
            "metrics.csv": self.to_csv(),
            "metrics.json": json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
            "summary.md": self.to_markdown(),
        }
        remove_stale_temp_files(out)  # left by a run that was killed
        with AtomicGroup() as group:
            for name, text in contents.items():
                group.write_text(text, out / name)
        return {name: out / name for name in contents}


# --- formatting helpers -------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "inf"
    return value


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_std(stats: Mapping[str, float | None], digits: int) -> str:
    if stats["mean"] is None:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


__all__ = ["CSV_COLUMNS", "OUTPUT_FILES", "EvaluationError", "EvaluationResult"]
