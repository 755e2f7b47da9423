"""Cross-dataset CutMix with per-voxel "where is the target known" bookkeeping.

An :class:`Annotation` holds a batch's target per prompt, ``(B, P, D, H, W)``, and a ``weight`` saying
where each is known. A cube mask ``c`` (1: from image A, 0: from image B) mixes all three alike::

    image  = c * image_A + (1 - c) * image_B
    target = c * target_A[k] + (1 - c) * target_B[k]
    weight = c * weight_A[k] + (1 - c) * weight_B[k]

So a prompt is supervised only where its source dataset annotates it, and the synthetic prompt's
target is the union of every known foreground. A labeled cube in an unlabeled image (weight 0) is the
stage-2 "pasted cube" loss, same formula. docs/TRAINING.md, "Methods and loss terms".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from versemi.labels import LabelSpace


@dataclass
class Annotation:
    """Targets and supervision weights of a batch, one channel per prompt of the label space.

    Attributes:
        target: ``(B, P, D, H, W)`` float, 0/1 (or soft pseudo-labels).
        weight: ``(B, P, 1|D, 1|H, 1|W)`` float, where each target is known (0 = no loss).
    """

    target: torch.Tensor
    weight: torch.Tensor

    def __post_init__(self) -> None:
        if self.target.dim() != 5 or self.weight.dim() != 5 or self.weight.shape[:2] != self.target.shape[:2]:
            raise ValueError(
                f"annotation target {tuple(self.target.shape)} / weight {tuple(self.weight.shape)} "
                "must be (B, P, D, H, W) / (B, P, 1|D, 1|H, 1|W)"
            )

    def select(self, prompt_ids: Sequence[int]) -> "Annotation":
        """The channels of the given prompts."""
        index = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=self.target.device)
        return Annotation(self.target.index_select(1, index), self.weight.index_select(1, index))

    def to(self, device: torch.device | str) -> "Annotation":
        return Annotation(self.target.to(device, non_blocking=True), self.weight.to(device, non_blocking=True))


def prompt_targets(
    labels: torch.Tensor, datasets: Sequence[str], label_space: LabelSpace
) -> Annotation:
    """Targets per prompt from raw label maps of labeled images.

    Args:
        labels: ``(B, 1, D, H, W)`` or ``(B, D, H, W)`` integer label values of each image's dataset.
        datasets: the dataset name of each image (``len == B``).
        label_space: the label space; targets follow ``label_space.prompts_for_dataset``.

    Returns:
        Annotation with a channel per prompt: prompt ``k`` of dataset ``d`` has target ``label == value``
        and weight 1; prompts ``d`` does not annotate have weight 0; the synthetic prompt (if any) has
        the union of ``d``'s targets and weight 1.
    """
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"expected one label channel, got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 4 or labels.shape[0] != len(datasets):
        raise ValueError(
            f"labels {tuple(labels.shape)} must be (B, D, H, W) with B = {len(datasets)} datasets"
        )
    batch, num_prompts = labels.shape[0], len(label_space)
    target = torch.zeros((batch, num_prompts, *labels.shape[1:]), dtype=torch.float32, device=labels.device)
    weight = torch.zeros((batch, num_prompts, 1, 1, 1), dtype=torch.float32, device=labels.device)
    synthetic = label_space.synthetic_id
    for b, dataset in enumerate(datasets):
        pairs = label_space.prompts_for_dataset(dataset)
        if not pairs:
            raise ValueError(f"dataset {dataset!r} annotates no prompt of the label space")
        for prompt_id, value in pairs:
            # Several label values may map to one prompt (merged names): accumulate with max.
            target[b, prompt_id] = torch.maximum(target[b, prompt_id], (labels[b] == value).float())
            weight[b, prompt_id] = 1.0
        if synthetic is not None:
            ids = [p for p, _ in pairs]
            target[b, synthetic] = target[b, ids].amax(dim=0)
            weight[b, synthetic] = 1.0
    return Annotation(target, weight)


def unlabeled_annotation(
    batch: int, num_prompts: int, spatial_shape: Sequence[int], device: torch.device | str = "cpu"
) -> Annotation:
    """An all-unknown annotation (weight 0) for unlabeled images."""
    target = torch.zeros((batch, num_prompts, *spatial_shape), dtype=torch.float32, device=device)
    weight = torch.zeros((batch, num_prompts, 1, 1, 1), dtype=torch.float32, device=device)
    return Annotation(target, weight)


def random_cube_masks(
    batch: int,
    spatial_shape: Sequence[int],
    ratio: float | tuple[float, float],
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One random box per image, side ``ratio * size`` along each axis, as a ``(B, 1, D, H, W)`` mask.

    Args:
        batch: Number of masks.
        spatial_shape: Patch size ``(D, H, W)``.
        ratio: Fixed side ratio (2/3 in VerSemi stage 1) or a ``(low, high)`` range sampled uniformly
            per image (``(0.3, 0.6)`` in stage 2).
        generator: CPU generator (reproducible, checkpointed).
        device: Device of the returned mask.
    """
    masks = torch.zeros((batch, 1, *spatial_shape), dtype=torch.float32)
    for b in range(batch):
        if isinstance(ratio, (tuple, list)):
            low, high = float(ratio[0]), float(ratio[1])
            r = low + (high - low) * float(torch.rand((), generator=generator))
        else:
            r = float(ratio)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"CutMix ratio must be in (0, 1], got {r}")
        slices = []
        for size in spatial_shape:
            side = max(1, min(size, int(round(r * size))))
            start = int(torch.randint(0, size - side + 1, (), generator=generator))
            slices.append(slice(start, start + side))
        masks[(b, 0, *slices)] = 1.0
    return masks.to(device)


