"""Evaluation: Dice, HD95 and NSD in millimetres (MONAI) and per-case / per-label reports."""

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

__all__ = [
    "DEFAULT_NSD_TOLERANCE_MM",
    "STATUS_BOTH_EMPTY",
    "STATUS_OK",
    "STATUS_PRED_EMPTY",
    "STATUS_REF_EMPTY",
    "batch_binary_metrics",
    "binary_metrics",
    "summarize",
]
