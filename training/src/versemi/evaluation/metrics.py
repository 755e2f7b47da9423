"""Dice, HD95 and NSD of binary masks, in millimetres.

Boundary distances come from MONAI (``get_edge_surface_distance``) on the voxel spacing; HD95 (the
symmetric 95th percentile) and NSD (surface Dice at a tolerance in mm) share one pair of distance
transforms and equal MONAI's ``compute_hausdorff_distance`` and ``compute_surface_dice`` (tested).

Empty masks, as BraTS and the Decathlon score them (``status`` lets :func:`summarize` count them)::

    case                        Dice  NSD  HD95  status
    both empty                  1     1    0     both_empty
    reference empty, pred not   0     0    inf   ref_empty
    prediction empty, ref not   0     0    inf   pred_empty

Summaries average HD95 over the cases where it is finite and count the others (``hd95_undefined``).
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

STATUS_OK = "ok"
STATUS_BOTH_EMPTY = "both_empty"
STATUS_REF_EMPTY = "ref_empty"  # prediction has voxels where the reference has none
STATUS_PRED_EMPTY = "pred_empty"  # the reference structure was missed entirely

DEFAULT_NSD_TOLERANCE_MM = 2.0
METRIC_NAMES = ("dice", "hd95", "nsd")


def _as_bool_array(mask: Any, what: str) -> np.ndarray:
    """A boolean numpy view of a mask given as bool/int/0-1 float array or torch tensor."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask != 0
    if np.issubdtype(mask.dtype, np.floating):
        # Guard against probabilities/logits passed by mistake: only exact 0/1 floats are masks.
        binary = mask != 0
        if not np.all(mask[binary] == 1):
            raise ValueError(f"{what}: float mask must contain only 0 and 1 (threshold probabilities first)")
        return binary
    raise TypeError(f"{what}: unsupported mask dtype {mask.dtype}")


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != ndim:
        raise ValueError(f"spacing {spacing_t} has {len(spacing_t)} values for a {ndim}-D mask")
    if not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing must be positive and finite, got {spacing_t}")
    return spacing_t


def _joint_bounding_box(union: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the box around all foreground plus ``margin`` voxels (clamped to the array)."""
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        nonzero = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(nonzero[0]) - margin, 0), min(int(nonzero[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)


def _surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (mm) from every boundary voxel of ``pred`` to ``ref``'s boundary, and back."""
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI's own internal call passes a deprecated argument; nothing for our users to act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        _, (d_pred_ref, d_ref_pred), _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)),
            torch.from_numpy(np.ascontiguousarray(ref)),
            distance_metric="euclidean",
            spacing=list(spacing),
            symmetric=True,
        )
    return d_pred_ref.double(), d_ref_pred.double()


def binary_metrics(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing_zyx: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict[str, Any]:
    """Dice, HD95 (mm) and NSD of one predicted mask against its reference.

    Both masks are cropped to their joint bounding box (plus one voxel) first, so the cost depends
    on the size of the structures, not of the volume.

    Args:
        pred: predicted mask, array order ``(z, y, x)`` (2-D ``(y, x)`` works too); bool, integer
            (non-zero = foreground) or float with only 0/1; numpy array or torch tensor.
        ref: reference mask of the same shape.
        spacing_zyx: voxel size in mm per ARRAY axis, i.e. ``(z, y, x)`` (SimpleITK's
            ``GetSpacing()`` reversed).
        nsd_tolerance_mm: NSD tolerance τ in mm.

    Returns:
        ``{"dice", "hd95", "nsd"}`` as floats (``hd95`` is ``inf`` when exactly one mask is empty),
        ``"status"`` (``"ok"``, ``"both_empty"``, ``"ref_empty"``, ``"pred_empty"``; see the module
        docstring), ``"pred_voxels"``, ``"ref_voxels"`` (ints) and ``"pred_volume_ml"``,
        ``"ref_volume_ml"``.

    Raises:
        ValueError: shapes differ, spacing does not fit, negative tolerance or non-binary floats.
    """
    pred_b = _as_bool_array(pred, "prediction")
    ref_b = _as_bool_array(ref, "reference")
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"prediction shape {pred_b.shape} differs from reference shape {ref_b.shape}")
    spacing = _check_spacing(spacing_zyx, pred_b.ndim)
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise ValueError(f"NSD tolerance must be a finite number >= 0 mm, got {nsd_tolerance_mm}")

    n_pred = int(np.count_nonzero(pred_b))
    n_ref = int(np.count_nonzero(ref_b))
    voxel_ml = math.prod(spacing) / 1000.0
    result: dict[str, Any] = {
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "pred_volume_ml": n_pred * voxel_ml,
        "ref_volume_ml": n_ref * voxel_ml,
    }
    if n_pred == 0 and n_ref == 0:
        return {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "status": STATUS_BOTH_EMPTY, **result}
    if n_pred == 0 or n_ref == 0:
        status = STATUS_PRED_EMPTY if n_pred == 0 else STATUS_REF_EMPTY
        return {"dice": 0.0, "hd95": math.inf, "nsd": 0.0, "status": status, **result}

    box = _joint_bounding_box(pred_b | ref_b)
    pred_c, ref_c = pred_b[box], ref_b[box]
    intersection = int(np.count_nonzero(pred_c & ref_c))
    dice = 2.0 * intersection / (n_pred + n_ref)

    d_pred_ref, d_ref_pred = _surface_distances(pred_c, ref_c, spacing)
    hd95 = max(float(torch.quantile(d_pred_ref, 0.95)), float(torch.quantile(d_ref_pred, 0.95)))
    within = int((d_pred_ref <= nsd_tolerance_mm).sum()) + int((d_ref_pred <= nsd_tolerance_mm).sum())
    nsd = within / (d_pred_ref.numel() + d_ref_pred.numel())
    return {"dice": dice, "hd95": hd95, "nsd": nsd, "status": STATUS_OK, **result}


