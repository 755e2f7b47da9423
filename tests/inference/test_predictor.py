"""Predictor: output on exactly the input grid, physical consistency, prompts, ROI, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from versemi.data.synthetic import SyntheticStructure, make_volume
from versemi.inference import PredictionError, Predictor
from versemi.inference.io import sidecar_paths
from versemi.inference.progress import JsonLinesProgress

from .helpers import make_image, with_spec_changes

STRUCTURES = [SyntheticStructure("spleen", 1, 1.5), SyntheticStructure("liver", 2, -1.0)]


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def oblique_case(seed: int = 5) -> tuple[sitk.Image, np.ndarray]:
    """An oblique (rotated ~25 deg), anisotropic, non-RAS scan of the Beta organs and its truth."""
    rng = np.random.default_rng(seed)
    # ~36 mm along every axis like the training volumes, with a different voxel count per axis.
    image, label = make_volume((20, 40, 28), STRUCTURES, rng)
    # Rotation times a flip of x and z: neither RAS nor LPS, and not axis-aligned.
    direction = _rotation(np.array([1.0, 1.0, 0.3]), 25.0) @ np.diag([-1.0, 1.0, -1.0])
    img = make_image(image, spacing=(1.3, 0.9, 1.8), origin=(-12.5, 40.25, 7.0), direction=direction.ravel())
    return img, label


def flipped_x(image: sitk.Image) -> sitk.Image:
    """The same physical object seen with the array flipped along x (first direction column negated)."""
    array = sitk.GetArrayFromImage(image)[:, :, ::-1]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    nx, sx = image.GetSize()[0], image.GetSpacing()[0]
    origin = np.array(image.GetOrigin()) + direction[:, 0] * sx * (nx - 1)
    direction[:, 0] *= -1
    return make_image(np.ascontiguousarray(array), image.GetSpacing(), origin, direction.ravel())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def predictor(trained_checkpoint: Path) -> Predictor:
    return Predictor(trained_checkpoint, device="cpu")


def test_oblique_input_grid_and_flip_consistency(predictor: Predictor) -> None:
    image, truth = oblique_case()
    result = predictor.predict(image, "spleen,liver")
    out = result.labelmap
    # Exactly the input grid: size, spacing, origin, direction compared with ==, not approximately.
    assert out.GetSize() == image.GetSize()
    assert out.GetSpacing() == image.GetSpacing()
    assert out.GetOrigin() == image.GetOrigin()
    assert out.GetDirection() == image.GetDirection()
    assert out.GetPixelID() == sitk.sitkUInt8
    labels = sitk.GetArrayFromImage(out)
    assert set(np.unique(labels)) <= {0, 1, 2}
    # The labels land on the structures (geometry restored correctly, not just the header).
    assert dice(labels == 1, truth == 1) > 0.6
    assert dice(labels == 2, truth == 2) > 0.4

    flipped = flipped_x(image)
    # Sanity check of the test itself: the flipped image shows the same physical object.
    centre_index = (5, 7, 9)
    mirror_index = (image.GetSize()[0] - 1 - 5, 7, 9)
    np.testing.assert_allclose(
        image.TransformIndexToPhysicalPoint(centre_index), flipped.TransformIndexToPhysicalPoint(mirror_index),
        atol=1e-9,
    )
    labels_flipped = sitk.GetArrayFromImage(predictor.predict(flipped, "spleen,liver").labelmap)
    disagreement = np.mean(labels_flipped != labels[:, :, ::-1])
    assert disagreement < 1e-3, f"{disagreement:.2%} of voxels differ after flipping the direction"


def test_label_values_follow_prompt_order(predictor: Predictor) -> None:
    image, truth = oblique_case(seed=6)
    a = predictor.predict(image, ["liver", "spleen"])
    assert [(e.value, e.name) for e in a.labels] == [(1, "liver"), (2, "spleen")]
    labels = sitk.GetArrayFromImage(a.labelmap)
    assert dice(labels == 2, truth == 1) > 0.6  # spleen is now value 2


def test_probabilities_threshold_and_overlap_rule(predictor: Predictor) -> None:
    image, _ = oblique_case(seed=7)
    result = predictor.predict(image, "all", return_probabilities=True)
    assert [e.name for e in result.labels] == ["organ_a", "spleen", "liver"]
    probs = np.stack([sitk.GetArrayFromImage(result.probabilities[e.name]) for e in result.labels])
    assert probs.dtype == np.float32 and probs.min() >= 0 and probs.max() <= 1
    labels = sitk.GetArrayFromImage(result.labelmap)
    expected = np.where(probs.max(0) >= 0.5, probs.argmax(0) + 1, 0)
    # Running max is kept in float16: allow ties right at the threshold / between prompts.
    assert np.mean(labels != expected) < 1e-3
    for prob in result.probabilities.values():
        assert prob.GetSize() == image.GetSize() and prob.GetDirection() == image.GetDirection()


def test_synthetic_prompt_by_name(predictor: Predictor) -> None:
    image, truth = oblique_case(seed=8)
    result = predictor.predict(image, "all_foreground")
    assert [e.name for e in result.labels] == ["all_foreground"]
    assert result.labels[0].prompt_id == predictor.label_space.synthetic_id


def test_roi_only_segments_inside_box(predictor: Predictor) -> None:
    image, _ = oblique_case()
    box = (4, 6, 3, 24, 34, 17)  # x0, y0, z0, x1, y1, z1 (voxel indices, end exclusive)
    result = predictor.predict(image, "spleen,liver", roi="4,6,3,24,34,17", return_probabilities=True)
    assert result.labelmap.GetSize() == image.GetSize()
    assert result.labelmap.GetOrigin() == image.GetOrigin()
    labels = sitk.GetArrayFromImage(result.labelmap)
    inside = np.zeros_like(labels, dtype=bool)
    inside[box[2]:box[5], box[1]:box[4], box[0]:box[3]] = True
    assert not labels[~inside].any()
    assert not sitk.GetArrayFromImage(result.probabilities["spleen"])[~inside].any()
    # Inside the box: exactly what predicting the cropped scan gives (pasted at the right place).
    crop = image[box[0]:box[3], box[1]:box[4], box[2]:box[5]]
    direct = sitk.GetArrayFromImage(predictor.predict(crop, "spleen,liver").labelmap)
    np.testing.assert_array_equal(labels[inside].reshape(direct.shape), direct)
    with pytest.raises(ValueError, match="does not fit"):
        predictor.predict(image, "spleen", roi=(0, 0, 0, 29, 10, 10))


def test_one_backbone_pass_per_window_for_all_prompts(trained_payload: dict) -> None:
    predictor = Predictor(trained_payload, device="cpu")
    calls: list[tuple[int, int]] = []
    original = predictor.model.encode

    def counting_encode(images: torch.Tensor, geometry=None):
        calls.append(tuple(images.shape[:2]))
        return original(images, geometry)

    predictor.model.encode = counting_encode  # type: ignore[method-assign]
    image, _ = oblique_case()
    predictor.predict(image, "all")
    n_all = len(calls)
    calls.clear()
    predictor.predict(image, "spleen")
    assert n_all == len(calls) > 0  # 3 prompts cost the same number of backbone passes as 1


def test_tta_fast_mode_and_batching(trained_payload: dict) -> None:
    image, truth = oblique_case()
    base = Predictor(trained_payload, device="cpu")
    tta = Predictor(trained_payload, device="cpu", tta=True, batch_size=3)
    fast = Predictor(trained_payload, device="cpu", quality="fast")
    assert fast.effective_spec().target_spacing == (3.0, 3.0, 3.0) and fast.overlap == 0.25
    ref = sitk.GetArrayFromImage(base.predict(image, "spleen").labelmap)
    res = tta.predict(image, "spleen")
    assert res.info["tta"] is True and res.info["batch_size"] == 3
    assert dice(sitk.GetArrayFromImage(res.labelmap) == 1, ref == 1) > 0.6
    # Fast mode runs at 3 mm: a tiny model trained at 1.5 mm only has to produce a valid labelmap.
    res = fast.predict(image, "spleen")
    assert res.info["spacing_mm"] == [3.0, 3.0, 3.0]
    assert res.labelmap.GetSize() == image.GetSize() and res.labelmap.GetDirection() == image.GetDirection()


def test_cuda_out_of_memory_falls_back_to_cpu(trained_payload: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import versemi.inference.sliding as sliding

    real = sliding.sliding_window_probabilities

    def fake(model, volume, ids, settings, device, *args, **kwargs):
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, volume, ids, settings, device, *args, **kwargs)

    monkeypatch.setattr(sliding, "sliding_window_probabilities", fake)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    predictor = Predictor(trained_payload, device="cpu")
    predictor.device = torch.device("cuda")  # pretend we run on a GPU that is full
    lines: list[str] = []

    class Capture:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    result = predictor.predict(oblique_case()[0], "spleen", progress=JsonLinesProgress(Capture()))
    assert result.info["fell_back_to_cpu"] is True and result.info["device"] == "cpu"
    assert any("out of memory" in json.loads(ln)["message"] for ln in lines)


def test_predict_file_writes_contract_outputs(predictor: Predictor, tmp_path: Path) -> None:
    image, _ = oblique_case()
    src = tmp_path / "in" / "scan.nrrd"
    src.parent.mkdir()
    sitk.WriteImage(image, str(src))
    out = tmp_path / "out" / "scan_seg.nii.gz"
    written = predictor.predict_file(src, out, "spleen,liver", probabilities_dir=tmp_path / "prob",
                                     probabilities_dtype="uint8")
    sidecar, ctbl = sidecar_paths(out)
    assert written.sidecar == sidecar == tmp_path / "out" / "scan_seg.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan_seg.ctbl", "scan_seg.json", "scan_seg.nii.gz"]
    meta = json.loads(sidecar.read_text())
    assert [(d["value"], d["name"]) for d in meta["labels"]] == [(1, "spleen"), (2, "liver")]
    assert meta["labels"][0]["snomed"]["code"] == "78961009"
    assert meta["model"]["sha256"] == predictor.sha256 and len(predictor.sha256) == 64
    assert meta["input"] == str(src)
    table = [ln.split() for ln in ctbl.read_text().splitlines() if not ln.startswith("#")]
    assert table[0][:2] == ["0", "background"]
    assert table[1] == ["1", "spleen", "157", "108", "162", "255"]
    reread = sitk.ReadImage(str(out))
    assert reread.GetSize() == image.GetSize()
    np.testing.assert_allclose(reread.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(reread.GetOrigin(), image.GetOrigin(), atol=1e-4)
    probs = sorted((tmp_path / "prob").iterdir())
    assert [p.name for p in probs] == ["liver.nii.gz", "spleen.nii.gz"]
    assert sitk.ReadImage(str(probs[1])).GetPixelID() == sitk.sitkUInt8


@pytest.mark.parametrize("crop_to_nonzero", [False, True])
def test_box_restore_equals_full_restore(trained_payload: dict, crop_to_nonzero: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Restoring only where a prompt can reach 0.5, slab by slab, gives the labels of restoring everything."""
    import versemi.inference.export as predictor_module

    monkeypatch.setattr(predictor_module, "_RESTORE_SLAB", 3)  # several slabs even on a small scan
    payload = with_spec_changes(trained_payload, crop_to_nonzero=crop_to_nonzero)
    predictor = Predictor(payload, device="cpu")
    image, _ = oblique_case(seed=9)
    if crop_to_nonzero:  # zero background around the scan so preprocessing crops it
        array = sitk.GetArrayFromImage(image)
        array[:, :6, :] = 0
        array[:, :, -5:] = 0
        image = make_image(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    for roi in (None, (3, 2, 1, 27, 37, 19)):
        fast = sitk.GetArrayFromImage(predictor.predict(image, "all", roi=roi).labelmap)
        full = sitk.GetArrayFromImage(predictor.predict(image, "all", roi=roi, return_probabilities=True).labelmap)
        assert fast.any()
        np.testing.assert_array_equal(fast, full)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_precision_option(trained_payload: dict, monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    import warnings

    import versemi.devices
    from versemi.devices import PrecisionWarning

    monkeypatch.setattr(versemi.devices, "cpu_has_native_bf16", lambda: native)
    image, _ = oblique_case()
    fp32 = Predictor(trained_payload, device="cpu").predict(image, "spleen,liver")
    # `auto`: bf16 on a CPU with native bf16, float32 elsewhere
    assert fp32.info["precision"] == ("bfloat16" if native else "float32")
    assert Predictor(trained_payload, device="cpu", precision="fp32").predict(image, "spleen,liver").info[
        "precision"] == "float32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor(trained_payload, device="cpu", precision="bf16")
    assert [w.category for w in caught] == ([] if native else [PrecisionWarning])
    bf16 = predictor.predict(image, "spleen,liver")
    assert bf16.info["precision"] == ("bfloat16" if native else "float32")
    a, b = sitk.GetArrayFromImage(fp32.labelmap), sitk.GetArrayFromImage(bf16.labelmap)
    for value in (1, 2):
        assert dice(a == value, b == value) > 0.95
    if not native:
        assert np.array_equal(a, b)
    with pytest.raises(PredictionError, match="unknown precision"):
        Predictor(trained_payload, device="cpu", precision="fp8")
