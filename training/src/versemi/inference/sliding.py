"""Sliding-window inference of a prompted model: every window runs the backbone ONCE for all prompts.

The volume (already preprocessed: model spacing, normalised, ``(D, H, W)``) is covered by windows
of the training patch size with a configurable overlap; each batch of windows goes through
``model(windows, prompt_ids, geometry)`` (one backbone pass, P logit maps), is turned into probabilities with
``sigmoid`` and blended with Gaussian weights (MONAI's ``sliding_window_inference``, as nnU-Net
does), so window borders, where the network sees the least context, count least.

Optional mirroring test-time augmentation averages the probabilities of the 8 flips of each window
(all subsets of the three axes), as nnU-Net's default mirroring does; it costs 8x the time.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from versemi.network.geometry import NetworkGeometry

WindowProgress = Callable[[int, int], None]
"""Called after each batch of windows with ``(windows done, windows in total)``."""


@dataclass(frozen=True)
class SlidingWindowSettings:
    """How the volume is tiled.

    Attributes:
        patch_size_zyx: Window size ``(D, H, W)``; every entry divisible by the model's size divisor.
        overlap: Fraction of a window shared with its neighbour along each axis (0 <= overlap < 1).
        batch_size: Windows per forward pass.
        tta: Mirroring test-time augmentation (8 flips per window).
        sigma_scale: Gaussian sigma as a fraction of the window size (nnU-Net uses 1/8).
        geometry: The plan's network geometry (pooling and kernels per stage; ``None``: isotropic).
    """

    patch_size_zyx: tuple[int, int, int]
    overlap: float = 0.5
    batch_size: int = 1
    tta: bool = False
    sigma_scale: float = 0.125
    geometry: NetworkGeometry | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if len(self.patch_size_zyx) != 3 or min(self.patch_size_zyx) < 1:
            raise ValueError(f"patch size must be three positive ints (D, H, W), got {self.patch_size_zyx}")


def count_windows(shape_zyx: Sequence[int], patch_zyx: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's ``sliding_window_inference`` uses for this volume.

    Mirrors ``monai.data.utils.dense_patch_slices``: along each axis the step is
    ``int(patch * (1 - overlap))`` (at least 1), and windows start at multiples of the step until one
    reaches the end; an axis not larger than the patch (it gets padded) has one window.
    """
    total = 1
    for size, patch in zip(shape_zyx, patch_zyx):
        if size <= patch:
            continue
        step = max(int(patch * (1.0 - overlap)), 1)
        total *= math.ceil((size - patch) / step) + 1
    return total


def _mirror_sets(tta: bool) -> list[tuple[int, ...]]:
    """Spatial dims of a (B, C, D, H, W) tensor to flip: identity only, or all 8 subsets."""
    if not tta:
        return [()]
    dims = (2, 3, 4)
    return [combo for r in range(4) for combo in itertools.combinations(dims, r)]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``, or nothing (full float32) when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sliding_window_probabilities(
    model: torch.nn.Module,
    volume: np.ndarray,
    prompt_ids: Sequence[int],
    settings: SlidingWindowSettings,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    pad_value: float = 0.0,
    progress: WindowProgress | None = None,
    output_device: torch.device | None = None,
) -> torch.Tensor:
    """Foreground probabilities of each prompt over a whole preprocessed volume.

    Args:
        model: A ``PromptedSegmenter`` in eval mode on ``device``.
        volume: ``(D, H, W)`` float32, preprocessed (model spacing, normalised).
        prompt_ids: The P prompt ids, in output order.
        settings: Tiling settings.
        device: Where the model runs.
        autocast_dtype: Autocast dtype of the forward passes (None: float32). Training validation and
            ``predict`` pass the same one for the same model, so both see identical probabilities.
        pad_value: Intensity used where windows extend past a volume smaller than the patch (the
            normalised background, so padding looks like "nothing").
        progress: Called per batch of windows.
        output_device: Where the blended result accumulates (default CPU, so large volumes do not
            need GPU memory beyond the windows themselves).

    Returns:
        float32 tensor ``(P, D, H, W)`` of probabilities in ``[0, 1]`` on ``output_device``.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (D, H, W), got shape {volume.shape}")
    output_device = output_device or torch.device("cpu")
    ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)
    flips = _mirror_sets(settings.tta)
    total = count_windows(volume.shape, settings.patch_size_zyx, settings.overlap)
    done = 0

    def predict_windows(windows: torch.Tensor) -> torch.Tensor:
        nonlocal done
        windows = windows.to(device, non_blocking=True)
        probs: torch.Tensor | None = None
        for dims in flips:
            x = torch.flip(windows, dims) if dims else windows
            with autocast_context(device, autocast_dtype):
                logits = model(x, ids, settings.geometry)
            p = torch.sigmoid(logits.float())
            if dims:
                p = torch.flip(p, dims)
            probs = p if probs is None else probs.add_(p)
        assert probs is not None
        if len(flips) > 1:
            probs /= len(flips)
        done += windows.shape[0]
        if progress is not None:
            progress(min(done, total), total)
        return probs

    # Imported here: MONAI takes ~2.5 s to import, which a refused scan should not wait for.
    from monai.inferers import sliding_window_inference

    array = np.ascontiguousarray(volume, dtype=np.float32)
    if not array.flags.writeable:  # e.g. a read-only memory-mapped cache entry: torch wants its own copy
        array = array.copy()
    image = torch.from_numpy(array)[None, None]
    with torch.inference_mode():
        result = sliding_window_inference(
            image,
            roi_size=list(settings.patch_size_zyx),
            sw_batch_size=settings.batch_size,
            predictor=predict_windows,
            overlap=settings.overlap,
            mode="gaussian",
            sigma_scale=settings.sigma_scale,
            padding_mode="constant",
            cval=float(pad_value),
            sw_device=device,
            device=output_device,
        )
        result = torch.as_tensor(result)[0].clamp_(0.0, 1.0)  # MetaTensor -> plain tensor
    return result
