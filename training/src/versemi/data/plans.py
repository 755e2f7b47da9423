"""Plans: how each dataset's scans must look for the network (nnU-Net's fingerprint -> plans, per dataset).

Datasets differ in grid and field of view (1 mm hippocampus crops, 1.5 x 1.5 x 10 mm cine MRI, ...);
one shared grid would waste the budget on fine grids or destroy thin slices, so every dataset gets its
own plan from its fingerprint (:mod:`versemi.data.fingerprint`): target spacing (the median, kept
anisotropic), intensity normalisation by modality, patch size within ``patch_voxels``, and the
network geometry (which axes pool where). The rules are in docs/TRAINING.md ("Plans").

:class:`Plans` is typed and versioned: written into every checkpoint, read by ``versemi predict``,
printed by ``versemi plan CONFIG``. Spacings and patch sizes are ``(x, y, z)``, as SimpleITK orders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from versemi.data.fingerprint import DatasetFingerprint, fingerprint_config_dataset
from versemi.data.plan_settings import (
    DEFAULT_PATCH_VOXELS,
    NETWORK_GEOMETRIES,
    OVERRIDE_KEYS,
    PlansError,
    positive_triple,
)
from versemi.data.preprocessing import NORMALIZATIONS, PreprocessingSpec, default_normalization
from versemi.network.geometry import NetworkGeometry, plan_geometry

if TYPE_CHECKING:
    from versemi.data.config import TrainConfig

PLANS_FORMAT = "versemi-plans"
PLANS_VERSION = 2
#: Plans versions this versemi reads (1: before per-plan network geometries; read as isotropic).
READABLE_PLANS_VERSIONS = (1, 2)

#: A median scan may hold at most this many patches on its target grid; beyond, the finest axes are
#: coarsened (nnU-Net plans a low-resolution configuration past a similar ratio).
LOWRES_RATIO = 4.0
#: Coarsened spacings are rounded to this step (mm), so plans read well and stay stable.
SPACING_STEP = 0.05


@dataclass(frozen=True)
class DatasetPlan:
    """How one dataset's scans are preprocessed and cut into patches.

    Attributes:
        dataset: Dataset name.
        spec: The preprocessing (target spacing, modality, normalisation): what ``predict`` applies to
            any scan segmented with this dataset's prompts.
        patch_size: Training patch and inference window, voxels, (x, y, z).
        fingerprint: What the plan was derived from (``None`` when every value was overridden).
        overridden: The plan keys set by the config instead of derived.
        network: Per-stage pooling and kernels of the network for this dataset
            (:mod:`versemi.network.geometry`); ``None``: isotropic (plans made before geometries).
    """

    dataset: str
    spec: PreprocessingSpec
    patch_size: tuple[int, int, int]
    fingerprint: DatasetFingerprint | None = None
    overridden: tuple[str, ...] = ()
    network: NetworkGeometry | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", positive_triple(self.patch_size, int, f"{self.dataset}: patch_size"))
        object.__setattr__(self, "overridden", tuple(self.overridden))

    @property
    def target_spacing(self) -> tuple[float, float, float]:
        return self.spec.target_spacing

    @property
    def patch_size_zyx(self) -> tuple[int, int, int]:
        """The patch in array order ``(D, H, W)``."""
        x, y, z = self.patch_size
        return z, y, x

    def covers_foreground(self) -> bool | None:
        """Whether the patch spans the median labeled structure (``None`` when unknown)."""
        if self.fingerprint is None or self.fingerprint.foreground_extent is None:
            return None
        span = [p * s for p, s in zip(self.patch_size, self.target_spacing)]
        return all(a >= b for a, b in zip(span, self.fingerprint.foreground_extent))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "preprocessing": self.spec.to_dict(),
            "patch_size": list(self.patch_size),
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
            "overridden": list(self.overridden),
            "network": self.network.to_dict() if self.network else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetPlan":
        try:
            return cls(
                dataset=str(d["dataset"]),
                spec=PreprocessingSpec.from_dict(d["preprocessing"]),
                patch_size=tuple(d["patch_size"]),  # type: ignore[arg-type]
                fingerprint=DatasetFingerprint.from_dict(d["fingerprint"]) if d.get("fingerprint") else None,
                overridden=tuple(d.get("overridden") or ()),
                network=NetworkGeometry.from_dict(d["network"]) if d.get("network") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlansError(f"dataset plan {d.get('dataset', '?')!r}: {exc}") from None


@dataclass(frozen=True)
class Plans:
    """The plans of every training dataset of one model.

    Attributes:
        datasets: Dataset name -> plan, in config order (the first is the default for inputs that
            name no dataset, e.g. the synthetic prompt alone).
        aliases: Extra sources (unlabeled folders, review folders) -> the dataset whose plan they use.
        size_divisor: Every patch axis is a multiple of this (the network's ``2**(depth - 1)``).
        patch_voxels: The patch budget the plans were made for.
        version: Plans format version.
    """

    datasets: dict[str, DatasetPlan]
    aliases: dict[str, str] = field(default_factory=dict)
    size_divisor: int = 1
    patch_voxels: int = DEFAULT_PATCH_VOXELS
    version: int = PLANS_VERSION

    def __post_init__(self) -> None:
        if not self.datasets:
            raise PlansError("plans need at least one dataset")
        for name, target in self.aliases.items():
            if target not in self.datasets:
                raise PlansError(f"source {name!r} uses the plan of {target!r}, which is not a planned dataset")
        for plan in self.datasets.values():
            # The global divisor, not the geometry's: a geometry pools an axis only while it stays even.
            if any(p % self.size_divisor for p in plan.patch_size):
                raise PlansError(
                    f"{plan.dataset}: patch size {list(plan.patch_size)} (x, y, z) is not a multiple of the "
                    f"network's size divisor {self.size_divisor} along every axis"
                )

    @property
    def default_dataset(self) -> str:
        return next(iter(self.datasets))

    def plan_for(self, source: str) -> DatasetPlan:
        """The plan of a dataset, unlabeled folder or review folder.

        Raises:
            PlansError: an unknown source.
        """
        name = self.aliases.get(source, source)
        if name not in self.datasets:
            known = ", ".join([*self.datasets, *self.aliases])
            raise PlansError(f"no plan for {source!r}; planned: {known}")
        return self.datasets[name]

    def spec_for(self, source: str) -> PreprocessingSpec:
        return self.plan_for(source).spec

    @property
    def sources(self) -> list[str]:
        """Every planned name: the datasets, then the aliases."""
        return [*self.datasets, *self.aliases]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLANS_FORMAT,
            "version": self.version,
            "size_divisor": self.size_divisor,
            "patch_voxels": self.patch_voxels,
            "datasets": {name: plan.to_dict() for name, plan in self.datasets.items()},
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plans":
        """Read :meth:`to_dict` output (e.g. from a checkpoint).

        Raises:
            PlansError: not a plans object, an unknown version, or an invalid entry.
        """
        if not isinstance(d, Mapping) or d.get("format") != PLANS_FORMAT:
            raise PlansError(f"not a VerSemi plans object (no '{PLANS_FORMAT}' format marker)")
        if d.get("version") not in READABLE_PLANS_VERSIONS:
            raise PlansError(f"plans version {d.get('version')} is not supported (this versemi reads "
                             f"{', '.join(map(str, READABLE_PLANS_VERSIONS))})")
        datasets = d.get("datasets")
        if not isinstance(datasets, Mapping) or not datasets:
            raise PlansError("plans hold no dataset")
        return cls(
            datasets={str(k): DatasetPlan.from_dict(v) for k, v in datasets.items()},
            aliases={str(k): str(v) for k, v in (d.get("aliases") or {}).items()},
            size_divisor=int(d.get("size_divisor", 1)),
            patch_voxels=int(d.get("patch_voxels", DEFAULT_PATCH_VOXELS)),
        )

    @classmethod
    def single(
        cls,
        spec: PreprocessingSpec,
        patch_size: Sequence[int],
        datasets: Sequence[str],
        size_divisor: int = 1,
    ) -> "Plans":
        """Plans where every dataset shares one preprocessing and patch (tests, simple models)."""
        if not datasets:
            raise PlansError("plans need at least one dataset")
        return cls(
            datasets={name: DatasetPlan(name, spec, tuple(patch_size)) for name in datasets},  # type: ignore[arg-type]
            size_divisor=size_divisor,
        )


def _box_voxels(extent_mm: Sequence[float], spacing: Sequence[float], size_divisor: int) -> int:
    """Voxels of the divisor-rounded box spanning ``extent_mm`` on a grid of ``spacing``."""
    d = int(size_divisor)
    return int(np.prod([max(d, math.ceil(e / s / d - 1e-9) * d) for e, s in zip(extent_mm, spacing)]))


def plan_target_spacing(
    fingerprint: DatasetFingerprint, patch_voxels: int, size_divisor: int = 1
) -> tuple[float, float, float]:
    """The median spacing, its finest axes coarsened as little as the budget needs (module docstring)."""
    spacing = np.asarray(fingerprint.median_spacing, dtype=float)
    size = np.asarray(fingerprint.median_size, dtype=float)
    extent = fingerprint.foreground_extent

    def grid(threshold: float) -> np.ndarray:
        return np.maximum(spacing, threshold)

    def fits(threshold: float) -> bool:
        g = grid(threshold)
        if float(np.prod(size * spacing / g)) > LOWRES_RATIO * patch_voxels:
            return False
        return extent is None or _box_voxels(extent, g, size_divisor) <= patch_voxels

    if fits(0.0):
        return tuple(float(s) for s in spacing)  # type: ignore[return-value]
    lo, hi = float(spacing.min()), float(spacing.max())
    while not fits(hi):  # even isotropic at the coarsest axis is too fine: coarsen every axis
        hi *= 1.25
    for _ in range(60):  # bisection on the threshold spacing
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if not fits(mid) else (lo, mid)
    threshold = math.ceil(hi / SPACING_STEP - 1e-6) * SPACING_STEP
    while not fits(threshold):
        threshold += SPACING_STEP
    return tuple(float(round(max(s, threshold), 4)) for s in spacing)  # type: ignore[return-value]


def plan_patch_size(
    median_size: Sequence[float], spacing: Sequence[float], patch_voxels: int, size_divisor: int
) -> tuple[int, int, int]:
    """The median shape rounded up to the divisor, shrunk axis by axis (longest in mm first) until it
    fits ``patch_voxels`` (see the module docstring)."""
    d = int(size_divisor)
    median = np.maximum(np.asarray(median_size, dtype=float), 1.0)
    spacing_arr = np.asarray(spacing, dtype=float)
    patch = np.maximum(d, np.ceil(median / d) * d).astype(int)
    while int(np.prod(patch)) > patch_voxels:
        shrinkable = patch > d
        if not shrinkable.any():
            break
        extent = np.where(shrinkable, np.round(patch * spacing_arr, 6), -np.inf)
        ratio = np.where(shrinkable, patch / median, -np.inf)
        axis = int(np.lexsort((-ratio, -extent))[0])  # longest in mm, then largest vs the median
        patch[axis] -= d
    return tuple(int(p) for p in patch)  # type: ignore[return-value]



def plan_dataset(
    fingerprint: DatasetFingerprint,
    patch_voxels: int = DEFAULT_PATCH_VOXELS,
    size_divisor: int = 1,
    overrides: Mapping[str, Any] | None = None,
    network_geometry: str = "spacing",
) -> DatasetPlan:
    """The plan of one dataset from its fingerprint (see the module docstring).

    Args:
        fingerprint: The dataset's fingerprint.
        patch_voxels: Voxel budget of one patch.
        size_divisor: Patch axes are multiples of this (``2**(depth - 1)`` of the network).
        network_geometry: ``"spacing"``: per-stage pooling and kernels from the target spacing
            (:func:`versemi.network.geometry.plan_geometry`); ``"isotropic"``: none.
        overrides: ``target_spacing`` (x, y, z mm), ``patch_size`` (x, y, z voxels) and/or
            ``normalization`` (one of :data:`versemi.data.preprocessing.NORMALIZATIONS`) set by the
            config instead of derived.

    Raises:
        PlansError: an invalid override.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise PlansError(f"{fingerprint.name}: unknown plan key(s) {unknown}; known: {', '.join(OVERRIDE_KEYS)}")
    if "target_spacing" in overrides:
        spacing = positive_triple(overrides["target_spacing"], float, f"{fingerprint.name}: target_spacing")
    else:
        spacing = plan_target_spacing(fingerprint, patch_voxels, size_divisor)
    if "patch_size" in overrides:
        patch = positive_triple(overrides["patch_size"], int, f"{fingerprint.name}: patch_size")
    else:
        patch = plan_patch_size(fingerprint.median_size_at(spacing), spacing, patch_voxels, size_divisor)
    normalization = overrides.get("normalization") or default_normalization(
        fingerprint.modality, fingerprint.intensity is not None
    )
    if normalization not in NORMALIZATIONS:
        raise PlansError(f"{fingerprint.name}: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                         f"got {normalization!r}")
    extra: dict[str, Any] = {}
    if normalization == "ct_zscore":
        if fingerprint.intensity is None:
            raise PlansError(f"{fingerprint.name}: normalization 'ct_zscore' needs labeled CT cases "
                             "(their foreground intensities)")
        stats = fingerprint.intensity
        extra = {"intensity_clip": (stats.percentile_00_5, stats.percentile_99_5),
                 "intensity_mean": stats.mean, "intensity_std": stats.std}
    try:
        spec = PreprocessingSpec(target_spacing=spacing, modality=fingerprint.modality,
                                 normalization=normalization, **extra)
    except ValueError as exc:
        raise PlansError(f"{fingerprint.name}: {exc}") from None
    if network_geometry not in NETWORK_GEOMETRIES:
        raise PlansError(f"network_geometry must be one of {', '.join(NETWORK_GEOMETRIES)}, got {network_geometry!r}")
    network = None
    if network_geometry == "spacing":
        network = plan_geometry(spacing, patch, int(round(math.log2(size_divisor))) + 1)
    return DatasetPlan(fingerprint.name, spec, patch, fingerprint, tuple(k for k in OVERRIDE_KEYS if k in overrides),
                       network)


def size_divisor_of(model_config: Mapping[str, Any]) -> int:
    """The network's size divisor (``2**(depth - 1)``) for a config's ``model:`` section."""
    from versemi.network.segmenter import resolve_config

    resolved = resolve_config({**dict(model_config), "num_prompts": 1})
    return 2 ** (int(resolved["depth"]) - 1)


def plans_for_config(config: "TrainConfig", fingerprints: Mapping[str, DatasetFingerprint] | None = None) -> Plans:
    """The plans of a training config: one per dataset, the config's overrides applied, unlabeled and
    review folders mapped to a dataset (their ``dataset`` key, else the only dataset of their modality,
    else the first dataset).

    Args:
        config: The training config.
        fingerprints: Precomputed fingerprints by dataset name (computed when missing).

    Raises:
        PlansError: a dataset cannot be fingerprinted or an override is invalid.
    """
    divisor = size_divisor_of(config.model)
    settings = config.plans
    datasets: dict[str, DatasetPlan] = {}
    for d in config.datasets:
        fp = (fingerprints or {}).get(d.name) or fingerprint_config_dataset(config, d.name)
        overrides = dict(settings.overrides.get(d.name, {}))
        if config.target_spacing is not None:
            overrides.setdefault("target_spacing", config.target_spacing)
        if config.patch_size is not None:
            overrides.setdefault("patch_size", config.patch_size)
        datasets[d.name] = plan_dataset(fp, settings.patch_voxels, divisor, overrides, settings.network_geometry)
    aliases = {source: config.plan_source(source) for source in config.extra_sources()}
    return Plans(datasets, aliases, divisor, settings.patch_voxels)


__all__ = [
    "DEFAULT_PATCH_VOXELS",
    "DatasetPlan",
    "LOWRES_RATIO",
    "Plans",
    "PlansError",
    "plan_dataset",
    "plan_patch_size",
    "plan_target_spacing",
    "plans_for_config",
]
