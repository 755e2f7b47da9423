"""Coarse-to-fine prediction: a localiser finds a crop-trained structure in a much larger scan, the
model segments inside the located box only; nothing located (or a small scan) means the full sweep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from versemi.data.synthetic import mosaic_canvas
from versemi.inference import Predictor
from versemi.inference.coarse_to_fine import Localisers, catalogue_localisers, is_much_larger
from versemi.inference.localiser import Localiser, LocaliserError, LocaliserNet, grow_box, merge_boxes, physical_box
from versemi.models.catalogue import load_catalogue

from .helpers import dice, make_image
from .test_field_of_view import ALPHA, crops_payload
from .test_paired_structures import HIPPOCAMPUS, MODELS, PROMPTS, default_payload

HIPPO = "Dataset001_Hippocampus"
CASES = ("001", "004", "007", "008", "011", "015", "020", "023")
CATALOGUE = MODELS.parent / "catalogue.json"


def constant_localiser(dataset: str, logit: float) -> Localiser:
    """A localiser whose every voxel has probability sigmoid(logit)."""
    net = LocaliserNet(2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.head.bias.fill_(logit)
    return Localiser(dataset, net)


def test_boxes_map_through_physical_space_grow_and_merge() -> None:
    image = make_image(np.zeros((40, 50, 60), dtype=np.float32), spacing=(0.5, 1.0, 2.0),
                       direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    record = {"resampled": {"spacing": [3.0, 3.0, 3.0], "direction": [-1, 0, 0, 0, -1, 0, 0, 0, 1],
                            "origin": [0.0, 0.0, 0.0]}, "crop_bbox_zyx": [[0, 27], [0, 17], [1, 11]]}
    # Preprocessed x 2..4 (+ the crop's 1) -> edges -7.5..-13.5 mm -> input index 15..27: voxels 15..27 touch it.
    box = physical_box(((0, 2), (0, 2), (2, 4)), record, image)
    assert box[0] == 15 and box[3] == 28 and box[1] == 0 and box[4] == 5
    assert grow_box((10, 10, 10, 12, 12, 12), image, margin_mm=2.0, min_mm=(0, 0, 0)) == (6, 8, 9, 16, 14, 13)
    assert grow_box((10, 10, 10, 12, 12, 12), image, margin_mm=0.0, min_mm=(10, 10, 10)) == (1, 6, 8, 21, 16, 14)
    assert merge_boxes([(0, 0, 0, 5, 5, 5), (4, 4, 4, 8, 8, 8), (20, 20, 20, 22, 22, 22)]) == [
        (0, 0, 0, 8, 8, 8), (20, 20, 20, 22, 22, 22)]


def test_localiser_files_are_verified_and_read_weights_only(tmp_path: Path) -> None:
    path = constant_localiser(HIPPO, 1.0).save(tmp_path / "loc.pt")
    loaded = Localiser.load(path)
    assert loaded.dataset == HIPPO and loaded.margin_mm == 5.0
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(LocaliserError, match="damaged"):
        Localiser.load(tmp_path / "bad.pt")
    with pytest.raises(LocaliserError, match="does not match its recorded SHA-256"):
        Localiser.load(path, expected_sha256="0" * 64)
    with pytest.raises(LocaliserError, match="given for"):
        Localisers({"Dataset002_LeftAtrium": path}).get("Dataset002_LeftAtrium")


def test_nothing_located_or_a_small_scan_means_the_full_sweep() -> None:
    payload = crops_payload()  # Alpha trained on 35 x 50 x 36 mm crops
    head = make_image(np.random.default_rng(0).normal(size=(36, 44, 36)).astype(np.float32), spacing=(5.0, 5.0, 5.0))
    full = Predictor(payload, device="cpu", coarse_to_fine=False).predict(head, "organ_a")
    nothing = Predictor(payload, device="cpu", localisers={ALPHA: constant_localiser(ALPHA, -20.0)})
    result = nothing.predict(head, "organ_a")
    assert result.info["preprocessing"][0]["localised"] == "nothing located: full sweep"
    assert "field of view" in result.info["warnings"][0]
    assert (sitk.GetArrayFromImage(result.labelmap) == sitk.GetArrayFromImage(full.labelmap)).all()
    everything = Predictor(payload, device="cpu", localisers={ALPHA: constant_localiser(ALPHA, 20.0)})
    result = everything.predict(head, "organ_a")
    assert result.info["preprocessing"][0]["localised"] == [[0, 0, 0, 36, 44, 36]]  # one box: the whole scan
    assert "warnings" not in result.info  # located: no field-of-view warning (the full sweeps above keep it)
    assert result.labelmap.GetSize() == head.GetSize() and result.labelmap.GetOrigin() == head.GetOrigin()
    crop = make_image(np.zeros((8, 10, 8), dtype=np.float32), spacing=(5.0, 5.0, 5.0))  # 40 x 50 x 40 mm
    assert not is_much_larger(crop, everything.plans, ALPHA) and is_much_larger(head, everything.plans, ALPHA)
    assert "localised" not in everything.predict(crop, "organ_a").info["preprocessing"][0]


def test_the_default_model_entry_references_a_verified_hippocampus_localiser() -> None:
    entry = load_catalogue(CATALOGUE).default_entry()
    refs = catalogue_localisers(entry)
    assert HIPPO in refs and refs[HIPPO].path.parent == MODELS
    localiser = Localisers(refs).get(HIPPO)
    assert localiser.dataset == HIPPO and json.dumps(dict(localiser.info))


def bundled(case: str) -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / f"hippocampus_{case}_0000.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"hippocampus_{case}.nii.gz")))
    return image, sitk.GetArrayFromImage(image).astype(np.float32), label


def mean_dice(labelmap: sitk.Image, truth: np.ndarray) -> float:
    array = sitk.GetArrayFromImage(labelmap)
    return float(np.mean([dice(array == k, truth == k) for k in (1, 2)]))


def test_a_bundled_crop_in_a_much_larger_canvas_is_located_and_segmented_like_the_crop_alone() -> None:
    """Each bundled crop at a random place in a 96 x 112 x 96 mm mosaic of the other bundled crops
    (16x the training crops' volume): Dice within 1 point of the crop alone on average over the eight
    crops (no crop more than 2 points worse), and faster than the full sweep."""
    models = sorted(MODELS.glob("versemi-default-*.pt"))[-1]
    predictor = Predictor(models, device="cpu", threads=1)  # localisers from its catalogue entry
    full_sweep = Predictor(default_payload(), device="cpu", threads=1, coarse_to_fine=False)
    crops = {case: bundled(case) for case in CASES}
    differences = []
    for case, (image, array, label) in crops.items():
        rng = np.random.default_rng(int(case))
        background = [a for c, (_, a, _) in crops.items() if c != case]
        canvas, truth, _ = mosaic_canvas(rng, (96, 112, 96), background, [(array, label)])
        scan = sitk.GetImageFromArray(canvas * 500.0)
        scan.SetSpacing(image.GetSpacing())
        scan.SetDirection(image.GetDirection())
        alone = mean_dice(full_sweep.predict(image, ",".join(PROMPTS)).labelmap, label)
        start = time.process_time()
        result = predictor.predict(scan, ",".join(PROMPTS))
        located_seconds = time.process_time() - start
        assert isinstance(result.info["preprocessing"][0]["localised"], list), case
        differences.append(mean_dice(result.labelmap, truth) - alone)
        if case == CASES[0]:
            start = time.process_time()
            full_sweep.predict(scan, ",".join(PROMPTS))
            assert located_seconds < time.process_time() - start
    # versemi-default 1.1.0: -1.1 to +1.0 points per crop, mean -0.1 (7 of 8 crops within 1 point).
    assert np.mean(differences) >= -0.01 and min(differences) >= -0.02, np.round(differences, 4)
