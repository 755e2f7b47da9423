"""Losses and CutMix: formulas, partial-label masking, shape checks."""

from __future__ import annotations

import pytest
import torch

from versemi.labels import LabelSpace
from versemi.training.cutmix import (
    Annotation,
    cross_dataset_partners,
    mix_annotations,
    paste,
    prompt_targets,
    random_cube_masks,
)
from versemi.training.losses import (
    SegmentationLossConfig,
    dice_agreement_loss,
    masked_bce_loss,
    masked_dice_loss,
    segmentation_loss,
    soft_dice_per_pair,
)


@pytest.fixture
def label_space() -> LabelSpace:
    return LabelSpace.from_dataset_labels(
        {
            "A": {"labels": {"background": 0, "organ_a": 1}},
            "B": {"labels": {"background": 0, "spleen": 1, "liver": 2}},
        }
    )


def test_soft_dice_matches_reference_formula() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand((2, 3, 4, 5, 6), generator=g)
    t = (torch.rand((2, 3, 4, 5, 6), generator=g) > 0.5).float()
    w = torch.ones((2, 3, 1, 1, 1))
    eps = 1e-5
    expected = 1 - (2 * (p * t).sum((2, 3, 4)) + eps) / ((p * p).sum((2, 3, 4)) + (t * t).sum((2, 3, 4)) + eps)
    torch.testing.assert_close(soft_dice_per_pair(p, t, w, smooth=eps, squared=True), expected)
    linear = 1 - (2 * (p * t).sum((2, 3, 4)) + 1) / (p.sum((2, 3, 4)) + t.sum((2, 3, 4)) + 1)
    torch.testing.assert_close(soft_dice_per_pair(p, t, w, smooth=1.0, squared=False), linear)


def test_unsupervised_pairs_get_exactly_zero_gradient() -> None:
    logits = torch.randn((2, 3, 4, 4, 4), requires_grad=True)
    target = (torch.rand((2, 3, 4, 4, 4)) > 0.5).float()
    weight = torch.zeros((2, 3, 1, 1, 1))
    weight[0, 0] = 1
    weight[1, 2] = 1
    segmentation_loss(logits, target, weight).backward()
    grad = logits.grad.abs().flatten(2).sum(2)
    assert grad[0, 0] > 0 and grad[1, 2] > 0
    assert grad[0, 1] == 0 and grad[0, 2] == 0 and grad[1, 0] == 0 and grad[1, 1] == 0


def test_no_supervised_pair_gives_zero_loss_with_graph() -> None:
    logits = torch.randn((1, 2, 4, 4, 4), requires_grad=True)
    loss = segmentation_loss(logits, torch.zeros_like(logits), torch.zeros((1, 2, 1, 1, 1)))
    assert float(loss.detach()) == 0.0
    loss.backward()  # still differentiable (DDP needs every parameter in the graph)


def test_bce_is_weighted_mean_over_known_voxels() -> None:
    logits = torch.zeros((1, 1, 2, 2, 2))
    target = torch.ones_like(logits)
    weight = torch.zeros_like(logits)
    weight[..., 0, 0, 0] = 1
    torch.testing.assert_close(masked_bce_loss(logits, target, weight), torch.log(torch.tensor(2.0)))


