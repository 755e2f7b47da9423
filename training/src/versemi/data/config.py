"""The training configuration (YAML or JSON): datasets, labeled cases, unlabeled scans, grid.

A config names several nnU-Net v2 raw datasets. For each one it says which cases are LABELED (their
label files are used); every other case that is not excluded is used as an UNLABELED scan, exposed
as a :class:`~versemi.data.dataset.Case` whose ``label_path`` is ``None`` so training can never read
its label. Extra folders of unlabeled scans may be added, and review folders of the annotation loop
(``review_dirs``, see ``docs/REVIEW.md``): their refined cases are labeled, their pending and
rejected cases unlabeled scans. See ``docs/CONFIG.md`` for every key.

Relative paths are resolved against the folder of the config file. Each dataset's grid, intensity
normalisation and patch come from its plan (:mod:`versemi.data.plans`, made from the dataset's
fingerprint); the ``plans`` section tunes or overrides them, and the optional top-level
``target_spacing`` / ``patch_size`` override them for every dataset at once. Both are in ``(x, y, z)``
order, as SimpleITK uses (not nnU-Net's plans order).

The ``model`` and ``training`` sections are free-form dicts owned by :mod:`versemi.network` and
:mod:`versemi.training`; they are passed through untouched.

Why one module of about 800 lines: every key is read and checked here through one context, so that
each error names the file and the key path (``datasets[1].labeled``) the same way, and the checks
that cross sections (labeled cases against each dataset's cases, ``plans`` overrides against the
dataset names, review folders against their manifests) stay next to each other.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from versemi.data.dataset import Case, DatasetError, ImageFolder, NnUNetDataset
from versemi.labels import SYNTHETIC_PROMPT_NAME, LabelSpace, load_mapping, normalize_name

TOP_LEVEL_KEYS = (
    "datasets",
    "unlabeled_dirs",
    "review_dirs",
    "label_mapping",
    "target_spacing",
    "patch_size",
    "model",
    "training",
    "cache_dir",
    "output_dir",
    "seed",
    "validation",
    "plans",
)
DATASET_KEYS = ("path", "labeled", "exclude", "modality")
PROTOCOL_KEYS = ("protocol", "setting", "dataset")
UNLABELED_DIR_KEYS = ("path", "name", "modality", "dataset")
REVIEW_DIR_KEYS = ("path", "modality", "dataset")
VALIDATION_KEYS = ("fraction", "seed")
PLANS_KEYS = ("patch_voxels", "overrides", "network_geometry")
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_PATCH_VOXELS = 48 * 64 * 48  # versemi.data.plans.DEFAULT_PATCH_VOXELS (kept import-free here)
#: ``plans.network_geometry``: per-dataset pooling and in-plane kernels from the spacing
#: (versemi.network.geometry), or every axis pooled at every stage (plans made before geometries).
NETWORK_GEOMETRIES = ("spacing", "isotropic")


class ConfigError(ValueError):
    """An invalid training config; the message names the file and the key."""


class _Ctx:
    """Where a value came from, to build ``"<file>: <key>: <problem>"`` messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")


