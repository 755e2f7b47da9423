"""Training-time augmentation: one MONAI ``Compose`` applied jointly to image and (optional) label.

Spatial transforms move image and label together (the label nearest-neighbour); intensity transforms
touch the image only. Each transform has its own probability (:func:`make_training_augmentation`):
flips on every axis; an affine (rotation, scaling) that stays in-plane for an anisotropic plan, as
nnU-Net augments such data in 2D (rotating across 10 mm slices invents anatomy); intensity scale and
shift; Gaussian noise; gamma (off by default). Inputs are channel-first dicts ``{"image", "label"}``;
:class:`versemi.training.batches.StepStream` seeds the random state per DataLoader worker.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

KEYS = ("image", "label")

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "enabled": True,
    "flip_prob": 0.5,  # per axis
    "affine_prob": 0.25,
    "rotate_deg": 15.0,
    "scale": 0.15,
    "intensity_scale_prob": 0.3,
    "intensity_scale": 0.1,
    "intensity_shift_prob": 0.3,
    "intensity_shift": 0.1,
    "noise_prob": 0.15,
    "noise_std": 0.1,
    # Gamma (contrast) as nnU-Net draws it, mean and std kept; off unless asked for.
    "gamma_prob": 0.0,
    "gamma_low": 0.7,
    "gamma_high": 1.5,
}


def augmentation_settings(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overridden by ``cfg``; unknown keys and probabilities outside [0, 1] are errors."""
    settings = dict(DEFAULT_AUGMENTATION)
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(settings)
    if unknown:
        raise ValueError(f"unknown augmentation setting(s): {sorted(unknown)}; known: {sorted(settings)}")
    settings.update(cfg)
    for name, value in settings.items():
        if name == "enabled":
            settings[name] = bool(value)
            continue
        value = float(value)
        if not math.isfinite(value) or value < 0 or (name.endswith("_prob") and value > 1):
            allowed = "in [0, 1]" if name.endswith("_prob") else ">= 0"
            raise ValueError(f"augmentation setting {name!r} must be {allowed}, got {value!r}")
        settings[name] = value
    if not 0 < settings["gamma_low"] <= settings["gamma_high"]:
        raise ValueError(f"augmentation gamma range must satisfy 0 < gamma_low <= gamma_high, got "
                         f"{settings['gamma_low']} and {settings['gamma_high']}")
    return settings


#: A plan is anisotropic when its coarsest spacing is at least this many times its finest.
ANISOTROPY_RATIO = 3.0


def slice_axis(target_spacing_xyz: Sequence[float]) -> int | None:
    """The array axis (0 = z, 1 = y, 2 = x of a ``(D, H, W)`` patch) of an anisotropic plan's thick
    slices, or ``None`` for a (nearly) isotropic one."""
    spacing = [float(s) for s in target_spacing_xyz]
    if max(spacing) < ANISOTROPY_RATIO * min(spacing):
        return None
    return 2 - spacing.index(max(spacing))


def make_training_augmentation(cfg: Mapping[str, Any] | None = None, thick_axis: int | None = None) -> Compose:
    """The joint image+label augmentation for training patches.

    Args:
        cfg: overrides of :data:`DEFAULT_AUGMENTATION` (e.g. the ``augmentation`` section of a
            training config); ``{"enabled": False}`` gives an identity transform.
        thick_axis: the patch axis of thick slices (:func:`slice_axis`): rotation only about it and
            scaling only across it (in-plane); ``None`` for isotropic data.

    Returns:
        A MONAI ``Compose`` over dicts with ``"image"`` and optionally ``"label"`` (channel-first).
    """
    s = augmentation_settings(cfg)
    if not s["enabled"]:
        return Compose([])
    rotate = math.radians(s["rotate_deg"])
    rotate_range = [rotate, rotate, rotate]
    scale_range = [s["scale"]] * 3
    if thick_axis is not None:  # in-plane only: rotate about the slice axis, do not scale along it
        rotate_range = [rotate if axis == thick_axis else 0.0 for axis in range(3)]
        scale_range[thick_axis] = 0.0
    transforms = [
        RandFlipd(keys=KEYS, prob=s["flip_prob"], spatial_axis=axis, allow_missing_keys=True) for axis in range(3)
    ]
    if s["affine_prob"] > 0:
        transforms.append(
            RandAffined(
                keys=KEYS,
                prob=s["affine_prob"],
                rotate_range=tuple(rotate_range),
                scale_range=tuple(scale_range),
                mode=("bilinear", "nearest"),
                # Border padding keeps image and label consistent at the corners rotation exposes.
                padding_mode=("border", "border"),
                allow_missing_keys=True,
            )
        )
    transforms += [
        RandScaleIntensityd(keys="image", factors=s["intensity_scale"], prob=s["intensity_scale_prob"]),
        RandShiftIntensityd(keys="image", offsets=s["intensity_shift"], prob=s["intensity_shift_prob"]),
        RandGaussianNoised(keys="image", prob=s["noise_prob"], mean=0.0, std=s["noise_std"]),
    ]
    if s["gamma_prob"] > 0:
        transforms.append(RandAdjustContrastd(keys="image", prob=s["gamma_prob"],
                                              gamma=(s["gamma_low"], s["gamma_high"]), retain_stats=True))
    return Compose(transforms)
