"""Model selection on a held-out split of the TRAINING labeled cases (never a test set).

Each validation case (a preprocessed, cached volume) is predicted with MONAI's sliding-window
inference (Gaussian importance weighting, patch-sized windows, 50 % overlap by default) for the
prompts its dataset annotates, thresholded at probability 0.5, and scored with
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

from versemi.labels import LabelSpace


@dataclass
class ValidationCase:
    """A preprocessed labeled validation volume.

    Attributes:
        case_id: Case identifier.
        dataset: Its dataset (decides which prompts are evaluated).
        image: ``(D, H, W)`` float32 (memory-mapped is fine).
        label: ``(D, H, W)`` integer label values of the dataset.
        spacing_zyx: Voxel size in mm.
    """

    case_id: str
    dataset: str
    image: np.ndarray
    label: np.ndarray
    spacing_zyx: tuple[float, float, float]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    prompt_ids: Sequence[int],
    roi_size_zyx: Sequence[int],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Foreground probabilities ``(P, D, H, W)`` (CPU float32) of one volume by Gaussian sliding window."""
    from monai.inferers import sliding_window_inference

    ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)
    x = torch.from_numpy(np.array(image, dtype=np.float32))[None, None].to(device)  # a writable copy

    def predictor(window: torch.Tensor) -> torch.Tensor:
        if autocast_dtype is not None:
            with torch.autocast(device.type, dtype=autocast_dtype):
                return model(window, ids).float()
        return model(window, ids)

    logits = sliding_window_inference(
        x,
        roi_size=tuple(int(s) for s in roi_size_zyx),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode="gaussian",
        padding_mode="constant",
        cval=float(image.min()) if image.size else 0.0,
    )
    return torch.sigmoid(logits[0].float()).cpu()


def validate(
    model: nn.Module,
    cases: Sequence[ValidationCase],
    label_space: LabelSpace,
    roi_size_zyx: Sequence[int],
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
    from versemi.evaluation.metrics import binary_metrics

    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for case in cases:
            pairs = label_space.prompts_for_dataset(case.dataset)
            if not pairs:
                continue
            probs = predict_volume(
                model, case.image, [p for p, _ in pairs], roi_size_zyx, device, overlap, sw_batch_size, autocast_dtype
            )
            label = np.asarray(case.label)
            for channel, (prompt_id, value) in enumerate(pairs):
                m = binary_metrics(probs[channel].numpy() > 0.5, label == value, case.spacing_zyx, nsd_tolerance_mm)
                rows.append(
                    {
                        "case": case.case_id,
                        "dataset": case.dataset,
                        "prompt": label_space.prompts[prompt_id].name,
                        "dice": float(m["dice"]),
                        "hd95": float(m["hd95"]),
                        "nsd": float(m["nsd"]),
                        "status": m.get("status"),
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
            "nsd": float(np.mean([r["nsd"] for r in sel])),
            "hd95": float(np.mean(finite_hd)) if finite_hd else float("nan"),
            "hd95_undefined": len(sel) - len(finite_hd),
            "cases": len(sel),
        }
    mean_dice = float(np.mean([r["dice"] for r in rows])) if rows else float("nan")
    return {"mean_dice": mean_dice, "metrics": per_prompt, "cases": rows}
