"""Training patches from cached cases, with foreground oversampling per dataset.

:class:`PatchSampler` draws fixed-size patches from ONE dataset's memory-mapped cases; with probability
``foreground_oversample`` a patch must contain a stored voxel of a random label value of the case, so
small structures are seen often; volumes smaller than the patch are padded.
:func:`targets_for_prompts` turns label patches into one binary target per prompt. Arrays are
``(z, y, x)``; configs give ``patch_size`` as ``(x, y, z)``: convert once with :func:`patch_size_zyx`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from versemi.data.cache import CachedCase


def patch_size_zyx(patch_size_xyz: Sequence[int]) -> tuple[int, int, int]:
    """Config order ``(x, y, z)`` -> array order ``(z, y, x)``, validated."""
    size = tuple(int(s) for s in patch_size_xyz)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"patch_size must be three positive integers (x, y, z), got {patch_size_xyz!r}")
    return size[2], size[1], size[0]


@dataclass
class Patch:
    """One patch.

    Attributes:
        image: ``(1, D, H, W)`` float32.
        label: ``(D, H, W)`` uint8, or None for unlabeled cases.
        case: the case it was cut from.
        start_zyx: voxel index of the patch corner in the case (negative where padded).
        forced_foreground: whether foreground oversampling placed it.
    """

    image: np.ndarray
    label: np.ndarray | None
    case: CachedCase
    start_zyx: tuple[int, int, int]
    forced_foreground: bool = False


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def crop_with_padding(
    volume: np.ndarray, start_zyx: Sequence[int], size_zyx: Sequence[int], pad_value: float, dtype: np.dtype
) -> np.ndarray:
    """``volume[start:start+size]`` where out-of-volume voxels are ``pad_value``.

    Only the in-volume block is read, so a memory-mapped volume costs one slice read.
    """
    out = np.full(tuple(size_zyx), pad_value, dtype=dtype)
    src, dst = [], []
    for start, size, n in zip(start_zyx, size_zyx, volume.shape):
        lo, hi = max(start, 0), min(start + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out


class PatchSampler:
    """Random patches from the cases of one dataset.

    Args:
        cases: the dataset's cached cases (labeled or unlabeled).
        patch_size_zyx: patch size in array order ``(D, H, W)``.
        foreground_oversample: probability that a patch is centred near a random foreground voxel
            (ignored for cases without foreground).
        rng: generator or seed for :meth:`sample` calls that pass none.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        patch_size_zyx: Sequence[int],
        foreground_oversample: float = 0.33,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        if not cases:
            raise ValueError("PatchSampler needs at least one case")
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"foreground_oversample must be in [0, 1], got {foreground_oversample}")
        self.cases = list(cases)
        self.patch_size = tuple(int(s) for s in patch_size_zyx)
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size_zyx must be three positive integers, got {patch_size_zyx!r}")
        self.foreground_oversample = float(foreground_oversample)
        self.rng = _as_rng(rng)

    def __len__(self) -> int:
        return len(self.cases)

    def sample(self, rng: np.random.Generator | None = None) -> Patch:
        """One patch from a uniformly chosen case."""
        rng = self.rng if rng is None else rng
        case = self.cases[int(rng.integers(len(self.cases)))]
        return self.sample_from(case, rng)

    def sample_from(self, case: CachedCase, rng: np.random.Generator | None = None) -> Patch:
        """One patch from ``case`` (foreground-forced with probability ``foreground_oversample``)."""
        rng = self.rng if rng is None else rng
        shape = case.shape
        lo = [min(0, n - p) for n, p in zip(shape, self.patch_size)]
        hi = [max(0, n - p) for n, p in zip(shape, self.patch_size)]
        values = [v for v, locs in case.foreground_locations.items() if len(locs)]
        forced = bool(values) and rng.random() < self.foreground_oversample
        if forced:
            value = values[int(rng.integers(len(values)))]
            locations = case.foreground_locations[value]
            voxel = locations[int(rng.integers(len(locations)))]
            # The voxel lands anywhere inside the patch, then the patch is pushed back inside the
            # valid range (which keeps the voxel inside it).
            start = [int(v) - int(rng.integers(p)) for v, p in zip(voxel, self.patch_size)]
            start = [min(max(s, a), b) for s, a, b in zip(start, lo, hi)]
        else:
            start = [int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)]
        return self.extract(case, start, forced)

    def extract(self, case: CachedCase, start_zyx: Sequence[int], forced_foreground: bool = False) -> Patch:
        """The patch of ``case`` whose corner is ``start_zyx`` (padded where outside)."""
        start = tuple(int(s) for s in start_zyx)
        image = crop_with_padding(case.image, start, self.patch_size, case.background_value, np.float32)
        label = None
        if case.label is not None:
            label = crop_with_padding(case.label, start, self.patch_size, 0, np.uint8)
        return Patch(image[None], label, case, start, forced_foreground)  # type: ignore[arg-type]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: derives NumPy's and Python's global seeds from torch's
    per-worker seed (the trainer's StepStream seeds itself; this covers any other code that uses global
    RNGs)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def targets_for_prompts(label: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """Binary targets, one channel per prompt: ``target[:, k] = (label == values[k])``.

    Args:
        label: ``(B, D, H, W)`` integer label patches of one dataset.
        values: the dataset's label value for each supervised prompt (from
            ``label_space.prompts_for_dataset(dataset)``).

    Returns:
        ``(B, P, D, H, W)`` float32.
    """
    if not values:
        return torch.zeros((label.shape[0], 0, *label.shape[1:]), dtype=torch.float32, device=label.device)
    vals = torch.as_tensor(list(values), dtype=label.dtype, device=label.device).view(1, -1, 1, 1, 1)
    return (label.unsqueeze(1) == vals).to(torch.float32)