def test_shape_mismatches_raise_instead_of_broadcasting() -> None:
    logits = torch.randn((2, 1, 4, 4, 4))
    # The reference multiplied (B,1,D,H,W) masks with (B,D,H,W) maps -> silent (B,B,...) broadcast.
    with pytest.raises(ValueError, match="target shape"):
        masked_dice_loss(logits, torch.zeros((2, 4, 4, 4)), torch.ones((2, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="weight shape"):
        masked_dice_loss(logits, torch.zeros_like(logits), torch.ones((1, 1, 4, 4, 4)))
    with pytest.raises(ValueError, match="consistency maps"):
        dice_agreement_loss(torch.rand(2, 1, 4, 4, 4), torch.rand(2, 4, 4, 4))
    with pytest.raises(ValueError, match="cube mask"):
        paste(torch.ones((2, 1, 4, 4)), torch.zeros((2, 1, 4, 4, 4)), torch.zeros((2, 1, 4, 4, 4)))


def test_prompt_targets_follow_each_dataset(label_space: LabelSpace) -> None:
    labels = torch.zeros((2, 1, 4, 4, 4), dtype=torch.uint8)
    labels[0, 0, 0] = 1  # A: organ_a
    labels[1, 0, 1] = 1  # B: spleen
    labels[1, 0, 2] = 2  # B: liver
    ann = prompt_targets(labels, ["A", "B"], label_space)
    organ, spleen, liver, synthetic = (label_space.prompt_id(n) for n in ("organ_a", "spleen", "liver", "all_foreground"))
    assert ann.weight[0, :, 0, 0, 0].tolist() == [1, 0, 0, 1]
    assert ann.weight[1, :, 0, 0, 0].tolist() == [0, 1, 1, 1]
    assert ann.target[0, organ].sum() == 16 and ann.target[1, spleen].sum() == 16 and ann.target[1, liver].sum() == 16
    torch.testing.assert_close(ann.target[1, synthetic], ((labels[1, 0] == 1) | (labels[1, 0] == 2)).float())
    with pytest.raises(ValueError, match="annotates no prompt"):
        prompt_targets(labels, ["A", "C"], label_space)


def test_cutmix_targets_are_known_per_voxel(label_space: LabelSpace) -> None:
    """Cube from A (organ_a) pasted into B (spleen, liver): each prompt is known only where its
    dataset's label is; the synthetic prompt is the union of both foregrounds."""
    shape = (4, 4, 4)
    lab_a = torch.ones((1, 1, *shape), dtype=torch.uint8)  # organ_a everywhere in A
    lab_b = torch.full((1, 1, *shape), 2, dtype=torch.uint8)  # liver everywhere in B
    ann_a = prompt_targets(lab_a, ["A"], label_space)
    ann_b = prompt_targets(lab_b, ["B"], label_space)
    cube = torch.zeros((1, 1, *shape))
    cube[..., :2, :, :] = 1
    mixed = mix_annotations(cube, ann_a, ann_b)
    organ, spleen, liver, synthetic = (label_space.prompt_id(n) for n in ("organ_a", "spleen", "liver", "all_foreground"))
    inside, outside = (0, organ, 0, 0, 0), (0, organ, 3, 0, 0)
    assert mixed.weight[inside] == 1 and mixed.target[inside] == 1
    assert mixed.weight[outside] == 0  # B does not annotate organ_a
    assert mixed.weight[0, liver, 0, 0, 0] == 0 and mixed.weight[0, liver, 3, 0, 0] == 1
    assert mixed.target[0, liver, 3, 0, 0] == 1
    assert mixed.weight[0, synthetic].min() == 1 and mixed.target[0, synthetic].min() == 1  # union everywhere
    image = paste(cube, torch.ones((1, 1, *shape)), torch.zeros((1, 1, *shape)))
    assert image.sum() == cube.sum()


def test_cube_sizes_and_partners() -> None:
    g = torch.Generator().manual_seed(0)
    masks = random_cube_masks(3, (24, 24, 12), 2 / 3, g)
    assert masks.shape == (3, 1, 24, 24, 12)
    assert all(int(m.sum()) == 16 * 16 * 8 for m in masks)
    ranged = random_cube_masks(20, (20, 20, 20), (0.3, 0.6), g)
    sides = [round(float(m.sum()) ** (1 / 3)) for m in ranged]
    assert min(sides) >= 6 and max(sides) <= 12 and len(set(sides)) > 1
    partners = cross_dataset_partners(["A", "A", "B", "C"], g)
    assert all(["A", "A", "B", "C"][j] != d for j, d in zip(partners, ["A", "A", "B", "C"]))
    assert cross_dataset_partners(["A"], g) == [0]


def test_annotation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        Annotation(torch.zeros((2, 3, 4, 4, 4)), torch.zeros((2, 1, 1, 1, 1)))


def test_loss_config_defaults() -> None:
    cfg = SegmentationLossConfig()
    assert (cfg.dice_weight, cfg.ce_weight, cfg.dice_smooth, cfg.dice_squared) == (1.0, 1.0, 1.0, True)


def test_batch_dice_is_one_dice_per_prompt_over_the_supervised_images() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 4, 5, 6, requires_grad=True)
    target = (torch.rand(3, 2, 4, 5, 6) > 0.7).float()
    weight = torch.ones(3, 2, 1, 1, 1)
    weight[1, 0] = 0.0  # image 1 does not annotate prompt 0
    loss = masked_dice_loss(logits, target, weight, batch_dice=True)
    p = torch.sigmoid(logits)

    def dice(pp: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return 1 - (2 * (pp * tt).sum() + 1) / ((pp * pp).sum() + (tt * tt).sum() + 1)

    expected = (dice(p[[0, 2], 0], target[[0, 2], 0]) + dice(p[:, 1], target[:, 1])) / 2
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, masked_dice_loss(logits, target, weight))
    loss.backward()
    assert torch.count_nonzero(logits.grad[1, 0]) == 0  # unannotated pair: exactly no gradient


def test_batch_dice_with_per_voxel_cutmix_weights() -> None:
    logits = torch.zeros(2, 1, 2, 2, 2)
    target = torch.zeros(2, 1, 2, 2, 2)
    target[0, 0, 0] = 1.0
    weight = torch.zeros(2, 1, 2, 2, 2)
    weight[0, 0, 0] = 1.0  # only the known half of image 0 counts; image 1 is not annotated
    got = masked_dice_loss(logits, target, weight, batch_dice=True)
    p = torch.full((4,), 0.5)
    expected = 1 - (2 * p.sum() + 1) / ((p * p).sum() + 4 + 1)
    assert torch.allclose(got, expected)


def test_pairs_with_empty_known_target_can_skip_the_dice_term() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 3, 4, 5, requires_grad=True)
    target = torch.zeros(2, 2, 3, 4, 5)
    target[0, 0, 1, 1:3, 1:3] = 1.0  # only pair (0, 0) has foreground
    target[1, 1, 0, 0, 0] = 1.0  # pair (1, 1) has foreground, but outside its known region:
    weight = torch.ones(2, 2, 3, 4, 5)
    weight[1, 1, 0] = 0.0
    per_pair = soft_dice_per_pair(torch.sigmoid(logits), target, weight)
    skipped = masked_dice_loss(logits, target, weight, empty_pairs=False)
    assert torch.allclose(skipped, per_pair[0, 0])
    assert torch.allclose(masked_dice_loss(logits, target, weight), per_pair.mean())
    skipped.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0 and torch.count_nonzero(logits.grad[0, 1]) == 0
    config = SegmentationLossConfig(dice_on_empty=False)
    both = segmentation_loss(logits, target, weight, config)
    assert torch.allclose(both, skipped + masked_bce_loss(logits, target, weight))  # CE keeps every voxel
