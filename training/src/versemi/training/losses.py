"""Losses for partially labeled, multi-prompt segmentation.

Every loss takes foreground LOGITS ``(B, P, D, H, W)`` and a ``weight`` broadcastable to them that says
where a target is known (0 or 1, fractional for pseudo-labels, per voxel after CutMix). An (image,
prompt) pair with zero weight everywhere gives no loss and exactly zero gradient: that is how partial
labels work. Soft Dice is averaged over the supervised pairs with ``smooth = 1``: the reference's
``1e-5`` leaves pairs whose target is empty in the patch at loss ~1 with a vanishing gradient.
Formulas: docs/TRAINING.md, "Methods and loss terms".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def check_pair_shapes(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``target`` equals and ``weight`` broadcasts to ``prediction``'s shape.

    Broadcasting is only allowed over the spatial axes of ``weight`` (size 1), never over the batch or
    prompt axes: the reference implementation silently broadcast ``(B, 1, ...)`` against ``(B, ...)``
    into ``(B, B, ...)``.
    """
    if prediction.dim() != 5:
        raise ValueError(f"expected (B, P, D, H, W) predictions, got shape {tuple(prediction.shape)}")
    if target.shape != prediction.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} differs from prediction shape {tuple(prediction.shape)}"
        )
    if weight.dim() != 5 or weight.shape[:2] != prediction.shape[:2]:
        raise ValueError(
            f"weight shape {tuple(weight.shape)} must be (B, P, 1|D, 1|H, 1|W) for predictions "
            f"{tuple(prediction.shape)}"
        )
    for w, p in zip(weight.shape[2:], prediction.shape[2:]):
        if w not in (1, p):
            raise ValueError(
                f"weight shape {tuple(weight.shape)} does not broadcast to {tuple(prediction.shape)}"
            )


def soft_dice_per_pair(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    smooth: float = 1.0,
    squared: bool = True,
) -> torch.Tensor:
    """Soft Dice LOSS of each (image, prompt) pair, shape ``(B, P)`` (formula: docs/TRAINING.md)."""
    check_pair_shapes(probabilities, target, weight)
    dims = (2, 3, 4)
    w = weight.expand_as(probabilities)
    intersection = (w * probabilities * target).sum(dims)
    if squared:
        denominator = (w * probabilities * probabilities).sum(dims) + (w * target * target).sum(dims)
    else:
        denominator = (w * probabilities).sum(dims) + (w * target).sum(dims)
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


def supervised_pairs(weight: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, P)``: which (image, prompt) pairs have any supervised voxel."""
    return weight.flatten(2).amax(dim=2) > 0


def masked_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    smooth: float = 1.0,
    squared: bool = True,
    batch_dice: bool = False,
    empty_pairs: bool = True,
) -> torch.Tensor:
    """Mean soft Dice loss over the supervised (image, prompt) pairs; 0 (with a graph) if none.

    With ``empty_pairs=False`` a pair whose known region holds no foreground gets no Dice term (its
    voxels still count in the cross-entropy): the soft Dice of an empty target is only
    ``1 - smooth / (sum p^2 + smooth)``, a false-positive penalty as strong as a whole structure's
    Dice however few voxels are known (e.g. a small pasted cube that misses a small structure).

    With ``batch_dice`` the sums run over the whole batch per prompt (nnU-Net's batch Dice): one
    Dice per prompt, so an image whose supervised region holds none of a prompt's foreground adds
    its false positives to that prompt's denominator instead of a Dice term of its own that only
    ``smooth`` keeps from being 1 (such terms push small structures towards empty predictions).
    """
    check_pair_shapes(logits, target, weight)
    if batch_dice:
        # (B, P, ...) -> (1, P, B*D, H, W): the batch becomes one big image per prompt.
        def fold(x: torch.Tensor) -> torch.Tensor:
            return x.float().expand_as(logits).transpose(0, 1).reshape(1, logits.shape[1], -1, *logits.shape[3:])

        logits, target, weight = fold(logits), fold(target), fold(weight)
    per_pair = soft_dice_per_pair(torch.sigmoid(logits.float()), target.float(), weight.float(), smooth, squared)
    selected = supervised_pairs(weight)
    if not empty_pairs:
        selected = selected & ((weight.float().expand_as(target) * target.float()).flatten(2).sum(2) > 0)
    selected = selected.to(per_pair.dtype)
    # No host sync (GPU-friendly): with no supervised pair the loss is 0 and still has a graph, so
    # DDP sees every parameter used.
    return (per_pair * selected).sum() / selected.sum().clamp_min(1.0)


def masked_bce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean binary cross-entropy (on logits) over the supervised voxels; 0 if none."""
    check_pair_shapes(logits, target, weight)
    w = weight.float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (w * bce).sum() / w.sum().clamp_min(1e-8)


@dataclass(frozen=True)
class SegmentationLossConfig:
    """Weights and form of the supervised Dice + cross-entropy loss.

    Attributes:
        dice_weight: Weight of the soft Dice term.
        ce_weight: Weight of the binary cross-entropy term.
        dice_smooth: Smoothing constant of the soft Dice.
        dice_squared: Squared (V-Net / reference) or linear denominators.
        batch_dice: One Dice per prompt over the whole batch (nnU-Net) instead of one per
            (image, prompt) pair, see :func:`masked_dice_loss`.
        dice_on_empty: Whether pairs with no foreground in their known region get a Dice term
            (``False``: cross-entropy only), see :func:`masked_dice_loss`.
    """

    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_smooth: float = 1.0
    dice_squared: bool = True
    batch_dice: bool = False
    dice_on_empty: bool = True


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    config: SegmentationLossConfig = SegmentationLossConfig(),
) -> torch.Tensor:
    """Dice + binary cross-entropy, computed ONLY where ``weight`` > 0 (partial labels)."""
    loss = logits.sum() * 0.0
    if config.dice_weight:
        loss = loss + config.dice_weight * masked_dice_loss(
            logits, target, weight, config.dice_smooth, config.dice_squared, config.batch_dice,
            config.dice_on_empty,
        )
    if config.ce_weight:
        loss = loss + config.ce_weight * masked_bce_loss(logits, target, weight)
    return loss


def dice_agreement_loss(
    prediction: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, squared: bool = True
) -> torch.Tensor:
    """1 - soft Dice between two probability maps of the same shape ``(B, D, H, W)``, mean over images.

    Used for the VerSemi consistency between the aggregated real-prompt probabilities and the synthetic
    prompt's probability. Which side (if any) is detached is the caller's decision.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"consistency maps must both be (B, D, H, W); got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    p = prediction.float().unsqueeze(1)
    t = target.float().unsqueeze(1)
    ones = torch.ones((p.shape[0], 1, 1, 1, 1), device=p.device, dtype=p.dtype)
    return soft_dice_per_pair(p, t, ones, smooth, squared).mean()


def probability_mse_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's sigmoid probabilities and (detached) teacher ones."""
    if student_logits.shape != teacher_probabilities.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_probabilities.shape)} "
            "shapes differ"
        )
    return F.mse_loss(torch.sigmoid(student_logits.float()), teacher_probabilities.float().detach())
