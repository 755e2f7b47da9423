"""Plans: how each dataset's scans must look for the network (nnU-Net's fingerprint -> plans, per dataset).

One prompted model learns from several datasets that differ in modality, grid and field of view (1 mm
hippocampus crops, 0.625 mm left-atrium crops, 1.5 x 1.5 x 10 mm cine MRI, 0.8 x 0.8 x 5 mm CT...).
Resampling them all onto one grid either wastes the budget on fine grids or destroys thin slices, so
every dataset gets its own **plan**, derived from its **fingerprint** (what the files say):

* **target spacing**: the median voxel spacing of the dataset, axis by axis, so an anisotropic dataset
  stays anisotropic (a 10 mm slice axis is never resampled to 1 mm). Its finest axes are coarsened
  (never beyond the coarsest axis unless all must be) just enough that (a) a patch within the budget
  (``patch_voxels``) could span the median bounding box of the labeled structures, and (b) a median
  scan holds at most :data:`LOWRES_RATIO` patches (nnU-Net's "low resolution" rule): on a small
  budget a patch must see most of a structure, or the network learns it piecemeal.
* **intensity normalisation** by modality: CT is clipped to the 0.5 / 99.5 percentiles of the labeled
  foreground voxels of the dataset and z-scored with their mean and standard deviation (nnU-Net's CT
  scheme); any other modality gets a per-image z-score (see :mod:`versemi.data.preprocessing`).
* **patch size**: the median scan's shape on the target grid rounded up to the network's size
  divisor, then shrunk, one divisor step at a time along the axis that is longest in mm (ties: the
  one largest compared with the median shape), until it fits ``patch_voxels`` (the memory budget of
  one training patch). The patch tends to a cube in mm, as anatomy is roughly isotropic: nnU-Net
  shrinks in proportion to the median shape instead, and shrinking first where the patch exceeds the
  structures' box was also tried; both give a 32 mm-thin left-atrium patch on a CPU budget, which
  scored 2-4 Dice points lower on the development split than a cubic one (docs/TRAINING.md).

Datasets therefore train with patches of different shapes. Cross-dataset CutMix needs images of one
shape, so the trainer builds one batch per dataset per step, each with that dataset's patch shape,
and draws the CutMix partner patches from the other datasets AT THE HOST'S SHAPE (on their own
grids): see :mod:`versemi.training.data`. Prediction preprocesses each prompt like the dataset(s) it
was trained from, with that dataset's window size.

:class:`Plans` is a typed, versioned object: written into every checkpoint (``"plans"``), read back by
``versemi predict``, printed by ``versemi plan CONFIG``. A training config may override any plan
(``plans: {overrides: {<dataset>: {target_spacing, patch_size}}}``) or every dataset at once with the
top-level ``target_spacing`` / ``patch_size`` keys. Spacings and patch sizes are ``(x, y, z)``, as
SimpleITK orders them.

Why one module of about 600 lines: fingerprint -> plan -> plans is one derivation whose rules refer
to each other's numbers, and the typed, versioned :class:`Plans` lives with it so that what is
planned is exactly what checkpoints store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from versemi.data.intensity import IntensityProfile
from versemi.data.preprocessing import (
    NORMALIZATIONS,
    PreprocessingSpec,
    default_normalization,
)
from versemi.data.config import NETWORK_GEOMETRIES
from versemi.network.geometry import NetworkGeometry, plan_geometry

if TYPE_CHECKING:
    from versemi.data.config import TrainConfig

PLANS_FORMAT = "versemi-plans"
PLANS_VERSION = 2
#: Plans versions this versemi reads (1: before per-plan network geometries; read as isotropic).
READABLE_PLANS_VERSIONS = (1, 2)

#: Voxels of one training patch by default: 48 x 64 x 48, what two CPU cores train in about one
#: second per step with bf16 autocast (bench/train_speed.py). Raise it on a GPU (e.g. 128**3).
DEFAULT_PATCH_VOXELS = 48 * 64 * 48
#: A median scan may hold at most this many patches on its target grid; beyond, the finest axes are
#: coarsened (nnU-Net plans a low-resolution configuration past a similar ratio).
LOWRES_RATIO = 4.0
#: Coarsened spacings are rounded to this step (mm), so plans read well and stay stable.
SPACING_STEP = 0.05
#: Foreground voxels sampled per labeled case for the CT intensity statistics.
INTENSITY_SAMPLES_PER_CASE = 10_000
#: Scans read (evenly chosen) for a dataset's intensity profile.
PROFILE_SCANS = 20


class PlansError(ValueError):
    """Plans that cannot be made or read; the message names the dataset and the problem."""


def _triple(values: Sequence[Any], kind: type, what: str) -> tuple[Any, Any, Any]:
    out = tuple(kind(v) for v in values)
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise PlansError(f"{what} must be three positive numbers (x, y, z), got {list(values)!r}")
    return out  # type: ignore[return-value]


# ==================================================================================================
# fingerprints
# ==================================================================================================
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
            median_spacing=_triple(d["median_spacing"], float, "median_spacing"),
            median_size=_triple(d["median_size"], float, "median_size"),
            foreground_extent=_triple(d["foreground_extent"], float, "foreground_extent")
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
    import SimpleITK as sitk

    from versemi.images import ImageFileError, read_image, read_image_header

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


# ==================================================================================================
# plans
# ==================================================================================================
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
        object.__setattr__(self, "patch_size", _triple(self.patch_size, int, f"{self.dataset}: patch_size"))
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


OVERRIDE_KEYS = ("target_spacing", "patch_size", "normalization")


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
        spacing = _triple(overrides["target_spacing"], float, f"{fingerprint.name}: target_spacing")
    else:
        spacing = plan_target_spacing(fingerprint, patch_voxels, size_divisor)
    if "patch_size" in overrides:
        patch = _triple(overrides["patch_size"], int, f"{fingerprint.name}: patch_size")
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


def fingerprint_config_dataset(config: "TrainConfig", name: str) -> DatasetFingerprint:
    """The fingerprint of one dataset of a config: every non-excluded scan's header, the labeled
    training cases' labels (validation cases are left out: plans must not peek at them)."""
    d = config.dataset(name)
    train, _ = config.split_validation()
    labeled = [(c.image_path, c.label_path) for c in train if c.dataset == name and c.label_path is not None]
    images = [c.image_path for c in [*d.labeled_cases(), *d.unlabeled_cases()]]
    return fingerprint_dataset(name, d.modality, images, labeled)


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
    "DatasetFingerprint",
    "DatasetPlan",
    "IntensityStats",
    "LOWRES_RATIO",
    "Plans",
    "PlansError",
    "fingerprint_dataset",
    "plan_dataset",
    "plan_patch_size",
    "plan_target_spacing",
    "plans_for_config",
]
