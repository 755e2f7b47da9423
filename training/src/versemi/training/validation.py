"""Model selection on a held-out split of the TRAINING labeled cases (never a test set).

Each validation case (a preprocessed, cached volume) is predicted with the SAME sliding window as
``versemi predict`` (:func:`versemi.inference.sliding.sliding_window_probabilities`: its dataset's
planned window, Gaussian-blended probabilities, padding with the case's background value, 50 %
overlap by default) for the prompts its dataset annotates, thresholded at probability 0.5, and scored with
:func:`versemi.evaluation.metrics.binary_metrics`. Distances are in mm on the PREPROCESSED grid (the
target spacing), not on the original scan grid: good enough to rank checkpoints, and cheaper; final
evaluation on the input grid is ``versemi evaluate``'s job.

The selection metric is the mean Dice over all (case, prompt) pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from versemi.evaluation.metrics import binary_metrics
from versemi.inference.postprocess import LARGEST_COMPONENT, largest_component
from versemi.inference.sliding import SlidingWindowSettings, sliding_window_probabilities
from versemi.labels import LabelSpace
from versemi.network.geometry import NetworkGeometry


@dataclass
class ValidationCase:
    """A preprocessed labeled validation volume.

    Attributes:
        case_id: Case identifier.
        dataset: Its dataset (decides which prompts are evaluated).
        image: ``(D, H, W)`` float32 (memory-mapped is fine).
        label: ``(D, H, W)`` integer label values of the dataset.
        spacing_zyx: Voxel size in mm.
        window_zyx: The sliding window: the dataset's planned patch ``(D, H, W)``.
        background_value: What windows are padded with beyond the volume (the normalised background,
            as ``predict`` pads).
        geometry: The dataset's network geometry (``None``: isotropic).
    """

    case_id: str
    dataset: str
    image: np.ndarray
    label: np.ndarray
    spacing_zyx: tuple[float, float, float]
    window_zyx: tuple[int, int, int]
    background_value: float = 0.0
    geometry: NetworkGeometry | None = None


def predict_volume(
    model: nn.Module,
    case: ValidationCase,
    prompt_ids: Sequence[int],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Foreground probabilities ``(P, D, H, W)`` (CPU float32) of one validation volume, exactly as
    ``versemi predict`` computes them on the preprocessed grid."""
    settings = SlidingWindowSettings(tuple(case.window_zyx), overlap=overlap, batch_size=sw_batch_size,
                                     geometry=case.geometry)
    return sliding_window_probabilities(
        model, np.asarray(case.image), list(prompt_ids), settings, device, autocast_dtype=autocast_dtype,
        pad_value=case.background_value,
    )


def validate(
    model: nn.Module,
    cases: Sequence[ValidationCase],
    label_space: LabelSpace,
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    nsd_tolerance_mm: float = 2.0,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Metrics of every validation case for its dataset's prompts.

    Returns:
        ``{"mean_dice": float, "metrics": {prompt: {"dice", "hd95", "nsd", "cases"}}, "cases": [{"case",
        "dataset", "prompt", "dice", "hd95", "nsd", "status"}]}``; HD95 means skip undefined (inf) values.
    """
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for case in cases:
            pairs = label_space.prompts_for_dataset(case.dataset)
            if not pairs:
                continue
            probs = predict_volume(model, case, [p for p, _ in pairs], device, overlap, sw_batch_size, autocast_dtype)
            label = np.asarray(case.label)
            # The dataset's structures as one foreground: what post-processing keeps the largest part of.
            union = largest_component((probs.numpy() > 0.5).any(axis=0))
            for channel, (prompt_id, value) in enumerate(pairs):
                predicted = probs[channel].numpy() > 0.5
                truth = label == value
                m = binary_metrics(predicted, truth, case.spacing_zyx, nsd_tolerance_mm)
                rows.append(
                    {
                        "case": case.case_id,
                        "dataset": case.dataset,
                        "prompt": label_space.prompts[prompt_id].name,
                        "dice": float(m["dice"]),
                        "hd95": float(m["hd95"]),
                        "nsd": float(m["nsd"]),
                        "status": m.get("status"),
                        # What keeping only the largest connected component would score (the
                        # post-processing decision, see versemi.inference.postprocess).
                        "dice_largest_component": _dice(predicted & union, truth),
                    }
                )
    finally:
        model.train(was_training)
    per_prompt: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["prompt"] for r in rows):
        sel = [r for r in rows if r["prompt"] == name]
        finite_hd = [r["hd95"] for r in sel if math.isfinite(r["hd95"])]
        per_prompt[name] = {
            "dice": float(np.mean([r["dice"] for r in sel])),
            "dice_largest_component": float(np.mean([r["dice_largest_component"] for r in sel])),
            "nsd": float(np.mean([r["nsd"] for r in sel])),
            "hd95": float(np.mean(finite_hd)) if finite_hd else float("nan"),
            "hd95_undefined": len(sel) - len(finite_hd),
            "cases": len(sel),
        }
    mean_dice = float(np.mean([r["dice"] for r in rows])) if rows else float("nan")
    return {"mean_dice": mean_dice, "metrics": per_prompt, "cases": rows}


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def postprocessing_from_validation(metrics: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{prompt: "largest_component"}`` for every prompt whose mean validation Dice improves when only
    its largest connected component is kept (nnU-Net's rule, per prompt)."""
    return {name: LARGEST_COMPONENT for name, m in metrics.items()
            if m.get("dice_largest_component", -1.0) > m["dice"]}
