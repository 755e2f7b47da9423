"""The training config (:class:`TrainConfig`): its top-level keys, the checks across sections, and loading."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from versemi.data.config.datasets import DatasetConfig, parse_dataset
from versemi.data.config.folders import ReviewDirConfig, UnlabeledDirConfig, parse_review_dir, parse_unlabeled_dir
from versemi.data.config.label_space import config_label_space
from versemi.data.config.plans_section import PlansConfig, parse_plans
from versemi.data.config.readers import (
    ConfigError,
    Context,
    check_keys,
    read_int,
    read_mapping,
    read_string,
    read_triple,
    resolve_path,
)
from versemi.data.config.split import ValidationConfig, parse_validation, split_validation
from versemi.data.dataset import Case
from versemi.labels import LabelSpace

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
        ctx = Context(str(source) if source else "<config>")
        base = Path(base_dir).expanduser().resolve()
        if not isinstance(data, Mapping):
            raise ctx.error("", f"the config must be a mapping of keys, got {type(data).__name__}")
        check_keys(ctx, "", data, TOP_LEVEL_KEYS)
        if "datasets" not in data:
            raise ctx.error("datasets", "required key is missing")

        raw_datasets = data["datasets"]
        if not isinstance(raw_datasets, list) or not raw_datasets:
            raise ctx.error("datasets", "must be a non-empty list of datasets")
        datasets = [parse_dataset(ctx, f"datasets[{i}]", d, base) for i, d in enumerate(raw_datasets)]
        names = [d.name for d in datasets]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ctx.error(f"datasets[{i}].path", f"dataset {n} is listed twice")

        raw_dirs = data.get("unlabeled_dirs") or []
        if not isinstance(raw_dirs, list):
            raise ctx.error("unlabeled_dirs", "must be a list of folders")
        dirs = [parse_unlabeled_dir(ctx, f"unlabeled_dirs[{i}]", d, base) for i, d in enumerate(raw_dirs)]
        taken = set(names)
        for i, d in enumerate(dirs):
            if d.name in taken:
                raise ctx.error(f"unlabeled_dirs[{i}]", f"name {d.name!r} is already used by a dataset or "
                                "another folder; set a distinct 'name'")
            taken.add(d.name)

        raw_reviews = data.get("review_dirs") or []
        if not isinstance(raw_reviews, list):
            raise ctx.error("review_dirs", f"must be a list of review folders, got {type(raw_reviews).__name__}")
        reviews = [parse_review_dir(ctx, f"review_dirs[{i}]", r, base) for i, r in enumerate(raw_reviews)]
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
            mapping = resolve_path(base, read_string(ctx, "label_mapping", data["label_mapping"]))
            if not mapping.is_file():
                raise ctx.error("label_mapping", f"file not found: {mapping}")

        seed = read_int(ctx, "seed", data.get("seed", 0))
        validation = parse_validation(ctx, read_mapping(ctx, "validation", data.get("validation")), seed)

        output_dir = resolve_path(base, read_string(ctx, "output_dir", data["output_dir"])) if "output_dir" in data \
            else resolve_path(base, f"runs/{Path(str(source)).stem if source else 'train'}")
        cache_dir = resolve_path(base, read_string(ctx, "cache_dir", data["cache_dir"])) if "cache_dir" in data \
            else resolve_path(base, "runs/cache")

        plans = parse_plans(ctx, read_mapping(ctx, "plans", data.get("plans")), names)
        for i, d in enumerate([*dirs, *reviews]):
            key = f"unlabeled_dirs[{i}]" if i < len(dirs) else f"review_dirs[{i - len(dirs)}]"
            if d.dataset is not None and d.dataset not in names:
                raise ctx.error(f"{key}.dataset", f"{d.dataset!r} is not a dataset of the config ({', '.join(names)})")

        config = cls(
            datasets=datasets,
            target_spacing=read_triple(ctx, "target_spacing", data["target_spacing"], float)
            if data.get("target_spacing") is not None else None,
            patch_size=read_triple(ctx, "patch_size", data["patch_size"], int)
            if data.get("patch_size") is not None else None,
            cache_dir=cache_dir,
            output_dir=output_dir,
            unlabeled_dirs=dirs,
            review_dirs=reviews,
            label_mapping=mapping,
            model=read_mapping(ctx, "model", data.get("model")),
            training=read_mapping(ctx, "training", data.get("training")),
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
        return split_validation(self.datasets, self.review_dirs, self.validation)

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
        ctx = Context(str(self.source) if self.source else "<config>")
        return config_label_space(ctx, self.datasets, self.review_dirs, self.label_mapping, include_synthetic)

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
