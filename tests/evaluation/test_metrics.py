"""Dice / HD95 / NSD on hand-computed cases, anisotropic spacing, empty masks and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from versemi.evaluation.metrics import (
    STATUS_BOTH_EMPTY,
    STATUS_OK,
    STATUS_PRED_EMPTY,
    STATUS_REF_EMPTY,
    batch_binary_metrics,
    binary_metrics,
    summarize,
)


def _offset_cubes(shape=(10, 10, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Two 6x6x6 cubes, the second shifted by 2 voxels along z (array axis 0)."""
    a = np.zeros(shape, dtype=bool)
    b = np.zeros(shape, dtype=bool)
    a[0:6, 0:6, 0:6] = True
    b[2:8, 0:6, 0:6] = True
    return a, b


# Hand count for the offset cubes (152 boundary voxels each, symmetric): distances from one cube's
# boundary to the other's are, in units of (z-steps, in-plane steps):
#   80 voxels at 0, 12 at 1 in-plane, 4 at 2 in-plane, 20 at 1 z-step, 36 at 2 z-steps.
# With z spacing 3 mm: sorted distances 0 x80, 1 x12, 2 x4, 3 x20, 6 x36 -> q95 = 6 mm = 2 * 3 mm;
# within 2 mm: 96 of 152 -> NSD 96/152; within 3 mm: 116/152.


def test_offset_cubes_anisotropic_spacing_hand_computed():
    a, b = _offset_cubes()
    m = binary_metrics(a, b, spacing_zyx=(3.0, 1.0, 1.0), nsd_tolerance_mm=2.0)
    assert m["status"] == STATUS_OK
    assert m["dice"] == pytest.approx(2 * 144 / 432)
    assert m["hd95"] == pytest.approx(6.0)
    assert m["nsd"] == pytest.approx(96 / 152)
    assert m["pred_voxels"] == m["ref_voxels"] == 216
    assert m["ref_volume_ml"] == pytest.approx(216 * 3.0 / 1000)
    assert binary_metrics(a, b, (3.0, 1.0, 1.0), nsd_tolerance_mm=3.0)["nsd"] == pytest.approx(116 / 152)


def test_hd95_scales_with_the_spacing_of_the_shifted_axis_only():
    a, b = _offset_cubes()
    iso = binary_metrics(a, b, (1.0, 1.0, 1.0))
    assert iso["hd95"] == pytest.approx(2.0)
    assert iso["nsd"] == pytest.approx(1.0)
    # Spacing on z (the shift axis) scales HD95; the same value on x (array axis 2) does not.
    assert binary_metrics(a, b, (2.5, 1.0, 1.0))["hd95"] == pytest.approx(5.0)
    assert binary_metrics(a, b, (1.0, 1.0, 3.0))["hd95"] == pytest.approx(2.0)
    # Dice does not depend on spacing.
    assert binary_metrics(a, b, (2.5, 0.7, 1.3))["dice"] == pytest.approx(iso["dice"])