# --- small typed readers ---------------------------------------------------------------------------
def _check_keys(ctx: _Ctx, key: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        where = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise ctx.error(where, f"unknown key; allowed keys: {', '.join(allowed)}")


def _mapping(ctx: _Ctx, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(key, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def _string(ctx: _Ctx, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(key, f"must be a non-empty string, got {value!r}")
    return value


def _string_list(ctx: _Ctx, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ctx.error(key, f"must be a list of case ids (strings), got {value!r}")
    dupes = sorted({v for v in value if list(value).count(v) > 1})
    if dupes:
        raise ctx.error(key, f"lists case ids twice: {dupes}")
    return tuple(value)


def _triple(ctx: _Ctx, key: str, value: Any, kind: type) -> tuple[Any, Any, Any]:
    name = "integers" if kind is int else "numbers"
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else int) for v in value
    )
    if not ok or any(not math.isfinite(v) or v <= 0 for v in value):
        raise ctx.error(key, f"must be three positive {name} in (x, y, z) order, got {value!r}")
    return tuple(kind(v) for v in value)  # type: ignore[return-value]


def _int(ctx: _Ctx, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(key, f"must be an integer, got {value!r}")
    return value


def _path(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base_dir / p).resolve()


def _preview(ids: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:n])
    return f"[{shown}{', ...' if len(ids) > n else ''}] ({len(ids)})"


# --- sections --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProtocolRef:
    """Labeled cases taken from a protocol file: ``{dataset name: {setting: [case ids]}}``."""

    path: Path
    setting: str
    dataset: str

    def to_dict(self) -> dict[str, str]:
        return {"protocol": str(self.path), "setting": self.setting, "dataset": self.dataset}


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset of the config, its labeled cases resolved against the folder.

    Attributes:
        path: the nnU-Net v2 raw dataset folder (absolute).
        labeled: as written: ``"all"``, a tuple of case ids, or a :class:`ProtocolRef`.
        labeled_ids: the labeled case ids after resolution (sorted; excludes never appear here).
        exclude: case ids held out entirely (neither labeled nor unlabeled training data).
        modality_override: the ``modality`` key, or ``None`` to use ``channel_names["0"]``.
        labeled_from: the protocol file and setting the labeled cases were taken from, if any
            (kept through :meth:`TrainConfig.to_dict` as a record).
    """

    path: Path
    labeled: str | tuple[str, ...] | ProtocolRef
    labeled_ids: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    modality_override: str | None = None
    labeled_from: ProtocolRef | None = None
    dataset: NnUNetDataset = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    @property
    def name(self) -> str:
        """The dataset folder name (the key of label mappings and protocol files)."""
        return self.path.name

    @property
    def modality(self) -> str:
        return self.modality_override or self.dataset.modality

    def labeled_cases(self) -> list[Case]:
        """The labeled cases (image + label), sorted by case id."""
        ids = set(self.labeled_ids)
        return [c for c in self.dataset.cases if c.case_id in ids]

    def unlabeled_cases(self) -> list[Case]:
        """Every other case that is not excluded, as an image-only case (``label_path`` is ``None``)."""
        skip = set(self.labeled_ids) | set(self.exclude)
        return [c.without_label() for c in self.dataset.cases if c.case_id not in skip]

    def excluded_cases(self) -> list[Case]:
        """The held-out cases (with their labels, for evaluation)."""
        ids = set(self.exclude)
        return [c for c in self.dataset.cases if c.case_id in ids]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "labeled": list(self.labeled_ids)}
        if self.labeled_from is not None:
            out["labeled_from"] = self.labeled_from.to_dict()
        if self.exclude:
            out["exclude"] = list(self.exclude)
        if self.modality_override:
            out["modality"] = self.modality_override
        return out


@dataclass(frozen=True)
class UnlabeledDirConfig:
    """A plain folder of unlabeled scans (one image per file)."""

    path: Path
    name: str
    modality: str | None = None
    dataset: str | None = None

    @cached_property
    def folder(self) -> ImageFolder:
        return ImageFolder(self.path, self.name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "name": self.name}
        if self.modality:
            out["modality"] = self.modality
        if self.dataset:
            out["dataset"] = self.dataset
        return out


@dataclass(frozen=True)
class ReviewDirConfig:
    """A review folder of the annotation loop (``<path>/manifest.json``, see :mod:`versemi.review`).

    The manifest is read once, when the config is loaded, so a run trains on one consistent snapshot
    even while annotators go on refining cases.

    Attributes:
        path: the review folder (absolute).
        name: the name its cases carry as ``dataset`` (:func:`versemi.review.review_dataset_name`).
        labels: label name -> value of the refined labels, background included
            (:func:`versemi.review.review_label_table`); ``None`` when the manifest has no label
            table (then no case may be refined).
        labeled: the refined cases (image + refined label), by case id.
        unlabeled: the pending and rejected cases (``label_path`` is ``None``), by case id.
        modality: the ``modality`` key, or ``None`` to use the datasets' (common) modality.
        dataset: the ``dataset`` key: the dataset whose plan its scans use (see
            :meth:`TrainConfig.plan_source`).
    """

    path: Path
    name: str
    labels: dict[str, int] | None = field(default=None, compare=False)
    labeled: tuple[Case, ...] = field(default=(), compare=False, repr=False)
    unlabeled: tuple[Case, ...] = field(default=(), compare=False, repr=False)
    modality: str | None = None
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path)}
        if self.modality:
            out["modality"] = self.modality
        if self.dataset:
            out["dataset"] = self.dataset
        return out


@dataclass(frozen=True)
class ValidationConfig:
    """Model-selection split of each dataset's labeled training cases."""

    fraction: float = DEFAULT_VALIDATION_FRACTION
    seed: int = 0


@dataclass(frozen=True)
class PlansConfig:
    """The ``plans:`` section (see :mod:`versemi.data.plans`).

    Attributes:
        patch_voxels: Voxel budget of one training patch (the memory budget of the plans).
        overrides: Dataset name -> plan keys set instead of derived (``target_spacing``,
            ``patch_size``, ``normalization``).
        network_geometry: ``"spacing"`` (per-dataset pooling and in-plane kernels from the spacing) or
            ``"isotropic"`` (every axis pooled at every stage).
    """

    patch_voxels: int = DEFAULT_PATCH_VOXELS
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    network_geometry: str = "spacing"

    def to_dict(self) -> dict[str, Any]:
        return {"patch_voxels": self.patch_voxels, "overrides": {k: dict(v) for k, v in self.overrides.items()},
                "network_geometry": self.network_geometry}


# --- the config ------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """A validated training configuration; build it with :func:`load_config` or :meth:`from_dict`.

    Attributes:
        source: the config file (``None`` when built from a dict).
        datasets: the datasets, in config order.
        unlabeled_dirs: extra folders of unlabeled scans.
        review_dirs: review folders: refined cases labeled, pending/rejected ones unlabeled.
        label_mapping: optional label mapping file (see :func:`versemi.labels.load_mapping`).
        target_spacing: resampling spacing in mm, (x, y, z), for EVERY dataset (overrides the
            plans); ``None`` = each dataset's planned spacing.
        patch_size: training patch size in voxels, (x, y, z), for every dataset; ``None`` = planned.
        model: free-form model section (``versemi.network.build_model``).
        training: free-form trainer section.
        cache_dir: preprocessed cache folder.
        output_dir: checkpoints, logs and reports.
        seed: global random seed.
        validation: the model-selection split.
        plans: the ``plans:`` section.
    """

    datasets: list[DatasetConfig]
    target_spacing: tuple[float, float, float] | None
    patch_size: tuple[int, int, int] | None
    cache_dir: Path
    output_dir: Path
    unlabeled_dirs: list[UnlabeledDirConfig] = field(default_factory=list)
    review_dirs: list[ReviewDirConfig] = field(default_factory=list)
    label_mapping: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    plans: PlansConfig = field(default_factory=PlansConfig)
    source: Path | None = None

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: str | Path, source: str | Path | None = None
    ) -> "TrainConfig":
        """Validate a parsed config.

        Args:
            data: the parsed YAML/JSON content.
            base_dir: folder that relative paths are resolved against (the config file's folder).
            source: the config file, named in error messages.

        Raises:
            ConfigError: any invalid key or value; the message names the file and the key.
        """
        ctx = _Ctx(str(source) if source else "<config>")
        base = Path(base_dir).expanduser().resolve()
        if not isinstance(data, Mapping):
            raise ctx.error("", f"the config must be a mapping of keys, got {type(data).__name__}")
        _check_keys(ctx, "", data, TOP_LEVEL_KEYS)
        if "datasets" not in data:
            raise ctx.error("datasets", "required key is missing")

        raw_datasets = data["datasets"]
        if not isinstance(raw_datasets, list) or not raw_datasets:
            raise ctx.error("datasets", "must be a non-empty list of datasets")
        datasets = [_parse_dataset(ctx, f"datasets[{i}]", d, base) for i, d in enumerate(raw_datasets)]
        names = [d.name for d in datasets]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ctx.error(f"datasets[{i}].path", f"dataset {n} is listed twice")

        raw_dirs = data.get("unlabeled_dirs") or []
        if not isinstance(raw_dirs, list):
            raise ctx.error("unlabeled_dirs", "must be a list of folders")
        dirs = [_parse_unlabeled_dir(ctx, f"unlabeled_dirs[{i}]", d, base) for i, d in enumerate(raw_dirs)]
        taken = set(names)
        for i, d in enumerate(dirs):
            if d.name in taken:
                raise ctx.error(f"unlabeled_dirs[{i}]", f"name {d.name!r} is already used by a dataset or "
                                "another folder; set a distinct 'name'")
            taken.add(d.name)

        raw_reviews = data.get("review_dirs") or []
        if not isinstance(raw_reviews, list):
            raise ctx.error("review_dirs", f"must be a list of review folders, got {type(raw_reviews).__name__}")
        reviews = [_parse_review_dir(ctx, f"review_dirs[{i}]", r, base) for i, r in enumerate(raw_reviews)]
        modalities = sorted({d.modality.upper() for d in datasets})
        for i, r in enumerate(reviews):
            key = f"review_dirs[{i}]"
            if any(r.path == other.path for other in reviews[:i]):
                raise ctx.error(f"{key}.path", f"review folder {r.path} is listed twice")
            if r.name in taken:
                raise ctx.error(f"{key}.path", f"{r.path}: its name {r.name!r} (the manifest's 'name') is already "
                                "used by a dataset, an unlabeled folder or another review folder; rename one")
            taken.add(r.name)
            if r.modality is None and len(modalities) != 1:
                raise ctx.error(f"{key}.modality", f"required: the datasets mix modalities {modalities}")

        mapping = None
        if data.get("label_mapping") is not None:
            mapping = _path(base, _string(ctx, "label_mapping", data["label_mapping"]))
            if not mapping.is_file():
                raise ctx.error("label_mapping", f"file not found: {mapping}")

        seed = _int(ctx, "seed", data.get("seed", 0))
        val = _mapping(ctx, "validation", data.get("validation"))
        _check_keys(ctx, "validation", val, VALIDATION_KEYS)
        fraction = val.get("fraction", DEFAULT_VALIDATION_FRACTION)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ctx.error("validation.fraction", f"must be a number in [0, 1), got {fraction!r}")
        validation = ValidationConfig(float(fraction), _int(ctx, "validation.seed", val.get("seed", seed)))

        output_dir = _path(base, _string(ctx, "output_dir", data["output_dir"])) if "output_dir" in data \
            else _path(base, f"runs/{Path(str(source)).stem if source else 'train'}")
        cache_dir = _path(base, _string(ctx, "cache_dir", data["cache_dir"])) if "cache_dir" in data \
            else _path(base, "runs/cache")

        plans = _parse_plans(ctx, _mapping(ctx, "plans", data.get("plans")), names)
        for i, d in enumerate([*dirs, *reviews]):
            key = f"unlabeled_dirs[{i}]" if i < len(dirs) else f"review_dirs[{i - len(dirs)}]"
            if d.dataset is not None and d.dataset not in names:
                raise ctx.error(f"{key}.dataset", f"{d.dataset!r} is not a dataset of the config ({', '.join(names)})")

        config = cls(
            datasets=datasets,
            target_spacing=_triple(ctx, "target_spacing", data["target_spacing"], float)
            if data.get("target_spacing") is not None else None,
            patch_size=_triple(ctx, "patch_size", data["patch_size"], int)
            if data.get("patch_size") is not None else None,
            cache_dir=cache_dir,
            output_dir=output_dir,
            unlabeled_dirs=dirs,
            review_dirs=reviews,
            label_mapping=mapping,
            model=_mapping(ctx, "model", data.get("model")),
            training=_mapping(ctx, "training", data.get("training")),
            seed=seed,
            validation=validation,
            plans=plans,
            source=Path(source).resolve() if source else None,
        )
        if config.review_dirs:
            config.label_space()  # review labels must name known prompts: fail at load, not mid-run
        return config

    # --- cases ----------------------------------------------------------------------------------
    def dataset(self, name: str) -> DatasetConfig:
        """The dataset with this folder name.

        Raises:
            KeyError: no such dataset in the config.
        """
        for d in self.datasets:
            if d.name == name:
                return d
        names = ", ".join(d.name for d in self.datasets)
        raise KeyError(f"no dataset {name!r} in the config; datasets: {names}")

    def modality(self, dataset: str) -> str | None:
        """The modality of a dataset or unlabeled folder (by name); ``None`` when a folder sets none."""
        for d in self.datasets:
            if d.name == dataset:
                return d.modality
        for u in self.unlabeled_dirs:
            if u.name == dataset:
                return u.modality
        for r in self.review_dirs:
            if r.name == dataset:
                # Validated at load: without a modality key the datasets share one modality.
                return r.modality or self.datasets[0].modality
        raise KeyError(f"no dataset, unlabeled folder or review folder named {dataset!r} in the config")

    def extra_sources(self) -> list[str]:
        """The names of the unlabeled folders, then of the review folders (sources without a plan of their own)."""
        return [u.name for u in self.unlabeled_dirs] + [r.name for r in self.review_dirs]

    def plan_source(self, name: str) -> str:
        """The dataset whose plan the scans of a dataset, unlabeled folder or review folder use.

        A dataset uses its own; a folder its ``dataset`` key, else the only dataset of its modality
        (the datasets' when it sets none), else the first dataset.

        Raises:
            KeyError: no such dataset or folder.
        """
        if any(d.name == name for d in self.datasets):
            return name
        for folder in [*self.unlabeled_dirs, *self.review_dirs]:
            if folder.name == name:
                if folder.dataset:
                    return folder.dataset
                modality = self.modality(name)
                if modality is None:
                    return self.datasets[0].name
                same = [d.name for d in self.datasets if d.modality.upper() == modality.upper()]
                return same[0] if len(same) == 1 else self.datasets[0].name
        raise KeyError(f"no dataset, unlabeled folder or review folder named {name!r} in the config")

    def labeled_cases(self) -> list[Case]:
        """Every labeled case (image + label): dataset by dataset, then the review folders' refined cases."""
        return [c for d in self.datasets for c in d.labeled_cases()] + [
            c for r in self.review_dirs for c in r.labeled
        ]

    def unlabeled_cases(self) -> list[Case]:
        """Every unlabeled scan: the datasets' non-labeled, non-excluded cases, then the extra folders,
        then the review folders' pending and rejected cases.

        Each case has ``label_path=None``: label files of unlabeled cases (and pseudo-labels) are
        never exposed.
        """
        cases = [c for d in self.datasets for c in d.unlabeled_cases()]
        for u in self.unlabeled_dirs:
            cases.extend(u.folder.cases)
        for r in self.review_dirs:
            cases.extend(r.unlabeled)
        return cases

    def split_validation(self) -> tuple[list[Case], list[Case]]:
        """Split each dataset's labeled cases into (training, validation) for model selection.

        Deterministic for a given ``validation.seed`` and set of labeled cases: each dataset's
        labeled ids are sorted, then shuffled with a generator seeded by the seed and the dataset
        name, and the first ``round(fraction * n)`` become validation cases (at least one when
        ``fraction > 0`` and the dataset has two or more labeled cases, never all of them).

        The review folders' refined cases are training cases only (appended after the datasets'):
        they are few and were refined to be trained on, and model selection stays comparable
        between rounds of the annotation loop.

        Returns:
            (labeled training cases, labeled validation cases), each dataset by dataset, sorted by
            case id within a dataset.
        """
        train: list[Case] = []
        val: list[Case] = []
        fraction = self.validation.fraction
        for d in self.datasets:
            cases = d.labeled_cases()
            n = len(cases)
            n_val = 0
            if fraction > 0 and n >= 2:
                n_val = min(max(1, int(math.floor(fraction * n + 0.5))), n - 1)
            rng = np.random.default_rng([self.validation.seed, zlib.crc32(d.name.encode("utf-8"))])
            order = rng.permutation(n)
            val_idx = set(int(i) for i in order[:n_val])
            train.extend(c for i, c in enumerate(cases) if i not in val_idx)
            val.extend(c for i, c in enumerate(cases) if i in val_idx)
        for r in self.review_dirs:
            train.extend(r.labeled)
        return train, val

    # --- labels ---------------------------------------------------------------------------------
    def label_space(self, include_synthetic: bool = True) -> LabelSpace:
        """The label space from the datasets' ``dataset.json`` labels and the label mapping.

        A review folder adds no prompt: each name of its label table must already be a prompt of
        the datasets' label space (the pseudo-labels were made with those prompt names), and its
        value becomes one more source of that prompt, so refined cases train the same prompts. The
        prompts and their order are the same with or without review folders.

        Raises:
            ConfigError: the mapping file is invalid or names labels no dataset has; a review
                folder's label names a structure that is not a prompt.
        """
        ctx = _Ctx(str(self.source) if self.source else "<config>")
        labels = {d.name: d.dataset.dataset_json for d in self.datasets}
        try:
            mapping = load_mapping(self.label_mapping) if self.label_mapping else None
            space = LabelSpace.from_dataset_labels(labels, mapping, include_synthetic)
        except ValueError as exc:
            raise ctx.error("label_mapping" if self.label_mapping else "datasets", str(exc)) from exc
        reviews = [(i, r) for i, r in enumerate(self.review_dirs) if r.labels]
        if not reviews:
            return space
        known = {p.name for p in space.prompts if not p.synthetic}
        for i, r in reviews:
            assert r.labels is not None
            unknown = sorted(n for n, v in r.labels.items() if v != 0 and normalize_name(n) not in known)
            if unknown:
                raise ctx.error(
                    f"review_dirs[{i}]", f"{r.path / 'manifest.json'}: label(s) {unknown} are not prompts of the "
                    f"datasets' label space ({', '.join(sorted(known))}); pseudo-label with a model trained "
                    "on these datasets, or add the datasets that annotate them"
                )
            labels[r.name] = {"labels": r.labels}
        try:
            # Review labels are matched by name; mapping keys name datasets only, so none is consumed here.
            merged = LabelSpace.from_dataset_labels(labels, mapping, include_synthetic)
        except ValueError as exc:
            raise ctx.error("review_dirs", str(exc)) from exc
        assert merged.names == space.names  # sources were added, no prompt
        return merged

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (absolute paths, labeled cases as resolved id lists).

        ``TrainConfig.from_dict(cfg.to_dict(), base_dir=...)`` rebuilds an equal config while the
        dataset folders are unchanged; checkpoints store it as the record of what was trained on.
        """
        return {
            "datasets": [d.to_dict() for d in self.datasets],
            "unlabeled_dirs": [u.to_dict() for u in self.unlabeled_dirs],
            "review_dirs": [r.to_dict() for r in self.review_dirs],
            "label_mapping": str(self.label_mapping) if self.label_mapping else None,
            "target_spacing": list(self.target_spacing) if self.target_spacing is not None else None,
            "patch_size": list(self.patch_size) if self.patch_size is not None else None,
            "plans": self.plans.to_dict(),
            "model": dict(self.model),
            "training": dict(self.training),
            "cache_dir": str(self.cache_dir),
            "output_dir": str(self.output_dir),
            "seed": self.seed,
            "validation": {"fraction": self.validation.fraction, "seed": self.validation.seed},
        }


# --- parsing helpers -------------------------------------------------------------------------------
def _parse_dataset(ctx: _Ctx, key: str, raw: Any, base: Path) -> DatasetConfig:
    if isinstance(raw, str):
        raw = {"path": raw}
    entry = _mapping(ctx, key, raw)
    # "labeled_from" is written by to_dict() as a record; the resolved "labeled" list is what counts.
    record = entry.pop("labeled_from", None)
    labeled_from = None
    if isinstance(record, Mapping) and {"protocol", "setting", "dataset"} <= set(record):
        labeled_from = ProtocolRef(
            Path(str(record["protocol"])), str(record["setting"]), str(record["dataset"])
        )
    _check_keys(ctx, key, entry, DATASET_KEYS)
    if "path" not in entry:
        raise ctx.error(f"{key}.path", "required key is missing")
    path = _path(base, _string(ctx, f"{key}.path", entry["path"]))
    try:
        dataset = NnUNetDataset(path)
        dataset.dataset_json  # noqa: B018 - fail here, naming the key, rather than mid-training
        _ = dataset.labels
    except DatasetError as exc:
        raise ctx.error(f"{key}.path", str(exc)) from exc
    if not dataset.cases:
        raise ctx.error(
            f"{key}.path", f"{dataset.images_dir}: no images named <case>_0000{dataset.file_ending}"
        )
    known = set(dataset.case_ids)

    exclude = _string_list(ctx, f"{key}.exclude", entry.get("exclude"))
    unknown = [c for c in exclude if c not in known]
    if unknown:
        raise ctx.error(f"{key}.exclude", f"case ids not in {dataset.images_dir}: {_preview(unknown)}")

    labeled_raw = entry.get("labeled", "all")
    labeled: str | tuple[str, ...] | ProtocolRef
    if isinstance(labeled_raw, str) and labeled_raw in ("all", "none"):
        labeled = labeled_raw
        ids = [c for c in dataset.case_ids if c not in exclude] if labeled_raw == "all" else []
    elif isinstance(labeled_raw, Mapping):
        labeled = labeled_from = _parse_protocol(ctx, f"{key}.labeled", labeled_raw, base, dataset.name)
        ids = list(_read_protocol(ctx, f"{key}.labeled", labeled))
    elif isinstance(labeled_raw, list):
        labeled = _string_list(ctx, f"{key}.labeled", labeled_raw)
        ids = list(labeled)
    else:
        raise ctx.error(f"{key}.labeled", "must be 'all', 'none', a list of case ids, or "
                        f"{{protocol: <file>, setting: <name>}}; got {labeled_raw!r}")

    unknown = [c for c in ids if c not in known]
    if unknown:
        raise ctx.error(f"{key}.labeled", f"case ids not in {dataset.images_dir}: {_preview(unknown)}")
    overlap = sorted(set(ids) & set(exclude))
    if overlap and labeled != "all":
        raise ctx.error(f"{key}.exclude", f"case ids are both labeled and excluded: {_preview(overlap)}")
    no_label = [c.case_id for c in dataset.cases if c.case_id in set(ids) and c.label_path is None]
    if no_label:
        raise ctx.error(f"{key}.labeled", f"labeled cases without a label file in {dataset.labels_dir}: "
                        f"{_preview(no_label)} (run 'versemi check-dataset {dataset.root}')")

    modality = entry.get("modality")
    if modality is not None:
        modality = _string(ctx, f"{key}.modality", modality)
    return DatasetConfig(path, labeled, tuple(sorted(ids)), exclude, modality, labeled_from, dataset)


def _parse_protocol(ctx: _Ctx, key: str, raw: Mapping[str, Any], base: Path, dataset: str) -> ProtocolRef:
    _check_keys(ctx, key, raw, PROTOCOL_KEYS)
    for k in ("protocol", "setting"):
        if k not in raw:
            raise ctx.error(f"{key}.{k}", "required key is missing")
    path = _path(base, _string(ctx, f"{key}.protocol", raw["protocol"]))
    setting = _string(ctx, f"{key}.setting", raw["setting"])
    entry = _string(ctx, f"{key}.dataset", raw.get("dataset", dataset))
    return ProtocolRef(path, setting, entry)


def _read_protocol(ctx: _Ctx, key: str, ref: ProtocolRef) -> tuple[str, ...]:
    if not ref.path.is_file():
        raise ctx.error(f"{key}.protocol", f"file not found: {ref.path}")
    try:
        data = json.loads(ref.path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ctx.error(f"{key}.protocol", f"{ref.path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict) or ref.dataset not in data or not isinstance(data[ref.dataset], dict):
        have = ", ".join(sorted(data)) if isinstance(data, dict) else "nothing"
        raise ctx.error(f"{key}.protocol", f"{ref.path} has no entry for dataset {ref.dataset!r} "
                        f"(it has: {have}); set '{key}.dataset' to pick another entry")
    settings = data[ref.dataset]
    if ref.setting not in settings:
        raise ctx.error(f"{key}.setting", f"{ref.path}: dataset {ref.dataset!r} has no setting "
                        f"{ref.setting!r} (it has: {', '.join(sorted(settings))})")
    return _string_list(_Ctx(str(ref.path)), f"{ref.dataset}.{ref.setting}", settings[ref.setting])


def _folder_entry(
    ctx: _Ctx, key: str, raw: Any, base: Path, allowed_keys: tuple[str, ...]
) -> tuple[dict[str, Any], Path, str | None]:
    """A folder entry given as a path or a mapping with ``path`` (and ``modality``): entry, path, modality."""
    if isinstance(raw, str):
        raw = {"path": raw}
    entry = _mapping(ctx, key, raw)
    _check_keys(ctx, key, entry, allowed_keys)
    if "path" not in entry:
        raise ctx.error(f"{key}.path", "required key is missing")
    path = _path(base, _string(ctx, f"{key}.path", entry["path"]))
    modality = _string(ctx, f"{key}.modality", entry["modality"]) if entry.get("modality") else None
    return entry, path, modality


def _parse_unlabeled_dir(ctx: _Ctx, key: str, raw: Any, base: Path) -> UnlabeledDirConfig:
    entry, path, modality = _folder_entry(ctx, key, raw, base, UNLABELED_DIR_KEYS)
    name = _string(ctx, f"{key}.name", entry["name"]) if "name" in entry else path.name
    dataset = _string(ctx, f"{key}.dataset", entry["dataset"]) if entry.get("dataset") else None
    cfg = UnlabeledDirConfig(path, name, modality, dataset)
    try:
        n = len(cfg.folder.cases)
    except DatasetError as exc:
        raise ctx.error(f"{key}.path", str(exc)) from exc
    if n == 0:
        raise ctx.error(f"{key}.path", f"{path}: no image files (.nii.gz, .nii, .nrrd, .mha)")
    return cfg


def _parse_review_dir(ctx: _Ctx, key: str, raw: Any, base: Path) -> ReviewDirConfig:
    # Imported here: versemi.review imports versemi.data.dataset, and config must stay importable alone.
    from versemi.review.manifest import MANIFEST_NAME, ManifestError
    from versemi.review.training import training_view

    entry, path, modality = _folder_entry(ctx, key, raw, base, REVIEW_DIR_KEYS)
    dataset = _string(ctx, f"{key}.dataset", entry["dataset"]) if entry.get("dataset") else None
    if not path.is_dir():
        raise ctx.error(f"{key}.path", f"review folder not found: {path}")
    if not (path / MANIFEST_NAME).is_file():
        raise ctx.error(f"{key}.path", f"{path / MANIFEST_NAME}: review manifest not found (make the review "
                        "folder with 'versemi pseudolabel -o FOLDER')")
    try:
        view = training_view(path)
    except (ManifestError, DatasetError) as exc:
        raise ctx.error(f"{key}.path", str(exc)) from exc
    where = path / MANIFEST_NAME
    if not view.refined and not view.unrefined:
        raise ctx.error(f"{key}.path", f"{where}: the review manifest lists no case")
    missing_images = [c.case_id for c in [*view.refined, *view.unrefined] if not c.image_paths[0].is_file()]
    if missing_images:
        raise ctx.error(f"{key}.path", f"{where}: cases whose image file is missing: {_preview(missing_images)}")
    if view.labels is None and view.refined:
        raise ctx.error(f"{key}.path", f"{where}: has refined cases but no label table ('labels'); "
                        "re-run 'versemi pseudolabel' into this folder to record it")
    if view.labels and SYNTHETIC_PROMPT_NAME in {normalize_name(n) for n in view.labels}:
        raise ctx.error(f"{key}.path", f"{where}: the label table holds the synthetic prompt "
                        f"{SYNTHETIC_PROMPT_NAME!r}; refined labels must use real prompts only")
    return ReviewDirConfig(path, view.name, view.labels, view.refined, view.unrefined, modality, dataset)


def _parse_plans(ctx: _Ctx, raw: dict[str, Any], dataset_names: Sequence[str]) -> PlansConfig:
    _check_keys(ctx, "plans", raw, PLANS_KEYS)
    voxels = raw.get("patch_voxels", DEFAULT_PATCH_VOXELS)
    if isinstance(voxels, bool) or not isinstance(voxels, int) or voxels < 8:
        raise ctx.error("plans.patch_voxels", f"must be an integer >= 8 (voxels of one patch), got {voxels!r}")
    overrides = _mapping(ctx, "plans.overrides", raw.get("overrides"))
    parsed: dict[str, dict[str, Any]] = {}
    for name, entry in overrides.items():
        key = f"plans.overrides.{name}"
        if name not in dataset_names:
            raise ctx.error(key, f"not a dataset of the config ({', '.join(dataset_names)})")
        entry = _mapping(ctx, key, entry)
        _check_keys(ctx, key, entry, ("target_spacing", "patch_size", "normalization"))
        out: dict[str, Any] = {}
        if "target_spacing" in entry:
            out["target_spacing"] = _triple(ctx, f"{key}.target_spacing", entry["target_spacing"], float)
        if "patch_size" in entry:
            out["patch_size"] = _triple(ctx, f"{key}.patch_size", entry["patch_size"], int)
        if "normalization" in entry:
            out["normalization"] = _string(ctx, f"{key}.normalization", entry["normalization"])
        parsed[str(name)] = out
    geometry = raw.get("network_geometry", "spacing")
    if geometry not in NETWORK_GEOMETRIES:
        raise ctx.error("plans.network_geometry", f"must be one of {', '.join(NETWORK_GEOMETRIES)}, got {geometry!r}")
    return PlansConfig(int(voxels), parsed, geometry)


def parse_config_text(text: str, path: Path) -> Any:
    """Parse config text as JSON (``.json``) or YAML (anything else; YAML is a superset of JSON)."""
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parser error becomes one line naming the file
        raise ConfigError(f"{path}: cannot parse config: {exc}") from exc


def load_config(path: str | Path) -> TrainConfig:
    """Load and validate a training config from a YAML (``.yaml``/``.yml``) or JSON file.

    Raises:
        ConfigError: missing/unparsable file or any invalid key; the message names the file and key.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    data = parse_config_text(text, path)
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    return TrainConfig.from_dict(data, base_dir=path.parent, source=path)
