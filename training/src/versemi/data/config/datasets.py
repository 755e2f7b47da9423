"""The ``datasets`` entries: nnU-Net v2 raw datasets, which of their cases are labeled, which held out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from versemi.data.config.protocol import ProtocolRef, parse_protocol, read_protocol
from versemi.data.config.readers import (
    Context,
    check_keys,
    preview,
    read_case_ids,
    read_mapping,
    read_string,
    resolve_path,
)
from versemi.data.dataset import Case, DatasetError, NnUNetDataset

DATASET_KEYS = ("path", "labeled", "exclude", "modality")


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


def parse_dataset(ctx: Context, key: str, raw: Any, base: Path) -> DatasetConfig:
    """One ``datasets`` entry (a path, or a mapping with ``path``), checked against the dataset's cases."""
    if isinstance(raw, str):
        raw = {"path": raw}
    entry = read_mapping(ctx, key, raw)
    # "labeled_from" is written by to_dict() as a record; the resolved "labeled" list is what counts.
    record = entry.pop("labeled_from", None)
    labeled_from = None
    if isinstance(record, Mapping) and {"protocol", "setting", "dataset"} <= set(record):
        labeled_from = ProtocolRef(
            Path(str(record["protocol"])), str(record["setting"]), str(record["dataset"])
        )
    check_keys(ctx, key, entry, DATASET_KEYS)
    if "path" not in entry:
        raise ctx.error(f"{key}.path", "required key is missing")
    path = resolve_path(base, read_string(ctx, f"{key}.path", entry["path"]))
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

    exclude = read_case_ids(ctx, f"{key}.exclude", entry.get("exclude"))
    unknown = [c for c in exclude if c not in known]
    if unknown:
        raise ctx.error(f"{key}.exclude", f"case ids not in {dataset.images_dir}: {preview(unknown)}")

    labeled_raw = entry.get("labeled", "all")
    labeled: str | tuple[str, ...] | ProtocolRef
    if isinstance(labeled_raw, str) and labeled_raw in ("all", "none"):
        labeled = labeled_raw
        ids = [c for c in dataset.case_ids if c not in exclude] if labeled_raw == "all" else []
    elif isinstance(labeled_raw, Mapping):
        labeled = labeled_from = parse_protocol(ctx, f"{key}.labeled", labeled_raw, base, dataset.name)
        ids = list(read_protocol(ctx, f"{key}.labeled", labeled))
    elif isinstance(labeled_raw, list):
        labeled = read_case_ids(ctx, f"{key}.labeled", labeled_raw)
        ids = list(labeled)
    else:
        raise ctx.error(f"{key}.labeled", "must be 'all', 'none', a list of case ids, or "
                        f"{{protocol: <file>, setting: <name>}}; got {labeled_raw!r}")

    unknown = [c for c in ids if c not in known]
    if unknown:
        raise ctx.error(f"{key}.labeled", f"case ids not in {dataset.images_dir}: {preview(unknown)}")
    overlap = sorted(set(ids) & set(exclude))
    if overlap and labeled != "all":
        raise ctx.error(f"{key}.exclude", f"case ids are both labeled and excluded: {preview(overlap)}")
    no_label = [c.case_id for c in dataset.cases if c.case_id in set(ids) and c.label_path is None]
    if no_label:
        raise ctx.error(f"{key}.labeled", f"labeled cases without a label file in {dataset.labels_dir}: "
                        f"{preview(no_label)} (run 'versemi check-dataset {dataset.root}')")

    modality = entry.get("modality")
    if modality is not None:
        modality = read_string(ctx, f"{key}.modality", modality)
    return DatasetConfig(path, labeled, tuple(sorted(ids)), exclude, modality, labeled_from, dataset)

