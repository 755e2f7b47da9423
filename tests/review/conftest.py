"""Small review folders for the review tests: scans, pseudo-labels with sidecars, a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

LABELS = [
    {"value": 1, "name": "spleen", "color": [157, 108, 162], "snomed": None, "prompt_id": 0},
    {"value": 2, "name": "liver", "color": [221, 130, 101], "snomed": None, "prompt_id": 1},
]
SHAPE_ZYX = (10, 12, 14)
SPACING_XYZ = (1.5, 1.25, 2.0)
ORIGIN_XYZ = (-10.0, 4.5, 30.25)
# A non-axis-aligned direction (rotation about z) to catch geometry that is not copied exactly.
_c, _s = float(np.cos(0.3)), float(np.sin(0.3))
DIRECTION = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, 1.0)


def on_grid(array: np.ndarray) -> sitk.Image:
    """An image with the test grid's geometry."""
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    img.SetDirection(DIRECTION)
    return img


def box_label(i: int) -> np.ndarray:
    """A labelmap whose content identifies ``i``: a spleen box of depth 1 + i % 8, a liver voxel row."""
    arr = np.zeros(SHAPE_ZYX, np.uint8)
    arr[1 : 2 + i % 8, 2:6, 2:6] = 1
    arr[5, 8, 1 : 1 + (i % 12)] = 2
    return arr


def make_review_folder(root: Path, n: int = 4, scores: list[float] | None = None) -> Path:
    """``root/review`` with ``n`` cases: scans in ``root/scans`` (outside), pseudo-labels inside."""
    from versemi.review import ReviewManifest

    scans = root / "scans"
    review = root / "review"
    (review / "pseudo").mkdir(parents=True)
    scans.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scores = scores or [0.1 * (k + 1) for k in range(n)]
    manifest = ReviewManifest(review)
    for k in range(n):
        case = f"case{k:02d}"
        image = scans / f"{case}.nii.gz"
        sitk.WriteImage(on_grid(rng.normal(size=SHAPE_ZYX).astype(np.float32)), str(image))
        pseudo = review / "pseudo" / f"{case}.nii.gz"
        sitk.WriteImage(on_grid(box_label(k)), str(pseudo))
        (review / "pseudo" / f"{case}.json").write_text(json.dumps({"labels": LABELS}))
        manifest.upsert(
            case, image=image, pseudo_label=pseudo, model={"name": "tiny", "version": "0.1", "sha256": "ab" * 32},
            score=scores[k], user="pseudolabel", labels=LABELS,
        )
    return review


@pytest.fixture
def review_dir(tmp_path: Path) -> Path:
    return make_review_folder(tmp_path)
