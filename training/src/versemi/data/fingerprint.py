"""Dataset fingerprints: what a dataset's files say about its grid, field of view and intensities.

A fingerprint is what :mod:`versemi.data.plans` derives each dataset's plan from (nnU-Net's
fingerprint step): the median spacing and size of the scans, the median extent of the labeled
structures, and for CT the intensities of the labeled foreground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.intensity import IntensityProfile
from versemi.data.plan_settings import PlansError, positive_triple
from versemi.images import ImageFileError, read_image, read_image_header

if TYPE_CHECKING:
    from versemi.data.config import TrainConfig

#: Foreground voxels sampled per labeled case for the CT intensity statistics.
INTENSITY_SAMPLES_PER_CASE = 10_000
#: Scans read (evenly chosen) for a dataset's intensity profile.
PROFILE_SCANS = 20


@dataclass(frozen=True)
class IntensityStats:
    """Intensity statistics of a dataset's labeled foreground voxels (used for CT)."""

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "percentile_00_5": self.percentile_00_5,
                "percentile_99_5": self.percentile_99_5}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IntensityStats":
        return cls(float(d["mean"]), float(d["std"]), float(d["percentile_00_5"]), float(d["percentile_99_5"]))


@dataclass(frozen=True)
class DatasetFingerprint:
    """What a dataset's files say about its grid, field of view and intensities.

    Attributes:
        name: Dataset (folder) name.
        modality: ``channel_names["0"]`` or the config's override (e.g. ``"CT"``, ``"MRI"``).
        num_cases: Scans the fingerprint was taken from (labeled and unlabeled; held-out cases never).
        median_spacing: Median voxel spacing per axis, mm, (x, y, z).
        median_size: Median scan size per axis, voxels, (x, y, z).
        foreground_extent: Median extent of the labeled foreground's bounding box, mm, (x, y, z)
            (``None`` without labeled cases).
        intensity: Foreground intensity statistics of the labeled cases (``None`` unless CT).
        intensity_profile: Body-intensity percentiles of the scans (:mod:`versemi.data.intensity`);
            ``None`` in plans made before profiles existed.
    """

    name: str
    modality: str
    num_cases: int
    median_spacing: tuple[float, float, float]
    median_size: tuple[float, float, float]
    foreground_extent: tuple[float, float, float] | None = None
    intensity: IntensityStats | None = None
    intensity_profile: IntensityProfile | None = None

    @property
    def is_ct(self) -> bool:
        return self.modality.upper() == "CT"

    def median_size_at(self, spacing: Sequence[float]) -> tuple[float, float, float]:
        """The median scan's size in voxels on another grid."""
        return tuple(n * s / t for n, s, t in zip(self.median_size, self.median_spacing, spacing))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality,
            "num_cases": self.num_cases,
            "median_spacing": list(self.median_spacing),
            "median_size": list(self.median_size),
            "foreground_extent": list(self.foreground_extent) if self.foreground_extent else None,
            "intensity": self.intensity.to_dict() if self.intensity else None,
            **({"intensity_profile": self.intensity_profile.to_dict()} if self.intensity_profile else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetFingerprint":
        return cls(
            name=str(d["name"]),
            modality=str(d["modality"]),
            num_cases=int(d["num_cases"]),
            median_spacing=positive_triple(d["median_spacing"], float, "median_spacing"),
            median_size=positive_triple(d["median_size"], float, "median_size"),
            foreground_extent=positive_triple(d["foreground_extent"], float, "foreground_extent")
            if d.get("foreground_extent") else None,
            intensity=IntensityStats.from_dict(d["intensity"]) if d.get("intensity") else None,
            intensity_profile=IntensityProfile.from_dict(d["intensity_profile"]) if d.get("intensity_profile") else None,
        )


def _foreground_box_mm(label: np.ndarray, spacing_xyz: Sequence[float]) -> tuple[float, float, float] | None:
    """Extent (x, y, z) in mm of the bounding box of ``label > 0`` (array in (z, y, x) order)."""
    mask = label > 0
    if not mask.any():
        return None
    extent_zyx = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        extent_zyx.append(int(hits[-1] - hits[0] + 1))
    return tuple(float(e * s) for e, s in zip(reversed(extent_zyx), spacing_xyz))  # type: ignore[return-value]


def fingerprint_dataset(
    name: str,
    modality: str,
    image_paths: Sequence[Path],
    labeled: Sequence[tuple[Path, Path]],
    seed: int = 0,
) -> DatasetFingerprint:
    """Fingerprint a dataset from its files.

    Args:
        name: Dataset name.
        modality: Its modality (CT gets intensity statistics).
        image_paths: Every scan the plan may use (headers only are read).
        labeled: ``(image, label)`` pairs of the labeled training cases: their labels give the
            foreground extent and, for CT, the foreground intensities.
        seed: Seed of the foreground voxel sampling (deterministic plans).

    Raises:
        PlansError: no scans, or a file that cannot be read (the message names it).
    """
    if not image_paths:
        raise PlansError(f"{name}: no scans to fingerprint")
    spacings, sizes = [], []
    try:
        for path in image_paths:
            header = read_image_header(path)
            spacings.append(header.GetSpacing()[:3])
            sizes.append(header.GetSize()[:3])
        extents: list[tuple[float, float, float]] = []
        samples: list[np.ndarray] = []
        rng = np.random.default_rng(seed)
        is_ct = modality.upper() == "CT"
        for image_path, label_path in labeled:
            label_img = read_image(label_path)
            label = sitk.GetArrayViewFromImage(label_img)
            box = _foreground_box_mm(label, label_img.GetSpacing())
            if box is not None:
                extents.append(box)
            if is_ct:
                values = sitk.GetArrayFromImage(read_image(image_path))  # a copy: the image is temporary
                if values.shape != label.shape:
                    raise PlansError(f"{label_path}: label size differs from its image {image_path}")
                fg = values[label > 0]
                if fg.size:
                    take = min(fg.size, INTENSITY_SAMPLES_PER_CASE)
                    samples.append(rng.choice(fg.astype(np.float64), take, replace=False))
        picks = np.unique(np.linspace(0, len(image_paths) - 1, min(PROFILE_SCANS, len(image_paths))).astype(int))
        profile = IntensityProfile.from_scans(
            modality, [sitk.GetArrayFromImage(read_image(image_paths[i])) for i in picks])
    except ImageFileError as exc:
        raise PlansError(f"{name}: {exc}") from None
    intensity = None
    if samples:
        v = np.concatenate(samples)
        intensity = IntensityStats(
            float(v.mean()), float(v.std()), float(np.percentile(v, 0.5)), float(np.percentile(v, 99.5))
        )
    return DatasetFingerprint(
        name=name,
        modality=modality,
        num_cases=len(image_paths),
        median_spacing=tuple(float(x) for x in np.median(np.asarray(spacings, dtype=float), axis=0)),  # type: ignore[arg-type]
        median_size=tuple(float(x) for x in np.median(np.asarray(sizes, dtype=float), axis=0)),  # type: ignore[arg-type]
        foreground_extent=tuple(float(x) for x in np.median(np.asarray(extents), axis=0)) if extents else None,  # type: ignore[arg-type]
        intensity=intensity,
        intensity_profile=profile,
    )


def fingerprint_config_dataset(config: "TrainConfig", name: str) -> DatasetFingerprint:
    """The fingerprint of one dataset of a config: every non-excluded scan's header, the labeled
    training cases' labels (validation cases are left out: plans must not peek at them)."""
    d = config.dataset(name)
    train, _ = config.split_validation()
    labeled = [(c.image_path, c.label_path) for c in train if c.dataset == name and c.label_path is not None]
    images = [c.image_path for c in [*d.labeled_cases(), *d.unlabeled_cases()]]
    return fingerprint_dataset(name, d.modality, images, labeled)
