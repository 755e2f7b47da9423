"""Post-processing: each chosen prompt keeps its largest connected component, as the checkpoint says."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.inference import Predictor
from versemi.inference.postprocess import check_postprocessing, keep_largest_components, largest_component
from versemi.training.validation import postprocessing_from_validation

from .helpers import make_image, tiny_payload


def test_largest_component_keeps_only_the_biggest_blob() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:5, 1:5, 1:5] = True  # 64 voxels
    mask[7:9, 7:9, 7:9] = True  # 8 voxels, apart
    mask[5, 5, 5] = True  # touches the big one only diagonally: 26-connected, kept
    kept = largest_component(mask)
    assert kept.sum() == 65 and not kept[7:9, 7:9, 7:9].any()
    assert not largest_component(np.zeros((3, 3, 3), dtype=bool)).any()


def test_keep_largest_components_touches_only_the_given_values() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 1
    labels[9:11, 9:11, 9:11] = 1  # a stray blob of label 1
    labels[9:11, 1:3, 1:3] = 2  # label 2: two blobs, not post-processed
    labels[1:3, 9:11, 9:11] = 2
    out = keep_largest_components(labels.copy(), {1: [1]})
    assert (out == 1).sum() == 125 and (out[9:11, 9:11, 9:11] == 0).all()
    assert ((out == 2) == (labels == 2)).all()


def test_a_group_keeps_pieces_that_touch_through_its_other_structures() -> None:
    """Heart-like: a ring (2) around a cavity (3), the ring split in two pieces that only touch each
    other through the cavity; a distant blob of 2. With the group {2, 3} both ring pieces stay and the
    blob goes; per structure alone, one ring piece would be lost."""
    labels = np.zeros((14, 14, 14), dtype=np.uint8)
    labels[3:9, 3:9, 3:9] = 3
    labels[3:9, 3:9, 2] = 2  # one piece of the ring, left of the cavity
    labels[3:9, 3:9, 9] = 2  # the other piece, right of it
    labels[12, 12, 12] = 2  # a distant false positive
    grouped = keep_largest_components(labels.copy(), {2: [2, 3], 3: [2, 3]})
    assert (grouped == 2).sum() == 72 and grouped[12, 12, 12] == 0
    alone = keep_largest_components(labels.copy(), {2: [2]})
    assert (alone == 2).sum() == 36


def test_validation_decides_per_prompt() -> None:
    metrics = {"liver": {"dice": 0.7, "dice_largest_component": 0.8},
               "kidney": {"dice": 0.9, "dice_largest_component": 0.6}}
    assert postprocessing_from_validation(metrics) == {"liver": "largest_component"}
    with pytest.raises(ValueError, match="not a prompt"):
        check_postprocessing({"lung": "largest_component"}, ["liver"], "x")
    with pytest.raises(ValueError, match="unknown"):
        check_postprocessing({"liver": "fill_holes"}, ["liver"], "x")


def test_predictor_applies_the_checkpoint_postprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import versemi.inference.sliding as sliding

    def two_blobs(model, volume, prompt_ids, *args, **kwargs):
        probs = torch.zeros((len(prompt_ids), *volume.shape))
        probs[:, 2:8, 2:8, 2:8] = 0.9
        probs[:, 12:14, 12:14, 12:14] = 0.8
        return probs

    monkeypatch.setattr(sliding, "sliding_window_probabilities", two_blobs)
    image = make_image(np.full((16, 16, 16), 5.0, dtype=np.float32), spacing=(1.5, 1.5, 1.5))
    payload = {**tiny_payload(), "postprocessing": {"organ_a": "largest_component"}}
    result = Predictor(payload, device="cpu").predict(image, "organ_a")
    labels = sitk.GetArrayFromImage(result.labelmap)
    assert (labels == 1).sum() == 6 ** 3 and result.info["postprocessing"] == {"organ_a": "largest_component"}
    raw = Predictor(payload, device="cpu", postprocess=False).predict(image, "organ_a")
    assert (sitk.GetArrayFromImage(raw.labelmap) == 1).sum() == 6 ** 3 + 2 ** 3
    assert raw.info["postprocessing"] == {}
    # Prompts the checkpoint does not name keep every component.
    spleen = sitk.GetArrayFromImage(Predictor(payload, device="cpu").predict(image, "spleen").labelmap)
    assert (spleen == 1).sum() == 6 ** 3 + 2 ** 3
    # A group: spleen and liver come from the same dataset; with both marked, their union's largest
    # component decides (the two prompts tie everywhere: the lower value, spleen, takes the voxels).
    both = {**tiny_payload(), "postprocessing": {"spleen": "largest_component", "liver": "largest_component"}}
    predictor = Predictor(both, device="cpu")
    labels = [e for e in predictor.label_table(predictor.resolve_prompts("spleen,liver,organ_a"))]
    assert predictor.planner.postprocessing_groups(labels, both["postprocessing"]) == {1: [1, 2], 2: [1, 2]}


def two_sides() -> np.ndarray:
    """Label 1: a big blob on the left, a smaller one 30 voxels to the right, a small stray blob."""
    labels = np.zeros((12, 12, 50), dtype=np.uint8)
    labels[2:8, 2:8, 2:8] = 1  # 216 voxels
    labels[2:7, 2:7, 32:37] = 1  # 125 voxels, the other side
    labels[9:11, 9:11, 20:22] = 1  # 8 voxels between them
    return labels


def test_paired_keeps_one_component_per_side() -> None:
    out = keep_largest_components(two_sides(), {1: [1]}, {1: "paired"}, side_axis=2, side_spacing=1.0)
    assert (out == 1).sum() == 216 + 125 and out[9, 9, 20] == 0
    assert (keep_largest_components(two_sides(), {1: [1]}) == 1).sum() == 216  # the default loses a side
    # Along another axis the two blobs are not apart: one side only.
    assert (keep_largest_components(two_sides(), {1: [1]}, {1: "paired"}, side_axis=0) == 1).sum() == 216


def test_above_fraction_keeps_every_large_part() -> None:
    out = keep_largest_components(two_sides(), {1: [1]}, {1: "above_fraction:0.5"})
    assert (out == 1).sum() == 216 + 125
    out = keep_largest_components(two_sides(), {1: [1]}, {1: "above_fraction:0.01"})
    assert (out == 1).sum() == 216 + 125 + 8
    assert check_postprocessing({"liver": "above_fraction:0.3", "kidney": "paired"}, ["liver", "kidney"], "x") == {
        "liver": "above_fraction:0.3", "kidney": "paired"}
    for bad in ("above_fraction:0", "above_fraction:1.5", "above_fraction:x", "paired:1"):
        with pytest.raises(ValueError, match="unknown"):
            check_postprocessing({"liver": bad}, ["liver"], "x")
