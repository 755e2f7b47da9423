"""Training-time data augmentation: one MONAI ``Compose`` applied jointly to image and label.

Inputs are dicts ``{"image": (1, D, H, W) float32, "label": (1, D, H, W) integer}`` (channel-first, as
MONAI expects); ``"label"`` may be absent (unlabeled scans). Spatial transforms move image and label
together - the label with nearest-neighbour interpolation so values stay integer label values -
and intensity transforms touch the image only.

The transforms (each with its own probability, all configurable by :func:`make_training_augmentation`):

* random flip along each of the three axes;
* random affine: rotation up to ``rotate_deg`` degrees about every axis and isotropic-per-axis
  scaling by ``1 +- scale`` (one resampling for both, border padding);
* random intensity scaling ``x * (1 + f)``, ``f`` in ``+-intensity_scale``;
* random intensity shift ``x + o``, ``o`` in ``+-intensity_shift`` (images are normalised, so the
  units are standard deviations for MR and window fractions for CT);
* additive Gaussian noise with standard deviation up to ``noise_std``.

Determinism: ``transform.set_random_state(seed=...)`` makes the sequence reproducible;
:class:`versemi.data.sampling.PatchStream` does this per DataLoader worker.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from monai.transforms import (
    Compose,
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
    return settings


def make_training_augmentation(cfg: Mapping[str, Any] | None = None) -> Compose:
    """The joint image+label augmentation for training patches.

    Args:
        cfg: overrides of :data:`DEFAULT_AUGMENTATION` (e.g. the ``augmentation`` section of a
            training config); ``{"enabled": False}`` gives an identity transform.

    Returns:
        A MONAI ``Compose`` over dicts with ``"image"`` and optionally ``"label"`` (channel-first).
    """
    s = augmentation_settings(cfg)
    if not s["enabled"]:
        return Compose([])
    rotate = math.radians(s["rotate_deg"])
    transforms = [
        RandFlipd(keys=KEYS, prob=s["flip_prob"], spatial_axis=axis, allow_missing_keys=True) for axis in range(3)
    ]
    if s["affine_prob"] > 0:
        transforms.append(
            RandAffined(
                keys=KEYS,
                prob=s["affine_prob"],
                rotate_range=(rotate, rotate, rotate),
                scale_range=(s["scale"], s["scale"], s["scale"]),
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
    return Compose(transforms)
