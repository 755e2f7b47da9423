"""A review folder as training data: what the training config's ``review_dirs`` reads.

Refined cases are labeled cases (image + refined label); pending and rejected ones are unlabeled
(their pseudo-labels never reach training); failed ones are left out. One manifest load, one snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from versemi.data.dataset import Case, DatasetError
from versemi.review.manifest import ReviewManifest


@dataclass(frozen=True)
class ReviewTrainingView:
    """What training takes from a review folder, read from ONE load of the manifest (a snapshot).

    Attributes:
        name: the name the cases carry as ``dataset`` (:func:`review_dataset_name`).
        labels: label name -> value of the refined labels, background included, or ``None`` when the
            manifest has no label table.
        refined: the refined cases as LABELED cases (image + refined label), by case id.
        unrefined: the pending and rejected cases as UNLABELED cases (``label_path=None``), by case id.
    """

    name: str
    labels: dict[str, int] | None
    refined: tuple[Case, ...]
    unrefined: tuple[Case, ...]


def training_view(review_dir: str | Path, require_labels: bool = True) -> ReviewTrainingView:
    """The review folder as training data (what the training config's ``review_dirs`` reads).

    Args:
        review_dir: the review folder.
        require_labels: raise when a refined case's label file is missing (else the case is left out
            of ``refined``).

    Raises:
        DatasetError: no manifest, or (``require_labels``) a refined case's label file is missing.
        ManifestError: an unreadable manifest.
    """
    manifest = ReviewManifest(review_dir)
    if not manifest.exists:
        raise DatasetError(f"{manifest.path}: review manifest not found (run versemi pseudolabel first)")
    state = manifest.load()
    refined: list[Case] = []
    unrefined: list[Case] = []
    missing: list[str] = []
    for r in sorted(state.rows.values(), key=lambda r: r.case):
        if r.status == "refined":
            if r.refined_label is None or not r.refined_label.is_file():
                missing.append(f"case {r.case!r} is refined but its label {r.refined_label} is missing")
            else:
                refined.append(Case(r.case, (r.image,), r.refined_label, state.name))
        elif r.status != "failed":  # pending or rejected: the scan is used, its pseudo-label never
            unrefined.append(Case(r.case, (r.image,), None, state.name))
        # failed: pseudo-labelling could not read or predict the scan; it is left out
    if missing and require_labels:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{manifest.path}: {missing[0]}{more}")
    labels = _label_table_dict(state.labels) if state.labels else None
    return ReviewTrainingView(state.name, labels, tuple(refined), tuple(unrefined))


def _label_table_dict(labels: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    table = {"background": 0}
    table.update({str(e["name"]): int(e["value"]) for e in labels})
    return table


def refined_cases(review_dir: str | Path) -> list[Case]:
    """The refined cases of a review folder as LABELED cases (image + refined label), by case id.

    The cases carry ``dataset = <the manifest's name>`` (default: the review folder's name); their
    label values follow :func:`review_label_table`.

    Raises:
        DatasetError: no manifest, or a refined label file is missing.
        ManifestError: an unreadable manifest.
    """
    return list(training_view(review_dir).refined)


def unrefined_cases(review_dir: str | Path) -> list[Case]:
    """The pending and rejected cases as UNLABELED cases (``label_path=None``), by case id.

    Their pseudo-labels are never exposed to training.
    """
    return list(training_view(review_dir, require_labels=False).unrefined)


def review_label_table(review_dir: str | Path) -> dict[str, int]:
    """Label name -> value of the refined labels (like ``dataset.json``'s ``labels``, background included).

    Feed it to :meth:`versemi.labels.LabelSpace.from_dataset_labels` as
    ``{name: {"labels": review_label_table(dir)}}``: the names are the model's prompt names, so refined
    cases train the same prompts as the datasets the model learned them from.

    Raises:
        DatasetError: the manifest has no label table (the pseudo-labels were not registered with one).
    """
    manifest = ReviewManifest(review_dir)
    state = manifest.load()
    if not state.labels:
        raise DatasetError(f"{manifest.path}: the review manifest has no label table ('labels')")
    return _label_table_dict(state.labels)


def review_dataset_name(review_dir: str | Path) -> str:
    """The name refined/unrefined cases carry as ``dataset``."""
    return ReviewManifest(review_dir).load().name


__all__ = [
    "ReviewTrainingView",
    "refined_cases",
    "review_dataset_name",
    "review_label_table",
    "training_view",
    "unrefined_cases",
]