def batch_binary_metrics(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing_zyx: Sequence[float],
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict[str, np.ndarray]:
    """:func:`binary_metrics` over leading batch/prompt axes, e.g. ``(B, P, D, H, W)`` masks.

    Args:
        pred: predicted masks ``(..., D, H, W)`` (bool, integer or 0/1 float; numpy or torch).
        ref: reference masks of the same shape.
        spacing_zyx: voxel size in mm of the LAST ``len(spacing_zyx)`` (spatial) axes, shared by
            every item.
        nsd_tolerance_mm: NSD tolerance in mm.

    Returns:
        ``{"dice", "hd95", "nsd"}`` float64 arrays and ``{"pred_voxels", "ref_voxels"}`` int64
        arrays, each with the leading shape (e.g. ``(B, P)``); empty-mask conventions as in
        :func:`binary_metrics`.
    """
    pred_b = _as_bool_array(pred, "prediction")
    ref_b = _as_bool_array(ref, "reference")
    if pred_b.shape != ref_b.shape:
        raise ValueError(f"prediction shape {pred_b.shape} differs from reference shape {ref_b.shape}")
    n_spatial = len(spacing_zyx)
    if pred_b.ndim < n_spatial:
        raise ValueError(f"masks of shape {pred_b.shape} have fewer than {n_spatial} spatial axes")
    lead = pred_b.shape[: pred_b.ndim - n_spatial]
    out = {k: np.zeros(lead, dtype=np.float64) for k in METRIC_NAMES}
    out.update({k: np.zeros(lead, dtype=np.int64) for k in ("pred_voxels", "ref_voxels")})
    for index in np.ndindex(*lead):
        m = binary_metrics(pred_b[index], ref_b[index], spacing_zyx, nsd_tolerance_mm)
        for key in out:
            out[key][index] = m[key]
    return out


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, (population) std and median; ``None`` when there is nothing to average."""
    if not values:
        return {"mean": None, "std": None, "median": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "median": float(statistics.median(values))}


def summarize(rows: Iterable[Mapping[str, Any]], group_by: str = "label") -> dict[str, dict[str, Any]]:
    """Per-label (per-prompt) summary of metric rows, with empty cases counted explicitly.

    Dice and NSD are averaged over all rows of a label (both are defined for every case under the
    conventions of this module). HD95 is averaged over the rows where it is finite only; rows where
    it is not (one mask empty) are counted in ``hd95_undefined`` instead of being averaged in as 0
    or dropped silently.

    Args:
        rows: dicts with at least ``group_by``, ``"dice"``, ``"hd95"``, ``"nsd"`` and ``"status"``
            (e.g. :func:`binary_metrics` results plus ``"case"`` and ``"label"``). ``hd95`` may be
            ``inf``/``nan``/``None`` for undefined.
        group_by: the key to group rows by.

    Returns:
        ``{group: {"n", "dice": {"mean", "std", "median"}, "nsd": {...}, "hd95": {...},
        "hd95_n", "hd95_undefined", "n_both_empty", "n_pred_empty", "n_ref_empty"}}`` in first-seen
        group order. Std is the population std (ddof=0); statistics of nothing are ``None``.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[group_by]), []).append(row)
    summary: dict[str, dict[str, Any]] = {}
    for name, items in groups.items():
        hd = [float(r["hd95"]) for r in items if r["hd95"] is not None and math.isfinite(float(r["hd95"]))]
        statuses = [r.get("status", STATUS_OK) for r in items]
        summary[name] = {
            "n": len(items),
            "dice": _stats([float(r["dice"]) for r in items]),
            "hd95": _stats(hd),
            "nsd": _stats([float(r["nsd"]) for r in items]),
            "hd95_n": len(hd),
            "hd95_undefined": len(items) - len(hd),
            "n_both_empty": statuses.count(STATUS_BOTH_EMPTY),
            "n_pred_empty": statuses.count(STATUS_PRED_EMPTY),
            "n_ref_empty": statuses.count(STATUS_REF_EMPTY),
        }
    return summary
