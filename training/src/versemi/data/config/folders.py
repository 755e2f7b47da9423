"""The ``unlabeled_dirs`` and ``review_dirs`` entries: folders of unlabeled scans and review folders.

A review folder (``docs/REVIEW.md``) is read through its manifest when the config is loaded: its refined
cases are labeled, its pending and rejected cases unlabeled scans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from versemi.data.config.readers import Context, check_keys, preview, read_mapping, read_string, resolve_path
from versemi.data.dataset import Case, DatasetError, ImageFolder
from versemi.labels import SYNTHETIC_PROMPT_NAME, normalize_name
from versemi.review.manifest import MANIFEST_NAME
from versemi.review.manifest_rows import ManifestError
from versemi.review.refined import training_view

UNLABELED_DIR_KEYS = ("path", "name", "modality", "dataset")
REVIEW_DIR_KEYS = ("path", "modality", "dataset")


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


def _folder_entry(
    ctx: Context, key: str, raw: Any, base: Path, allowed_keys: tuple[str, ...]
) -> tuple[dict[str, Any], Path, str | None]:
    """A folder entry given as a path or a mapping with ``path`` (and ``modality``): entry, path, modality."""
    if isinstance(raw, str):
        raw = {"path": raw}
    entry = read_mapping(ctx, key, raw)
    check_keys(ctx, key, entry, allowed_keys)
    if "path" not in entry:
        raise ctx.error(f"{key}.path", "required key is missing")
    path = resolve_path(base, read_string(ctx, f"{key}.path", entry["path"]))
    modality = read_string(ctx, f"{key}.modality", entry["modality"]) if entry.get("modality") else None
    return entry, path, modality


def parse_unlabeled_dir(ctx: Context, key: str, raw: Any, base: Path) -> UnlabeledDirConfig:
    """One ``unlabeled_dirs`` entry (a path, or a mapping with ``path``); the folder must hold scans."""
    entry, path, modality = _folder_entry(ctx, key, raw, base, UNLABELED_DIR_KEYS)
    name = read_string(ctx, f"{key}.name", entry["name"]) if "name" in entry else path.name
    dataset = read_string(ctx, f"{key}.dataset", entry["dataset"]) if entry.get("dataset") else None
    cfg = UnlabeledDirConfig(path, name, modality, dataset)
    try:
        n = len(cfg.folder.cases)
    except DatasetError as exc:
        raise ctx.error(f"{key}.path", str(exc)) from exc
    if n == 0:
        raise ctx.error(f"{key}.path", f"{path}: no image files (.nii.gz, .nii, .nrrd, .mha)")
    return cfg


def parse_review_dir(ctx: Context, key: str, raw: Any, base: Path) -> ReviewDirConfig:
    """One ``review_dirs`` entry, its manifest read now (one snapshot for the whole run)."""
    entry, path, modality = _folder_entry(ctx, key, raw, base, REVIEW_DIR_KEYS)
    dataset = read_string(ctx, f"{key}.dataset", entry["dataset"]) if entry.get("dataset") else None
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
        raise ctx.error(f"{key}.path", f"{where}: cases whose image file is missing: {preview(missing_images)}")
    if view.labels is None and view.refined:
        raise ctx.error(f"{key}.path", f"{where}: has refined cases but no label table ('labels'); "
                        "re-run 'versemi pseudolabel' into this folder to record it")
    if view.labels and SYNTHETIC_PROMPT_NAME in {normalize_name(n) for n in view.labels}:
        raise ctx.error(f"{key}.path", f"{where}: the label table holds the synthetic prompt "
                        f"{SYNTHETIC_PROMPT_NAME!r}; refined labels must use real prompts only")
    return ReviewDirConfig(path, view.name, view.labels, view.refined, view.unrefined, modality, dataset)
