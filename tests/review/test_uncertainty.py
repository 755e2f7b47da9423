"""The review score: hand-computed cases, chunked == whole, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from versemi.review.uncertainty import (
    UncertaintyAccumulator,
    UncertaintyScore,
    binary_entropy,
    uncertainty_from_prompt_probabilities,
    uncertainty_score,
)


def _box(shape=(8, 8, 8), lo=2, hi=6) -> np.ndarray:
    a = np.zeros(shape, np.float32)
    a[lo:hi, lo:hi, lo:hi] = 1.0
    return a


def test_certain_agreement_scores_zero() -> None:
    m = _box()
    r = uncertainty_score(m[None], m)
    assert (r.score, r.disagreement, r.entropy) == (0.0, 0.0, 0.0)
    assert r.support_voxels == 64


def test_both_empty_is_agreement_not_nan() -> None:
    z = np.zeros((6, 6, 6), np.float32)
    assert uncertainty_score(np.stack([z, z]), z) == UncertaintyScore(0.0, 0.0, 0.0, 0)


def test_background_noise_below_threshold_is_ignored() -> None:
    m = _box()
    noisy = np.maximum(m, 0.01)  # every background voxel at 1 %: must not dilute or add entropy
    assert uncertainty_score(noisy[None], noisy) == uncertainty_score(m[None], m)


def test_real_without_synthetic_is_full_disagreement() -> None:
    r = uncertainty_score(_box()[None], np.zeros((8, 8, 8), np.float32))
    assert r.disagreement == pytest.approx(1.0)
    assert r.entropy == 0.0
    assert r.score == pytest.approx(0.5)


def test_all_half_probabilities() -> None:
    half = np.full((4, 4, 4), 0.5, np.float32)
    r = uncertainty_score(half[None], half)
    # soft Dice = 2 * 0.25 N / (0.5 N + 0.5 N) = 0.5; entropy of 0.5 is one bit.
    assert r.disagreement == pytest.approx(0.5)
    assert r.entropy == pytest.approx(1.0)
    assert r.score == pytest.approx(0.75)


def test_one_voxel_by_hand() -> None:
    real = np.zeros((1, 3, 3, 3), np.float32)
    synthetic = np.zeros((3, 3, 3), np.float32)
    real[0, 1, 1, 1], synthetic[1, 1, 1] = 0.8, 0.6
    r = uncertainty_score(real, synthetic)

    def h(p: float) -> float:
        return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))

    assert r.disagreement == pytest.approx(1 - 2 * 0.8 * 0.6 / (0.8 + 0.6), abs=1e-6)
    assert r.entropy == pytest.approx((h(0.8) + h(0.6)) / 2, abs=1e-6)
    assert r.score == pytest.approx(0.5 * r.disagreement + 0.5 * r.entropy)
    assert r.support_voxels == 1


def test_real_prompts_are_max_aggregated() -> None:
    a, b = _box(lo=0, hi=3), _box(lo=5, hi=8)
    assert uncertainty_score(np.stack([a, b]), np.maximum(a, b)).disagreement == 0.0
    # Only one organ found by the synthetic prompt: half the foreground disagrees.
    assert uncertainty_score(np.stack([a, b]), a).disagreement == pytest.approx(1 - 2 * 27 / (54 + 27))


def test_weights_and_binary_entropy_edges() -> None:
    half = np.full((2, 2, 2), 0.5, np.float32)
    assert uncertainty_score(half[None], half, disagreement_weight=1.0, entropy_weight=0.0).score == pytest.approx(0.5)
    assert binary_entropy(np.array([0.0, 1.0, 0.5])).tolist() == pytest.approx([0.0, 0.0, 1.0])


def test_chunked_accumulation_equals_whole_volume() -> None:
    rng = np.random.default_rng(3)
    real = rng.beta(0.3, 0.3, size=(3, 20, 9, 7)).astype(np.float32)
    synthetic = rng.beta(0.3, 0.3, size=(20, 9, 7)).astype(np.float32)
    whole = uncertainty_score(real, synthetic)
    for chunk in (1, 3, 7, 20):
        acc = UncertaintyAccumulator()
        for z in range(0, 20, chunk):
            acc.update(real[:, z : z + chunk], synthetic[z : z + chunk])
        got = acc.result()
        assert acc.voxels == 20 * 9 * 7
        assert got.score == pytest.approx(whole.score, abs=1e-9)
        assert got.disagreement == pytest.approx(whole.disagreement, abs=1e-9)
        assert got.support_voxels == whole.support_voxels
    # Any partition works, not only slabs: voxels in a random order.
    order = rng.permutation(20 * 9 * 7)
    flat_r, flat_s = real.reshape(3, -1)[:, order], synthetic.reshape(-1)[order]
    acc = UncertaintyAccumulator()
    for part in np.array_split(np.arange(order.size), 5):
        acc.update(flat_r[:, part], flat_s[part])
    assert acc.result().score == pytest.approx(whole.score, abs=1e-9)


def test_torch_tensors_and_prompt_stack() -> None:
    rng = np.random.default_rng(4)
    probs = rng.random((4, 40, 5, 5)).astype(np.float32)  # prompts 0-2 real, 3 synthetic
    expected = uncertainty_score(probs[:3], probs[3])
    assert uncertainty_score(torch.from_numpy(probs[:3]), torch.from_numpy(probs[3])).score == pytest.approx(
        expected.score, abs=1e-9
    )
    got = uncertainty_from_prompt_probabilities(torch.from_numpy(probs), [0, 1, 2], 3)
    assert got.score == pytest.approx(expected.score, abs=1e-9)
    assert uncertainty_from_prompt_probabilities(probs, [0, 1, 2], 3).score == pytest.approx(expected.score, abs=1e-9)


def test_bad_inputs() -> None:
    z = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="spatial shape"):
        UncertaintyAccumulator().update(z[None], np.zeros((4, 4, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        uncertainty_score(np.full((1, 4, 4, 4), np.nan, np.float32), z)
    with pytest.raises(ValueError, match="K >= 1"):
        UncertaintyAccumulator().update(np.zeros((0, 4, 4, 4), np.float32), z)
    with pytest.raises(ValueError, match="real prompt"):
        uncertainty_from_prompt_probabilities(np.zeros((2, 4, 4, 4)), [], 1)
    with pytest.raises(ValueError, match="support_threshold"):
        UncertaintyAccumulator(support_threshold=1.5)


def test_score_round_trips_through_dict() -> None:
    r = UncertaintyScore(0.4, 0.3, 0.5, 12)
    assert UncertaintyScore.from_dict(r.to_dict()) == r


def test_model_space_hook_finds_the_synthetic_prompt() -> None:
    from versemi.inference import LabelEntry
    from versemi.review.uncertainty import model_space_uncertainty

    rng = np.random.default_rng(5)
    probs = torch.from_numpy(rng.random((3, 6, 5, 4)).astype(np.float32))
    table = [LabelEntry(1, "spleen", (1, 2, 3), None, 0), LabelEntry(2, "all_foreground", (0, 0, 0), None, 2),
             LabelEntry(3, "liver", (1, 2, 3), None, 1)]
    got = model_space_uncertainty(probs, table, {})["uncertainty"]
    expected = uncertainty_score(probs[[0, 2]], probs[1])
    assert got["score"] == pytest.approx(expected.score, abs=1e-9)
    with pytest.raises(ValueError, match="synthetic prompt"):
        model_space_uncertainty(probs[[0, 2]], [table[0], table[2]], {})
