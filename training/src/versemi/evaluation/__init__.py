"""Evaluation: Dice, HD95 and NSD in millimetres (MONAI) and per-case / per-label reports.

- :func:`binary_metrics` / :func:`batch_binary_metrics`: metrics of masks (used by validation).
- :func:`summarize`: per-label statistics of metric rows with empty cases counted explicitly.
- :func:`evaluate_folders`: a folder of predictions against a folder of references
  (``versemi evaluate``), returning an :class:`EvaluationResult` that writes CSV, JSON, Markdown.
"""

from versemi.evaluation.metrics import (
    DEFAULT_NSD_TOLERANCE_MM,
    STATUS_BOTH_EMPTY,
    STATUS_OK,
    STATUS_PRED_EMPTY,
    STATUS_REF_EMPTY,
    batch_binary_metrics,
    binary_metrics,
    summarize,
)
from versemi.evaluation.report import (
    EvaluationError,
    EvaluationResult,
    evaluate_case,
    evaluate_folders,
    label_names_from_dataset_json,
)

__all__ = [
    "DEFAULT_NSD_TOLERANCE_MM",
    "STATUS_BOTH_EMPTY",
    "STATUS_OK",
    "STATUS_PRED_EMPTY",
    "STATUS_REF_EMPTY",
    "EvaluationError",
    "EvaluationResult",
    "batch_binary_metrics",
    "binary_metrics",
    "evaluate_case",
    "evaluate_folders",
    "label_names_from_dataset_json",
    "summarize",
]
