"""Labeled example cases and a model's prompts: find the cases, map their labels, score a prediction.

Shared by ``versemi demo`` and ``bench/inference_precision.py``:

- :func:`find_labeled_cases`: every labeled case of an nnU-Net raw dataset (or of a folder of them);
- :func:`prompt_values`: the label value each of a model's prompts is in a dataset (by the training
  dataset's name, else by label name);
- :func:`score_case`: Dice and HD95 (mm) of each predicted prompt, on the reference's grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.evaluation.metrics import binary_metrics
from versemi.evaluation.report import check_same_grid, find_label_files
from versemi.evaluation.result import EvaluationError
from versemi.inference.io import find_images
from versemi.labels import LabelSpace, UnknownPromptError


@dataclass(frozen=True)
class LabeledCase:
    """One scan with its reference label.

    Attributes:
        dataset: The dataset folder's name (e.g. ``Dataset001_Hippocampus``).
        case: The case id (``hippocampus_001`` for ``hippocampus_001_0000.nii.gz``).
        image: The scan (channel 0).
        label: The reference labelmap.
        dataset_json: The dataset's ``dataset.json`` content.
    """

    dataset: str
    case: str
    image: Path
    label: Path
    dataset_json: Mapping[str, Any]


def _dataset_folders(folder: Path) -> list[Path]:
    if (folder / "dataset.json").is_file():
        return [folder]
    return sorted(d for d in folder.iterdir() if d.is_dir() and (d / "dataset.json").is_file())


def find_labeled_cases(folder: str | Path) -> list[LabeledCase]:
    """Every case with a label in an nnU-Net raw dataset, or in each dataset of a folder of datasets.

    Args:
        folder: a dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``) or a folder holding
            several.

    Returns:
        The cases, by dataset then case id; cases without a label are left out.

    Raises:
        EvaluationError: the folder does not exist, holds no dataset, or a ``dataset.json`` is unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: folder not found")
    datasets = _dataset_folders(folder)
    if not datasets:
        raise EvaluationError(f"{folder}: no dataset found (a folder with dataset.json, imagesTr and labelsTr, "
                              "or a folder of such folders)")
    cases: list[LabeledCase] = []
    for dataset in datasets:
        try:
            description = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvaluationError(f"{dataset / 'dataset.json'}: cannot read dataset.json: {exc}") from None
        labels_dir = dataset / "labelsTr"
        labels = find_label_files(labels_dir) if labels_dir.is_dir() else {}
        for case, image in find_images(dataset):
            if case in labels:
                cases.append(LabeledCase(dataset.name, case, image, labels[case], description))
    return cases


def prompt_values(label_space: LabelSpace, dataset: str, dataset_json: Mapping[str, Any] | None = None
                  ) -> list[tuple[int, int]]:
    """The ``(prompt id, label value)`` pairs of a labeled dataset for a model.

    The prompts the model was trained on from a dataset of that name; for a dataset the model does
    not know, the labels of its ``dataset.json`` whose names are prompt names.

    Args:
        label_space: the model's prompts.
        dataset: the dataset's folder name.
        dataset_json: its ``dataset.json`` content (for the fallback by name).

    Returns:
        Pairs in prompt order; empty when the model segments none of the dataset's labels.
    """
    pairs = label_space.prompts_for_dataset(dataset)
    if pairs:
        return pairs
    found: list[tuple[int, int]] = []
    for name, value in ((dataset_json or {}).get("labels") or {}).items():
        if isinstance(value, (list, tuple)) or int(value) == 0:
            continue
        try:
            prompt_id = label_space.prompt_id(str(name))
        except UnknownPromptError:
            continue
        if not label_space.prompts[prompt_id].synthetic:
            found.append((prompt_id, int(value)))
    return sorted(found)


@dataclass(frozen=True)
class PromptScore:
    """One prompt's agreement with the reference.

    Attributes:
        prompt: The prompt name.
        dice: Dice coefficient (1.0 when both are empty).
        hd95: 95th percentile Hausdorff distance in mm (``inf`` when exactly one mask is empty).
        status: ``ok``, ``both_empty``, ``pred_empty`` or ``ref_empty`` (see ``binary_metrics``).
    """

    prompt: str
    dice: float
    hd95: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        hd95 = self.hd95 if np.isfinite(self.hd95) else None
        return {"prompt": self.prompt, "dice": round(self.dice, 4), "hd95_mm": None if hd95 is None else round(hd95, 2),
                "status": self.status}


def score_case(labelmap: sitk.Image, labels: Sequence[Any], reference: sitk.Image, values: Mapping[int, int],
               prediction_name: str = "prediction", reference_name: str = "reference") -> list[PromptScore]:
    """Dice and HD95 of each predicted prompt against the reference value it maps to.

    Args:
        labelmap: the prediction (values = ``labels[i].value``).
        labels: the prediction's label entries (``value``, ``name``, ``prompt_id``; e.g.
            :class:`versemi.inference.LabelEntry`).
        reference: the reference labelmap, on the same grid.
        values: prompt id -> the reference's label value for it (:func:`prompt_values`).
        prediction_name, reference_name: how messages name the two images.

    Raises:
        EvaluationError: the two images are on different grids.
    """
    check_same_grid(labelmap, reference, Path(prediction_name), Path(reference_name))
    pred = sitk.GetArrayViewFromImage(labelmap)
    ref = sitk.GetArrayViewFromImage(reference)
    spacing_zyx = tuple(reversed(reference.GetSpacing()))
    scores = []
    for entry in labels:
        metrics = binary_metrics(pred == entry.value, ref == values[entry.prompt_id], spacing_zyx)
        scores.append(PromptScore(entry.name, float(metrics["dice"]), float(metrics["hd95"]), str(metrics["status"])))
    return scores


def reference_in_prediction_values(reference: sitk.Image, labels: Sequence[Any], values: Mapping[int, int]) -> sitk.Image:
    """The reference relabelled with the prediction's values (so both share one colour table)."""
    ref = sitk.GetArrayViewFromImage(reference)
    out = np.zeros(ref.shape, dtype=np.uint8)
    for entry in labels:
        out[ref == values[entry.prompt_id]] = entry.value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image


__all__ = [
    "LabeledCase",
    "PromptScore",
    "find_labeled_cases",
    "prompt_values",
    "reference_in_prediction_values",
    "score_case",
]