def test_single_voxels_distance_is_physical():
    a = np.zeros((6, 6, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2, 2, 1] = True
    b[2, 2, 4] = True  # 3 voxels apart along x
    m = binary_metrics(a, b, (4.0, 2.0, 0.5))
    assert m["dice"] == 0.0
    assert m["hd95"] == pytest.approx(1.5)
    assert m["nsd"] == pytest.approx(1.0)  # 1.5 mm <= 2 mm tolerance
    assert binary_metrics(a, b, (4.0, 2.0, 0.5), nsd_tolerance_mm=1.0)["nsd"] == 0.0


def test_identical_masks():
    a, _ = _offset_cubes()
    m = binary_metrics(a, a, (1.0, 2.0, 3.0))
    assert (m["dice"], m["hd95"], m["nsd"], m["status"]) == (1.0, 0.0, 1.0, STATUS_OK)


@pytest.mark.parametrize(
    "pred_empty, ref_empty, expected",
    [
        (True, True, (1.0, 0.0, 1.0, STATUS_BOTH_EMPTY)),
        (False, True, (0.0, math.inf, 0.0, STATUS_REF_EMPTY)),
        (True, False, (0.0, math.inf, 0.0, STATUS_PRED_EMPTY)),
    ],
)
def test_empty_mask_conventions(pred_empty, ref_empty, expected):
    cube, _ = _offset_cubes()
    empty = np.zeros_like(cube)
    m = binary_metrics(empty if pred_empty else cube, empty if ref_empty else cube, (1.0, 1.0, 1.0))
    assert (m["dice"], m["hd95"], m["nsd"], m["status"]) == expected
    if pred_empty != ref_empty:
        assert m["hd95"] != 0.0  # a missed or spurious structure is never "zero distance"


def _random_blobs(seed: int, shape=(14, 18, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    masks = []
    for _ in range(2):
        centre = rng.uniform(4, np.array(shape) - 4)
        radii = rng.uniform(2.5, 5.0, size=3)
        masks.append(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0)
    noise = rng.random(shape) < 0.02  # a few stray voxels make the distance distributions uneven
    return masks[0] | noise, masks[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_reference_functions(seed):
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    pred, ref = _random_blobs(seed)
    spacing = (2.5, 0.8, 1.1)
    m = binary_metrics(pred, ref, spacing, nsd_tolerance_mm=1.5)
    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(spacing))
    nsd = compute_surface_dice(p, r, [1.5], include_background=True, spacing=list(spacing))
    dice = compute_dice(p, r, include_background=True)
    assert m["hd95"] == pytest.approx(float(hd), rel=1e-5)
    assert m["nsd"] == pytest.approx(float(nsd), rel=1e-5)
    assert m["dice"] == pytest.approx(float(dice), rel=1e-5)


def test_cropping_does_not_change_results_including_masks_on_the_border():
    pred, ref = _random_blobs(3)
    small = binary_metrics(pred, ref, (1.5, 1.0, 0.7))
    padded = [np.pad(x, ((5, 9), (3, 0), (0, 11))) for x in (pred, ref)]
    large = binary_metrics(*padded, (1.5, 1.0, 0.7))
    for key in ("dice", "hd95", "nsd"):
        assert large[key] == pytest.approx(small[key])
    # A mask filling the array touches every border: its boundary is the array's outer layer.
    full = np.ones((5, 5, 5), dtype=bool)
    inner = np.zeros_like(full)
    inner[1:4, 1:4, 1:4] = True
    # Outer layer (98 voxels) to the inner 3^3 cube: 54 face voxels at 1, 36 edge voxels at sqrt(2),
    # 8 corners at sqrt(3) -> the 95th percentile lies among the corners.
    assert binary_metrics(full, inner, (1.0, 1.0, 1.0))["hd95"] == pytest.approx(math.sqrt(3.0))


def test_input_types_and_errors():
    a, b = _offset_cubes()
    ref = binary_metrics(a, b, (3.0, 1.0, 1.0))
    as_tensor = binary_metrics(torch.from_numpy(a), torch.from_numpy(b).float(), (3.0, 1.0, 1.0))
    as_int = binary_metrics(a.astype(np.uint8) * 3, b.astype(np.int64), (3.0, 1.0, 1.0))
    assert as_tensor == ref and as_int == ref
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics(a * 0.7, b, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(a, b[:-1], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(a, b, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(a, b, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        binary_metrics(a, b, (1.0, 1.0, 1.0), nsd_tolerance_mm=-1.0)


def test_two_dimensional_masks():
    a = np.zeros((8, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2, 1] = True
    b[2, 5] = True
    assert binary_metrics(a, b, (1.0, 0.25))["hd95"] == pytest.approx(1.0)


def test_batch_variant_matches_single_calls():
    cubes = _offset_cubes()
    blobs = _random_blobs(4, shape=(10, 10, 10))
    empty = np.zeros((10, 10, 10), dtype=bool)
    pred = torch.from_numpy(np.stack([np.stack([cubes[0], blobs[0], empty]), np.stack([empty, cubes[1], blobs[1]])]))
    ref = torch.from_numpy(np.stack([np.stack([cubes[1], blobs[1], empty]), np.stack([cubes[0], cubes[1], empty])]))
    out = batch_binary_metrics(pred, ref, (3.0, 1.0, 1.0))
    assert out["dice"].shape == (2, 3)
    for b in range(2):
        for p in range(3):
            single = binary_metrics(pred[b, p], ref[b, p], (3.0, 1.0, 1.0))
            for key in ("dice", "hd95", "nsd", "pred_voxels", "ref_voxels"):
                assert out[key][b, p] == pytest.approx(single[key]), (b, p, key)
    assert math.isinf(out["hd95"][1, 0]) and math.isinf(out["hd95"][1, 2])


def test_summarize_never_averages_undefined_distances_as_zero():
    rows = [
        {"case": "a", "label": "liver", "dice": 0.8, "hd95": 4.0, "nsd": 0.9, "status": STATUS_OK},
        {"case": "b", "label": "liver", "dice": 0.6, "hd95": 8.0, "nsd": 0.7, "status": STATUS_OK},
        {"case": "c", "label": "liver", "dice": 0.0, "hd95": math.inf, "nsd": 0.0, "status": STATUS_PRED_EMPTY},
        {"case": "a", "label": "tumor", "dice": 1.0, "hd95": 0.0, "nsd": 1.0, "status": STATUS_BOTH_EMPTY},
        {"case": "b", "label": "tumor", "dice": 0.0, "hd95": math.inf, "nsd": 0.0, "status": STATUS_REF_EMPTY},
    ]
    s = summarize(rows)
    assert list(s) == ["liver", "tumor"]
    liver = s["liver"]
    assert liver["n"] == 3
    assert liver["dice"]["mean"] == pytest.approx(1.4 / 3)
    assert liver["nsd"]["median"] == pytest.approx(0.7)
    assert liver["hd95"]["mean"] == pytest.approx(6.0)  # over the two defined cases, not (4+8+0)/3
    assert liver["hd95"]["std"] == pytest.approx(2.0)
    assert (liver["hd95_n"], liver["hd95_undefined"], liver["n_pred_empty"]) == (2, 1, 1)
    tumor = s["tumor"]
    assert (tumor["n_both_empty"], tumor["n_ref_empty"], tumor["hd95_undefined"]) == (1, 1, 1)
    assert tumor["hd95"]["mean"] == 0.0
    only_undefined = summarize([rows[2]])["liver"]
    assert only_undefined["hd95"] == {"mean": None, "std": None, "median": None}
