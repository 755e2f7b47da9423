"""Patch sampling, foreground oversampling and augmentation (the trainer's step stream: tests/training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from versemi.data.augmentation import make_training_augmentation
from versemi.data.cache import CachedCase
from versemi.data.sampling import (
    PatchSampler,
    crop_with_padding,
    patch_size_zyx,
    targets_for_prompts,
)


def _case(tmp_path: Path, image: np.ndarray, label: np.ndarray | None, name: str = "c") -> CachedCase:
    """A CachedCase over hand-made arrays (no preprocessing needed)."""
    image_file = tmp_path / f"{name}-image.npy"
    np.save(image_file, image.astype(np.float32))
    label_file = None
    locations: dict[int, np.ndarray] = {}
    if label is not None:
        label_file = tmp_path / f"{name}-label.npy"
        np.save(label_file, label.astype(np.uint8))
        locations = {int(v): np.argwhere(label == v).astype(np.int32) for v in np.unique(label) if v}
    record = {"shape_zyx": list(image.shape), "background_value": -1.0}
    counts = {v: len(loc) for v, loc in locations.items()}
    return CachedCase(name, record, image_file, label_file, locations, counts, key="k")


def test_patch_size_conversion():
    assert patch_size_zyx([64, 48, 32]) == (32, 48, 64)
    with pytest.raises(ValueError):
        patch_size_zyx([64, 0, 32])


def test_crop_with_padding_reads_inside_and_pads_outside():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    out = crop_with_padding(vol, (-1, 2, 3), (3, 4, 4), -9.0, np.float32)
    assert out.shape == (3, 4, 4)
    assert np.all(out[0] == -9) and np.all(out[:, 3:] == -9) and np.all(out[:, :, 3:] == -9)
    np.testing.assert_array_equal(out[1:, :3, :3], vol[0:2, 2:5, 3:6])


def test_foreground_oversampling_finds_a_tiny_structure(tmp_path):
    label = np.zeros((40, 40, 40), np.uint8)
    label[30:32, 5:7, 33:35] = 3  # 8 voxels out of 64000
    image = np.random.default_rng(0).normal(size=label.shape)
    case = _case(tmp_path, image, label)
    sampler = PatchSampler([case], (8, 8, 8), foreground_oversample=1.0, rng=0)
    for _ in range(30):
        patch = sampler.sample()
        assert patch.image.shape == (1, 8, 8, 8) and patch.image.dtype == np.float32
        assert patch.forced_foreground and (patch.label == 3).any()
        # The patch content is the volume at the reported corner.
        z, y, x = patch.start_zyx
        np.testing.assert_array_equal(patch.label, label[z : z + 8, y : y + 8, x : x + 8])
    # Without oversampling, random patches almost never see it.
    uniform = PatchSampler([case], (8, 8, 8), foreground_oversample=0.0, rng=0)
    hits = sum(bool((uniform.sample().label == 3).any()) for _ in range(100))
    assert hits < 20


def test_small_volume_is_padded(tmp_path):
    image = np.ones((3, 10, 5), np.float32)
    label = np.ones((3, 10, 5), np.uint8)
    sampler = PatchSampler([_case(tmp_path, image, label)], (6, 8, 8), foreground_oversample=0.5, rng=1)
    for _ in range(10):
        patch = sampler.sample()
        assert patch.image.shape == (1, 6, 8, 8) and patch.label.shape == (6, 8, 8)
        assert (patch.image == 1).sum() == (patch.label == 1).sum()
        assert (patch.image == -1).sum() == patch.label.size - (patch.label == 1).sum()  # background_value
        assert (patch.label == 1).sum() == 3 * 8 * 5  # whole z and x extents, 8 of 10 rows in y


def test_unlabeled_case_gives_no_label(tmp_path):
    sampler = PatchSampler([_case(tmp_path, np.zeros((8, 8, 8)), None)], (4, 4, 4), rng=0)
    patch = sampler.sample()
    assert patch.label is None and not patch.forced_foreground


def test_augmentation_is_joint_nearest_and_deterministic():
    rng = np.random.default_rng(0)
    label = np.zeros((1, 16, 16, 16), np.float32)
    label[0, 4:12, 5:11, 3:9] = 2
    data = {"image": torch.from_numpy(label * 10 + rng.normal(size=label.shape).astype(np.float32) * 0.01),
            "label": torch.from_numpy(label)}
    cfg = {"flip_prob": 0.5, "affine_prob": 1.0, "noise_prob": 0.0, "intensity_scale_prob": 0.0,
           "intensity_shift_prob": 0.0}
    a = make_training_augmentation(cfg).set_random_state(seed=7)(dict(data))
    b = make_training_augmentation(cfg).set_random_state(seed=7)(dict(data))
    np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    c = make_training_augmentation(cfg).set_random_state(seed=8)(dict(data))
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(c["image"]))
    out_label = np.asarray(a["label"])
    assert set(np.unique(out_label)) <= {0.0, 2.0}  # nearest: no blended label values
    # Image and label moved together: the bright region is where the label is.
    img = np.asarray(a["image"])
    assert img[out_label == 2].mean() > 8 and img[out_label == 0].mean() < 2
    # Unlabeled dicts work too.
    only_image = make_training_augmentation(None)({"image": data["image"]})
    assert tuple(only_image["image"].shape) == (1, 16, 16, 16)
    with pytest.raises(ValueError, match="unknown augmentation"):
        make_training_augmentation({"flipprob": 0.5})
    with pytest.raises(ValueError, match="flip_prob"):
        make_training_augmentation({"flip_prob": 1.5})


def test_gamma_augmentation_changes_contrast_keeps_stats_and_label():
    rng = np.random.default_rng(1)
    label = torch.zeros((1, 8, 8, 8))
    label[0, 2:6, 2:6, 2:6] = 1
    image = torch.from_numpy(rng.normal(size=(1, 8, 8, 8)).astype(np.float32))
    off = {"flip_prob": 0.0, "affine_prob": 0.0, "noise_prob": 0.0, "intensity_scale_prob": 0.0,
           "intensity_shift_prob": 0.0}
    unchanged = make_training_augmentation(off)({"image": image.clone(), "label": label})
    torch.testing.assert_close(torch.as_tensor(unchanged["image"]), image)  # off by default
    out = make_training_augmentation({**off, "gamma_prob": 1.0, "gamma_low": 2.0, "gamma_high": 2.0})(
        {"image": image.clone(), "label": label})
    new = torch.as_tensor(out["image"])
    assert not torch.allclose(new, image)
    assert abs(float(new.mean() - image.mean())) < 1e-4 and abs(float(new.std() - image.std())) < 1e-3
    torch.testing.assert_close(torch.as_tensor(out["label"]), label)
    with pytest.raises(ValueError, match="gamma_low <= gamma_high"):
        make_training_augmentation({"gamma_low": 1.5, "gamma_high": 0.7})


def test_targets_for_prompts():
    label = torch.tensor([[[[0, 1, 2, 3]]]], dtype=torch.uint8)  # (B=1, D=1, H=1, W=4)
    t = targets_for_prompts(label, [2, 3])
    assert t.shape == (1, 2, 1, 1, 4)
    assert t[0, :, 0, 0].tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert targets_for_prompts(label, []).shape == (1, 0, 1, 1, 4)


