"""Intensity profiles of a dataset's scans, to recognise a scan that is far from them.

A prompt trained on T1 MRI gives confident nonsense on a CT or on a contrast it never saw. A dataset's
profile is the spread over its scans of a few percentiles of each scan's body intensities (z-scored
for MR, Hounsfield units for CT); a scan outside it is "far" (:meth:`IntensityProfile.distance_note`).
Profiles are part of the dataset fingerprint, so every checkpoint's plans carry them; plans without
one give no intensity warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

#: Percentiles of one scan's body intensities that make up its profile.
PROFILE_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
#: Body voxels sampled per scan (evenly strided) for a profile.
PROFILE_SAMPLES = 200_000
#: CT voxels above this (HU) are body (the CT body mask of the preprocessing).
CT_BODY_HU = -500.0


def is_ct(modality: str) -> bool:
    """Whether a modality name means CT (anything else is MR-like)."""
    return str(modality).strip().upper() == "CT"


def scan_percentiles(values: np.ndarray, modality: str) -> np.ndarray:
    """The :data:`PROFILE_PERCENTILES` of one scan's body voxels: HU for CT, z-scores for MR."""
    flat = np.asarray(values).ravel()
    if flat.size > PROFILE_SAMPLES:
        flat = flat[:: flat.size // PROFILE_SAMPLES]
    flat = flat.astype(np.float64)
    body = flat[flat > CT_BODY_HU] if is_ct(modality) else flat[flat != 0]
    if body.size == 0:
        body = flat
    if not is_ct(modality):
        std = body.std()
        body = (body - body.mean()) / (std if std > 1e-8 else 1.0)
    return np.percentile(body, PROFILE_PERCENTILES)


@dataclass(frozen=True)
class IntensityProfile:
    """The body-intensity percentiles of a dataset's scans (see the module docstring).

    Attributes:
        modality: The dataset's modality (CT: HU; otherwise z-scores).
        low: Per percentile, the 10th percentile over the scans.
        median: Per percentile, the median over the scans.
        high: Per percentile, the 90th percentile over the scans.
        num_scans: Scans the profile was taken from.
    """

    modality: str
    low: tuple[float, ...]
    median: tuple[float, ...]
    high: tuple[float, ...]
    num_scans: int

    @classmethod
    def from_scans(cls, modality: str, scans: Sequence[np.ndarray]) -> "IntensityProfile":
        """The profile of a dataset from its scans' arrays."""
        table = np.asarray([scan_percentiles(s, modality) for s in scans])
        q = np.percentile(table, [10, 50, 90], axis=0)
        return cls(modality, *(tuple(float(v) for v in row) for row in q), num_scans=len(scans))  # type: ignore[misc]

    def tolerance(self) -> np.ndarray:
        """How far outside ``[low, high]`` a scan's percentile may be: the spread itself, at least
        0.5 (z-score) or 100 HU."""
        floor = 100.0 if is_ct(self.modality) else 0.5
        return np.maximum(np.asarray(self.high) - np.asarray(self.low), floor)

    def distance_note(self, values: np.ndarray) -> str | None:
        """None when a scan's body intensities fit the profile, else a short phrase saying which
        percentile is how far off."""
        scan = scan_percentiles(values, self.modality)
        low, high, tol = np.asarray(self.low), np.asarray(self.high), self.tolerance()
        excess = np.maximum(low - tol - scan, scan - high - tol)
        worst = int(np.argmax(excess))
        if excess[worst] <= 0:
            return None
        unit = " HU" if is_ct(self.modality) else " (z-score)"
        return (f"its {PROFILE_PERCENTILES[worst]:g}th body-intensity percentile is {scan[worst]:.2f}{unit}, "
                f"the training scans' lie in [{low[worst]:.2f}, {high[worst]:.2f}]")

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality, "percentiles": list(PROFILE_PERCENTILES), "low": list(self.low),
                "median": list(self.median), "high": list(self.high), "num_scans": self.num_scans}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IntensityProfile":
        if [float(p) for p in d.get("percentiles", PROFILE_PERCENTILES)] != list(PROFILE_PERCENTILES):
            raise ValueError(f"intensity profile percentiles {d.get('percentiles')} are not {list(PROFILE_PERCENTILES)}")
        return cls(str(d["modality"]), tuple(float(v) for v in d["low"]), tuple(float(v) for v in d["median"]),
                   tuple(float(v) for v in d["high"]), int(d["num_scans"]))


__all__ = ["CT_BODY_HU", "IntensityProfile", "PROFILE_PERCENTILES", "is_ct", "scan_percentiles"]