def paste(cube: torch.Tensor, inside: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """``cube * inside + (1 - cube) * outside`` with ``cube`` ``(B, 1, D, H, W)``; shapes checked."""
    if inside.shape != outside.shape:
        raise ValueError(f"cannot mix shapes {tuple(inside.shape)} and {tuple(outside.shape)}")
    if cube.dim() != 5 or cube.shape[1] != 1 or cube.shape[0] != inside.shape[0]:
        raise ValueError(f"cube mask {tuple(cube.shape)} must be (B, 1, D, H, W) for {tuple(inside.shape)}")
    if inside.dim() != 5 or cube.shape[2:] != inside.shape[2:]:
        raise ValueError(f"cube mask {tuple(cube.shape)} does not match {tuple(inside.shape)}")
    cube = cube.to(inside.dtype)
    return cube * inside + (1.0 - cube) * outside


def mix_annotations(cube: torch.Tensor, inside: Annotation, outside: Annotation) -> Annotation:
    """Targets and per-voxel weights of a mixed image (see the module docstring)."""
    spatial = inside.target.shape
    inside_w = inside.weight.expand(spatial)
    outside_w = outside.weight.expand(spatial)
    # A (B, 1, D, H, W) cube broadcasts over the prompt axis only; paste() checks the rest.
    return Annotation(
        paste(cube, inside.target, outside.target),
        paste(cube, inside_w, outside_w),
    )


def cross_dataset_partners(datasets: Sequence[str], generator: torch.Generator) -> list[int]:
    """For each image, the index of a partner image from ANOTHER dataset (random among them).

    When every image of the batch comes from one dataset, partners are random other images of it
    (a same-dataset CutMix still teaches the synthetic task the union of foregrounds); a batch of one
    image is paired with itself.
    """
    n = len(datasets)
    partners = []
    for i, dataset in enumerate(datasets):
        others = [j for j in range(n) if datasets[j] != dataset]
        if not others:
            others = [j for j in range(n) if j != i] or [i]
        partners.append(others[int(torch.randint(0, len(others), (), generator=generator))])
    return partners
