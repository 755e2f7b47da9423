"""Plans: each dataset's grid, normalisation and patch from its fingerprint; typed, versioned, in checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.checkpoint import load_checkpoint, save_checkpoint
from versemi.data.config import TrainConfig
from versemi.data.fingerprint import DatasetFingerprint, IntensityStats, fingerprint_dataset
from versemi.data.plans import (
    DEFAULT_PATCH_VOXELS,
    _box_voxels,
    DatasetPlan,
    Plans,
    PlansError,
    plan_dataset,
    plans_for_config,
)
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case

# The fingerprints `versemi plan --json` measured on ../shared/data (headers of every scan, labels of
# the labeled_10pct training cases), so the planning rules are tested on the real datasets' numbers
# without needing the data.
HIPPOCAMPUS = DatasetFingerprint("Dataset001_Hippocampus", "MRI", 203, (1.0, 1.0, 1.0), (35.0, 50.0, 36.0),
                                 (22.5, 40.0, 26.5))
LEFT_ATRIUM = DatasetFingerprint("Dataset002_LeftAtrium", "MRI", 80, (0.625, 0.625, 0.625), (192.0, 142.5, 88.0),
                                 (96.875, 55.9375, 36.25))
ACDC = DatasetFingerprint("Dataset003_ACDC", "MRI", 40, (1.5, 1.5, 10.0), (216.0, 256.0, 9.5), (100.5, 90.0, 60.0))
SPLEEN_CT = DatasetFingerprint("Dataset004_SpleenCT", "CT", 1, (0.795, 0.795, 5.0), (164.0, 166.0, 26.0),
                               (111.3, 98.6, 100.0), IntensityStats(85.3, 24.6, -23.0, 134.0))
DIVISOR = 8  # a 4-level U-Net


@pytest.mark.parametrize("fingerprint", [HIPPOCAMPUS, LEFT_ATRIUM, ACDC, SPLEEN_CT], ids=lambda f: f.name)
def test_every_plan_fits_the_budget_and_the_network(fingerprint: DatasetFingerprint) -> None:
    plan = plan_dataset(fingerprint, DEFAULT_PATCH_VOXELS, DIVISOR)
    assert math.prod(plan.patch_size) <= DEFAULT_PATCH_VOXELS
    assert all(p % DIVISOR == 0 for p in plan.patch_size)
    # The grid is fine enough to keep detail, coarse enough that a patch of the budget could span
    # the median labeled structure.
    assert _box_voxels(fingerprint.foreground_extent, plan.target_spacing, DIVISOR) <= DEFAULT_PATCH_VOXELS
    # Never finer than the data; an anisotropic dataset's thick axis is never coarsened further.
    assert all(t >= s - 1e-9 for t, s in zip(plan.target_spacing, fingerprint.median_spacing))
    if max(fingerprint.median_spacing) > 3 * min(fingerprint.median_spacing):
        assert max(plan.target_spacing) == pytest.approx(max(fingerprint.median_spacing))


def test_shared_datasets_keep_their_own_grids() -> None:
    hippocampus = plan_dataset(HIPPOCAMPUS, DEFAULT_PATCH_VOXELS, DIVISOR)
    left_atrium = plan_dataset(LEFT_ATRIUM, DEFAULT_PATCH_VOXELS, DIVISOR)
    acdc = plan_dataset(ACDC, DEFAULT_PATCH_VOXELS, DIVISOR)
    # Hippocampus crops stay at their 1 mm grid; the whole crop fits one patch.
    assert hippocampus.target_spacing == (1.0, 1.0, 1.0)
    assert all(p >= s for p, s in zip(hippocampus.patch_size, HIPPOCAMPUS.median_size))
    # ACDC keeps its 10 mm slices (never resampled to an isotropic grid) and its in-plane 1.5 mm.
    assert acdc.target_spacing == (1.5, 1.5, 10.0)
    assert acdc.patch_size[2] <= 16 and acdc.patch_size[0] >= 64
    # The 0.625 mm left atrium is coarsened (isotropically) until a patch could span the atrium; its
    # patch is as cubic in mm as the budget allows (never a thin slab).
    assert left_atrium.target_spacing[0] == left_atrium.target_spacing[1] == left_atrium.target_spacing[2]
    assert 1.0 <= left_atrium.target_spacing[0] <= 1.5
    assert max(left_atrium.patch_size) <= 1.25 * min(left_atrium.patch_size)
    assert hippocampus.covers_foreground() and acdc.covers_foreground()
    for plan in (hippocampus, left_atrium, acdc):
        assert plan.spec.normalization == "zscore"


def test_ct_plan_uses_the_dataset_foreground_statistics() -> None:
    plan = plan_dataset(SPLEEN_CT, DEFAULT_PATCH_VOXELS, DIVISOR)
    assert plan.spec.normalization == "ct_zscore"
    assert plan.spec.intensity_clip == (-23.0, 134.0)
    assert plan.spec.target_spacing[2] == 5.0
    image = sitk.GetImageFromArray(np.array([[[-1000.0, 85.3, 500.0, 109.9]]], dtype=np.float32))
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0), modality="CT", normalization="ct_zscore",
                             intensity_clip=(-23.0, 134.0), intensity_mean=85.3, intensity_std=24.6,
                             crop_to_nonzero=False)
    values = np.sort(preprocess_case(image, spec).image.ravel())  # (reorientation may reverse the row)
    np.testing.assert_allclose(values, [(-23.0 - 85.3) / 24.6, 0.0, 1.0, (134.0 - 85.3) / 24.6], atol=1e-5)
    with pytest.raises(PlansError, match="needs labeled CT cases"):
        plan_dataset(DatasetFingerprint("X", "CT", 1, (1, 1, 1), (64, 64, 64)), overrides={"normalization": "ct_zscore"})


def test_overrides_and_bad_keys() -> None:
    plan = plan_dataset(LEFT_ATRIUM, DEFAULT_PATCH_VOXELS, DIVISOR,
                        {"target_spacing": (1.25, 1.25, 1.25), "patch_size": (48, 64, 48)})
    assert plan.target_spacing == (1.25, 1.25, 1.25) and plan.patch_size == (48, 64, 48)
    assert plan.overridden == ("target_spacing", "patch_size")
    with pytest.raises(PlansError, match="unknown plan key"):
        plan_dataset(LEFT_ATRIUM, overrides={"spacing": (1, 1, 1)})
    with pytest.raises(PlansError, match="not a multiple of the network's size divisor 8"):
        Plans({"a": DatasetPlan("a", plan.spec, (20, 64, 48))}, size_divisor=8)


def test_plans_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    plans = Plans(
        {f.name: plan_dataset(f, DEFAULT_PATCH_VOXELS, DIVISOR) for f in (HIPPOCAMPUS, ACDC, SPLEEN_CT)},
        aliases={"extra_mr": "Dataset001_Hippocampus"},
        size_divisor=DIVISOR,
    )
    assert Plans.from_dict(json.loads(json.dumps(plans.to_dict()))) == plans
    path = save_checkpoint({"plans": plans.to_dict(), "model": {}}, tmp_path / "model.pt")
    restored = Plans.from_dict(load_checkpoint(path)["plans"])
    assert restored == plans
    assert restored.plan_for("extra_mr") is restored.datasets["Dataset001_Hippocampus"]
    assert restored.spec_for("Dataset003_ACDC").target_spacing == (1.5, 1.5, 10.0)
    with pytest.raises(PlansError, match="no plan for 'nope'"):
        restored.plan_for("nope")
    with pytest.raises(PlansError, match="version 99"):
        Plans.from_dict({**plans.to_dict(), "version": 99})
    with pytest.raises(PlansError, match="format marker"):
        Plans.from_dict({"datasets": {}})


def test_config_plans_fingerprint_the_training_data(tmp_path: Path, synthetic_datasets: dict[str, Path]) -> None:
    raw = {
        "datasets": [
            {"path": str(synthetic_datasets["Dataset901_Alpha"]), "labeled": ["alpha_000", "alpha_001"]},
            {"path": str(synthetic_datasets["Dataset902_Beta"]), "labeled": "all"},
        ],
        "model": {"backbone": "unet", "depth": 3},
        "plans": {"patch_voxels": 4096, "overrides": {"Dataset901_Alpha": {"target_spacing": [2, 2, 2]}}},
        "validation": {"fraction": 0.0},
    }
    plans = plans_for_config(TrainConfig.from_dict(raw, base_dir=tmp_path))
    alpha, beta = plans.datasets["Dataset901_Alpha"], plans.datasets["Dataset902_Beta"]
    assert plans.size_divisor == 4
    assert alpha.target_spacing == (2.0, 2.0, 2.0) and alpha.overridden == ("target_spacing",)
    assert beta.target_spacing[2] == pytest.approx(2.0)  # Beta's own (1.2, 1.2, 2.0) grid, coarsened in-plane only
    assert beta.spec.normalization == "ct_zscore" and beta.fingerprint is not None
    assert beta.fingerprint.num_cases == 4 and beta.fingerprint.intensity is not None
    assert all(math.prod(p.patch_size) <= 4096 for p in (alpha, beta))
    # The top-level keys override every dataset at once.
    both = plans_for_config(TrainConfig.from_dict({**raw, "target_spacing": [3, 3, 3], "patch_size": [8, 8, 8]},
                                                  base_dir=tmp_path))
    assert {p.patch_size for p in both.datasets.values()} == {(8, 8, 8)}
    assert both.datasets["Dataset901_Alpha"].target_spacing == (2.0, 2.0, 2.0)  # the per-dataset override wins
    assert both.datasets["Dataset902_Beta"].target_spacing == (3.0, 3.0, 3.0)


def test_fingerprint_reads_headers_and_labels(tmp_path: Path, synthetic_datasets: dict[str, Path]) -> None:
    root = synthetic_datasets["Dataset902_Beta"]
    images = sorted((root / "imagesTr").glob("*.nii.gz"))
    labels = sorted((root / "labelsTr").glob("*.nii.gz"))
    fp = fingerprint_dataset("Beta", "CT", images, list(zip(images[:2], labels[:2])))
    assert fp.median_spacing == pytest.approx((1.2, 1.2, 2.0))
    assert fp.num_cases == len(images) and fp.foreground_extent is not None
    assert fp.intensity is not None and fp.intensity.percentile_00_5 < fp.intensity.percentile_99_5
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    with pytest.raises(PlansError, match="broken.nii.gz"):
        fingerprint_dataset("Beta", "CT", [tmp_path / "broken.nii.gz"], [])


def test_plan_command_prints_json_per_dataset(tmp_path: Path, synthetic_datasets: dict[str, Path], capsys) -> None:
    from versemi.cli import main

    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "datasets": [{"path": str(synthetic_datasets["Dataset901_Alpha"]), "labeled": "all"},
                     {"path": str(synthetic_datasets["Dataset902_Beta"]), "labeled": "all"}],
        "model": {"backbone": "unet", "depth": 3},
    }))
    assert main(["plan", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["Dataset901_Alpha", "Dataset902_Beta"]
    assert out["Dataset902_Beta"]["target_spacing"][2] == pytest.approx(2.0)  # mm, (x, y, z)
    assert out["Dataset902_Beta"]["normalization"]["normalization"] == "ct_zscore"
    assert main(["plan", str(config)]) == 0
    assert "target spacing" in capsys.readouterr().out
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.shared_data
def test_real_fingerprints_give_the_documented_plans(shared_data: Path) -> None:
    raw = {"datasets": [{"path": str(shared_data / name), "labeled": "all"}
                        for name in ("Dataset001_Hippocampus", "Dataset002_LeftAtrium", "Dataset003_ACDC")],
           "model": {"backbone": "unet", "depth": 4}, "validation": {"fraction": 0.0}}
    plans = plans_for_config(TrainConfig.from_dict(raw, base_dir=shared_data))
    assert plans.datasets["Dataset001_Hippocampus"].target_spacing == (1.0, 1.0, 1.0)
    assert plans.datasets["Dataset003_ACDC"].target_spacing == (1.5, 1.5, 10.0)
