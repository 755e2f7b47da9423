"""The label space of a config: the datasets' labels, the label mapping, and the review folders' labels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from versemi.data.config.datasets import DatasetConfig
from versemi.data.config.folders import ReviewDirConfig
from versemi.data.config.readers import Context
from versemi.labels import LabelSpace, load_mapping, normalize_name


def config_label_space(
    ctx: Context,
    datasets: Sequence[DatasetConfig],
    review_dirs: Sequence[ReviewDirConfig],
    label_mapping: Path | None,
    include_synthetic: bool = True,
) -> LabelSpace:
    """The label space of the datasets and review folders; see :meth:`TrainConfig.label_space`."""
    labels = {d.name: d.dataset.dataset_json for d in datasets}
    try:
        mapping = load_mapping(label_mapping) if label_mapping else None
        space = LabelSpace.from_dataset_labels(labels, mapping, include_synthetic)
    except ValueError as exc:
        raise ctx.error("label_mapping" if label_mapping else "datasets", str(exc)) from exc
    reviews = [(i, r) for i, r in enumerate(review_dirs) if r.labels]
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
