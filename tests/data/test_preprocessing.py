"""Preprocessing: geometry round trip on oblique grids, intensity normalisation, cropping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.data.preprocessing import (
    PREPROCESSING_VERSION,
    PreprocessingSpec,
    preprocess_case,
    restore_to_input_grid,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoids(shape: tuple[int, int, int]) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    cz, cy, cx = (n / 2 for n in shape)
    label[((zz - cz) / 6) ** 2 + ((yy - cy) / 12) ** 2 + ((xx - cx + 4) / 9) ** 2 <= 1] = 1
    label[((zz - cz) / 4) ** 2 + ((yy - cy + 3) / 6) ** 2 + ((xx - cx - 9) / 5) ** 2 <= 1] = 2
    return label


def _on_grid(array: np.ndarray, spacing, origin, direction) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection([float(d) for d in np.asarray(direction).ravel()])
    return img


@pytest.fixture
def oblique_case() -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """An anisotropic scan with a rotated, axis-permuted, flipped (far from RAS) direction."""
    rng = np.random.default_rng(0)
    shape = (20, 40, 36)  # (z, y, x)
    label = _ellipsoids(shape)
    image = (label * 100 + 50 + rng.normal(0, 10, shape)).astype(np.int16)
    # Rotation, then swap the first two axes and flip two: a left-handed-looking, oblique grid.
    direction = _rotation(0.35, -0.2, 0.6) @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, -1]])
    geometry = ((0.8, 1.1, 2.5), (10.0, -20.0, 33.0), direction)
    return _on_grid(image, *geometry), _on_grid(label, *geometry), label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _assert_same_grid(restored: sitk.Image, original: sitk.Image) -> None:
    assert restored.GetSize() == original.GetSize()
    assert restored.GetSpacing() == original.GetSpacing()
    assert restored.GetOrigin() == original.GetOrigin()
    assert restored.GetDirection() == original.GetDirection()


def test_roundtrip_restores_oblique_grid_and_label(oblique_case):
    image, label_img, label = oblique_case
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5))
    case = preprocess_case(image, spec, label_img)

    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.image.shape == case.label.shape == tuple(case.record["shape_zyx"])
    # Reoriented to RAS: the resampled grid's direction is the closest-to-identity-in-RAS one.
    resampled_dir = case.record["resampled"]["direction"]
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(resampled_dir) == "RAS"
    assert case.record["resampled"]["spacing"] == [1.0, 1.0, 1.5]
    json.dumps(case.record)  # JSON-serialisable

    restored = restore_to_input_grid(case.label, case.record, is_label=True)
    _assert_same_grid(restored, image)
    back = sitk.GetArrayFromImage(restored)
    for value in (1, 2):
        assert _dice(back == value, label == value) > 0.95

    # Probabilities: several channels at once, linear interpolation, same grid.
    probs = np.stack([case.label == 1, case.label == 2]).astype(np.float32)
    channels = restore_to_input_grid(probs, case.record, is_label=False)
    assert isinstance(channels, list) and len(channels) == 2
    for ch in channels:
        _assert_same_grid(ch, image)
        assert ch.GetPixelID() == sitk.sitkFloat32
    p1 = sitk.GetArrayFromImage(channels[0])
    assert 0.0 <= p1.min() and p1.max() <= 1.0
    assert _dice(p1 > 0.5, label == 1) > 0.95


def test_roundtrip_of_image_intensities_with_bspline(oblique_case):
    image, _, _ = oblique_case
    spec = PreprocessingSpec(target_spacing=(0.9, 0.9, 1.2), image_interpolation="bspline", crop_to_nonzero=False)
    case = preprocess_case(image, spec)
    assert case.label is None
    restored = restore_to_input_grid(case.image, case.record, is_label=False)
    _assert_same_grid(restored, image)
    norm = case.record["normalization"]
    original = sitk.GetArrayFromImage(image).astype(np.float64)
    expected = (original - norm["mean"]) / norm["std"]
    back = sitk.GetArrayFromImage(restored)
    # Interior voxels come back close (interpolating noise twice smooths it a bit).
    inner = (slice(2, -2),) * 3
    assert np.corrcoef(back[inner].ravel(), expected[inner].ravel())[0, 1] > 0.9


def test_mr_zscore_over_nonzero_region():
    rng = np.random.default_rng(1)
    array = np.zeros((16, 20, 20), np.float32)
    array[4:12, 5:15, 3:17] = rng.normal(300, 40, (8, 10, 14))
    image = _on_grid(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0), modality="MR", orientation="LPS")
    case = preprocess_case(image, spec)
    # Cropped to the non-zero box; statistics from the non-zero voxels only.
    assert case.record["crop_bbox_zyx"] == [[4, 12], [5, 15], [3, 17]]
    assert case.image.shape == (8, 10, 14)
    assert abs(case.image.mean()) < 1e-4
    assert abs(case.image.std() - 1.0) < 1e-3
    assert case.record["normalization"]["region"] == "nonzero"
    # Restoring puts the un-cropped border back as the fill value.
    restored = sitk.GetArrayFromImage(restore_to_input_grid(case.image, case.record, False, fill=-7.0))
    assert np.all(restored[:4] == -7.0)
    np.testing.assert_allclose(restored[4:12, 5:15, 3:17], case.image, atol=1e-5)


def test_ct_window_clips_and_scales_to_unit_range():
    hu = np.full((10, 12, 12), -1000.0, np.float32)  # air
    hu[2:8, 3:9, 2:10] = 40.0  # soft tissue
    hu[4, 5, 5] = 1500.0  # bone, above the window
    hu[5, 5, 5] = -300.0  # below the window but inside the body
    image = _on_grid(hu.astype(np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0), modality="ct", orientation="LPS")
    assert spec.ct_window == (-175.0, 250.0)
    case = preprocess_case(image, spec)
    assert case.record["crop_bbox_zyx"] == [[2, 8], [3, 9], [2, 10]]
    assert case.image.min() >= 0.0 and case.image.max() <= 1.0
    assert case.image[2, 2, 3] == pytest.approx(1.0)  # 1500 HU clipped to the top
    assert case.image[3, 2, 3] == pytest.approx(0.0)  # -300 HU clipped to the bottom
    assert case.image[0, 0, 0] == pytest.approx((40 + 175) / 425, abs=1e-6)


def test_crop_keeps_label_outside_body():
    array = np.zeros((10, 10, 10), np.float32)
    array[3:6, 3:6, 3:6] = 5.0
    label = np.zeros((10, 10, 10), np.uint8)
    label[8, 8, 8] = 1  # annotated where the image is 0: must not be cropped away
    geometry = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0), orientation="LPS")
    case = preprocess_case(_on_grid(array, *geometry), spec, _on_grid(label, *geometry))
    assert case.record["crop_bbox_zyx"] == [[3, 9], [3, 9], [3, 9]]
    assert case.label.sum() == 1


def test_spec_roundtrip_and_validation():
    spec = PreprocessingSpec(target_spacing=[0.8, 0.8, 2], modality="CT", ct_window=[-100, 200])
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert PreprocessingSpec.from_dict(d) == spec
    assert d["version"] == PREPROCESSING_VERSION
    with pytest.raises(ValueError, match="target_spacing"):
        PreprocessingSpec(target_spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown"):
        PreprocessingSpec.from_dict({"target_spacing": [1, 1, 1], "spacng": 2})
    with pytest.raises(ValueError, match="image_interpolation"):
        PreprocessingSpec(target_spacing=(1, 1, 1), image_interpolation="cubic")


def test_bad_inputs_give_clear_errors(oblique_case):
    image, label_img, _ = oblique_case
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0))
    shifted = sitk.Image(label_img)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="label grid differs"):
        preprocess_case(image, spec, shifted)
    big = sitk.Cast(label_img, sitk.sitkInt16) * 300
    with pytest.raises(ValueError, match="0..255"):
        preprocess_case(image, spec, big)
    case = preprocess_case(image, spec)
    with pytest.raises(ValueError, match="does not match"):
        restore_to_input_grid(np.zeros((3, 3, 3), np.uint8), case.record, is_label=True)


EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "data"


def test_real_ct_example_roundtrip():
    """The bundled MSD spleen CT crop (0.8 x 0.8 x 5 mm, RAS direction): window, crop, exact inverse."""
    folder = EXAMPLES / "Dataset004_SpleenCT"
    if not folder.is_dir():
        pytest.skip("bundled example data not present")
    image = sitk.ReadImage(str(folder / "imagesTr" / "spleen_002_0000.nii.gz"))
    label_img = sitk.ReadImage(str(folder / "labelsTr" / "spleen_002.nii.gz"))
    spec = PreprocessingSpec(target_spacing=(1.5, 1.5, 2.5), modality="CT")
    case = preprocess_case(image, spec, label_img)
    assert 0.0 <= case.image.min() and case.image.max() <= 1.0
    assert case.label.max() == 1
    restored = restore_to_input_grid(case.label, case.record, is_label=True)
    _assert_same_grid(restored, image)
    original = sitk.GetArrayFromImage(label_img) > 0
    assert _dice(sitk.GetArrayFromImage(restored) > 0, original) > 0.95


def _assert_hippocampus_roundtrips(folder, case_ids) -> None:
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0))
    for case_id in case_ids:
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case_id}_0000.nii.gz"))
        label_img = sitk.ReadImage(str(folder / "labelsTr" / f"{case_id}.nii.gz"))
        case = preprocess_case(image, spec, label_img)
        restored = restore_to_input_grid(case.label, case.record, is_label=True)
        _assert_same_grid(restored, image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), sitk.GetArrayFromImage(label_img))


def test_bundled_hippocampus_cases_roundtrip():
    """Real MR cases shipped in examples/data: the label survives preprocessing and restore exactly."""
    _assert_hippocampus_roundtrips(EXAMPLES / "Dataset001_Hippocampus", ("hippocampus_001", "hippocampus_004"))


@pytest.mark.shared_data
def test_real_hippocampus_cases_roundtrip(shared_data):
    """Optional: more real MR cases from ../shared/data (skipped, with a reason, when absent)."""
    _assert_hippocampus_roundtrips(shared_data / "Dataset001_Hippocampus", ("hippocampus_025", "hippocampus_034", "hippocampus_053"))
