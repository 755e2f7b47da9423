"""Evaluate a folder of predicted label maps against reference labels (``versemi evaluate``).

Files pair by case id, every pair on one grid (:func:`versemi.images.grid_differences`). Reference
labels come from ``dataset.json`` (optionally renamed by a label mapping file); a prediction with a
versemi sidecar is compared label by label by name, one without by value (nnU-Net). Every reference
case needs a prediction unless ``allow_missing``. The rules in full: docs/PREDICT.md, "Evaluating
predictions"; metrics: :mod:`versemi.evaluation.metrics`; files: :mod:`versemi.evaluation.result`.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.dataset import SUPPORTED_ENDINGS, split_ending
from versemi.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, STATUS_BOTH_EMPTY, binary_metrics, summarize
from versemi.evaluation.result import EvaluationError, EvaluationResult
from versemi.image_headers import grid_differences
from versemi.images import ImageFileError, read_image
from versemi.labels import normalize_name
from versemi.outputs import sidecar_paths

def _values_text(values: Sequence[int]) -> str:
    return "|".join(str(v) for v in values)


# --- inputs -------------------------------------------------------------------------------------
def find_label_files(folder: str | Path) -> dict[str, Path]:
    """Case id -> image file for every supported image in ``folder`` (not recursive).

    Raises:
        EvaluationError: the folder does not exist, or two files share a case id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parts = split_ending(path) if path.is_file() else None
        if parts is None or path.name.startswith("."):
            continue
        case = parts[0]
        if case in found:
            raise EvaluationError(f"{folder}: case {case!r} has two files: {found[case].name} and {path.name}")
        found[case] = path
    return found


def label_names_from_dataset_json(
    path: str | Path, mapping: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[int]]:
    """Reference label name -> value(s) from a ``dataset.json``, background excluded.

    Args:
        path: the ``dataset.json``; only its ``labels`` object is used.
        mapping: optional versemi label mapping (``"<dataset>:<value>" -> {"name": ...}``, see
            :mod:`versemi.labels`); entries for this dataset (its folder name) rename its labels as
            training does. Labels that end up with the same name are merged (union of values).

    Raises:
        EvaluationError: unreadable file, no ``labels`` object, bad values, or a mapping without any
            entry for this dataset.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: dataset.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read dataset.json: {exc}") from exc
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise EvaluationError(f"{path}: needs a 'labels' object mapping label name -> value")
    dataset = path.parent.name
    renames: dict[int, str] = {}
    if mapping:
        for key, entry in mapping.items():
            ds, _, value = str(key).rpartition(":")
            if ds == dataset and isinstance(entry, Mapping) and "name" in entry:
                renames[int(value)] = str(entry["name"])
        if not renames:
            raise EvaluationError(
                f"label mapping has no entry for dataset {dataset!r} (the folder of {path}); keys: "
                + ", ".join(sorted(map(str, mapping))[:8])
            )
    out: dict[str, list[int]] = {}
    for name, value in labels.items():
        try:
            values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
        except (TypeError, ValueError):
            raise EvaluationError(f"{path}: label {name!r} has a non-integer value {value!r}") from None
        values = [v for v in values if v != 0]
        if not values:
            continue  # background
        if len(values) == 1 and values[0] in renames:
            name = normalize_name(renames[values[0]])
        elif mapping:
            name = normalize_name(str(name))  # as the label space names it
        out.setdefault(str(name), [])
        out[str(name)] = sorted(set(out[str(name)]) | set(values))
    if not out:
        raise EvaluationError(f"{path}: 'labels' has no foreground label")
    return out


def read_sidecar(prediction: Path) -> dict[str, list[int]] | None:
    """Normalised label name -> value(s) from a prediction's versemi sidecar, ``None`` if absent.

    Raises:
        EvaluationError: the sidecar exists but is not valid.
    """
    sidecar, _ = sidecar_paths(prediction)
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        entries = data["labels"]
        out: dict[str, list[int]] = {}
        for entry in entries:
            out.setdefault(normalize_name(str(entry["name"])), []).append(int(entry["value"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(
            f"{sidecar}: not a valid prediction sidecar (needs {{\"labels\": [{{\"value\", \"name\"}}]}}): {exc}"
        ) from exc
    return out


def check_same_grid(pred: sitk.Image, ref: sitk.Image, pred_path: Path, ref_path: Path) -> None:
    """Raise :class:`EvaluationError` naming both files unless the two images share one grid
    (:func:`versemi.images.grid_differences`, the rule of check-dataset and training too)."""
    problems = grid_differences(pred, ref)
    if problems:
        raise EvaluationError(
            f"prediction {pred_path} and reference {ref_path} are on different grids: " + "; ".join(problems)
        )


def _read_label_map(path: Path) -> tuple[sitk.Image, np.ndarray]:
    try:
        image = read_image(path, endings=SUPPORTED_ENDINGS)
    except ImageFileError as exc:
        raise EvaluationError(str(exc)) from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components; expected a label map")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise EvaluationError(f"{path}: has non-integer values; expected a label map")
        array = rounded.astype(np.int32)
    return image, array


class UndeclaredLabelWarning(UserWarning):
    """A label value in a file that the reference label names do not declare (it is not scored)."""


def _warn_undeclared(path: Path, array: np.ndarray, declared: set[int], what: str) -> None:
    """Warn, naming ``path``, about non-zero values of ``array`` that no scored label has."""
    present = set(np.unique(array).tolist()) - {0}
    undeclared = sorted(int(v) for v in present - declared)
    if undeclared:
        warnings.warn(f"{path}: {what} label value(s) {undeclared} are not declared in the label names "
                      f"(declared: {sorted(declared)}); they are not scored - check dataset.json or the labels",
                      UndeclaredLabelWarning, stacklevel=3)


def _mask(array: np.ndarray, values: Sequence[int]) -> np.ndarray:
    return array == values[0] if len(values) == 1 else np.isin(array, values)


# --- evaluation ---------------------------------------------------------------------------------
def evaluate_case(
    pred_path: str | Path,
    ref_path: str | Path,
    label_names: Mapping[str, Sequence[int]] | None,
    case: str | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    use_sidecar: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Metric rows of one case, and the labels its prediction does not contain (sidecar).

    Args:
        pred_path: predicted label map.
        ref_path: reference label map on the same grid.
        label_names: reference label name -> value(s); ``None`` scores every non-zero value present
            in either file under its value as name (with no sidecar use).
        case: the case id written in the rows (default: derived from ``ref_path``).
        nsd_tolerance_mm: NSD tolerance in mm.
        use_sidecar: map prediction values through ``<case>.json`` beside the prediction if present.

    Raises:
        EvaluationError: unreadable files, different grids, invalid sidecar, or a sidecar without
            reference label names.
    """
    pred_path, ref_path = Path(pred_path), Path(ref_path)
    if case is None:
        parts = split_ending(ref_path)
        case = parts[0] if parts else ref_path.name
    pred_img, pred = _read_label_map(pred_path)
    ref_img, ref = _read_label_map(ref_path)
    check_same_grid(pred_img, ref_img, pred_path, ref_path)
    spacing_zyx = tuple(reversed(ref_img.GetSpacing()))

    sidecar = read_sidecar(pred_path) if use_sidecar else None
    if sidecar is not None and label_names is not None:
        wanted = {normalize_name(n) for n in label_names}
        if not wanted & set(sidecar):
            raise EvaluationError(
                f"{pred_path}: its sidecar names {sorted(sidecar)}, none of the reference labels "
                f"{sorted(label_names)}; rename the reference labels to the model's names with a label "
                "mapping (--labels-map) or compare values as is (--ignore-sidecars)"
            )
    if label_names is None:
        if sidecar is not None:
            raise EvaluationError(
                f"{pred_path}: its sidecar names the predicted labels, but the reference labels have no "
                "names: give the references' dataset.json"
            )
        present = sorted((set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0})
        label_names = {str(v): [int(v)] for v in present}

    _warn_undeclared(ref_path, ref, {v for values in label_names.values() for v in values}, "reference")
    if sidecar is None:
        _warn_undeclared(pred_path, pred, {v for values in label_names.values() for v in values}, "predicted")
    rows: list[dict[str, Any]] = []
    not_predicted: list[str] = []
    for name, ref_values in label_names.items():
        pred_values = list(ref_values)
        if sidecar is not None:
            if normalize_name(name) not in sidecar:
                not_predicted.append(name)
                continue
            pred_values = sidecar[normalize_name(name)]
        metrics = binary_metrics(_mask(pred, pred_values), _mask(ref, ref_values), spacing_zyx, nsd_tolerance_mm)
        rows.append(
            {
                "case": case,
                "label": name,
                "ref_values": _values_text(ref_values),
                "pred_values": _values_text(pred_values),
                **metrics,
            }
        )
    return rows, not_predicted


def _both_empty_row(case: str, name: str, values: Sequence[int]) -> dict[str, Any]:
    """The row of a label absent from both files of a case (named-free mode back-fill)."""
    return {
        "case": case, "label": name, "ref_values": _values_text(values), "pred_values": _values_text(values),
        "dice": 1.0, "hd95": 0.0, "nsd": 1.0, "status": STATUS_BOTH_EMPTY,
        "pred_voxels": 0, "ref_voxels": 0, "pred_volume_ml": 0.0, "ref_volume_ml": 0.0,
    }  # fmt: skip


def evaluate_folders(
    pred_dir: str | Path,
    label_dir: str | Path,
    label_names: Mapping[str, int | Sequence[int]] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    allow_missing: bool = False,
    use_sidecars: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvaluationResult:
    """Evaluate every prediction in ``pred_dir`` against the reference of the same case id.

    Args:
        pred_dir: folder of predicted label maps (``<case><ending>``, optional ``<case>.json``).
        label_dir: folder of reference label maps (``<case><ending>``), e.g. ``labelsTr``.
        label_names: reference label name -> value (or list of values for a region); ``None``: every
            non-zero value present is a label named by its value (labels absent from both files of
            a case score as both empty there).
        nsd_tolerance_mm: NSD tolerance in mm.
        allow_missing: evaluate only cases that have a prediction (the missing ones are listed)
            instead of failing.
        use_sidecars: map prediction values to names through their versemi sidecars.
        progress: called as ``progress(done, total, case)`` after each case.

    Returns:
        The :class:`EvaluationResult` (rows ordered by case, then label).

    Raises:
        EvaluationError: missing folders, no matching files, missing predictions (unless
            ``allow_missing``), unreadable files, different grids, bad label names.
    """
    preds = find_label_files(pred_dir)
    refs = find_label_files(label_dir)
    endings = ", ".join(SUPPORTED_ENDINGS)
    if not refs:
        raise EvaluationError(f"{label_dir}: no reference label files ({endings})")
    if not preds:
        raise EvaluationError(f"{pred_dir}: no prediction files ({endings})")
    cases = sorted(set(preds) & set(refs))
    if not cases:
        raise EvaluationError(
            f"no prediction in {pred_dir} matches a reference case id in {label_dir} "
            f"(e.g. predictions {sorted(preds)[:3]}, references {sorted(refs)[:3]})"
        )
    missing = sorted(set(refs) - set(preds))
    if missing and not allow_missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise EvaluationError(
            f"{len(missing)} reference case(s) in {label_dir} have no prediction in {pred_dir}: {shown} "
            "(use --allow-missing / allow_missing=True to evaluate only the predicted cases)"
        )
    names: dict[str, list[int]] | None = None
    if label_names is not None:
        names = {}
        for name, value in label_names.items():
            values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
            values = [v for v in values if v != 0]
            if values:
                names[str(name)] = values
        if not names:
            raise EvaluationError("label names contain no foreground label (only background)")
    if not (math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm >= 0):
        raise EvaluationError(f"NSD tolerance must be a finite number >= 0 mm, got {nsd_tolerance_mm}")

    rows: list[dict[str, Any]] = []
    not_predicted: dict[str, list[str]] = {}
    for i, case in enumerate(cases):
        case_rows, absent = evaluate_case(preds[case], refs[case], names, case, nsd_tolerance_mm, use_sidecars)
        rows.extend(case_rows)
        if absent:
            not_predicted[case] = absent
        if progress is not None:
            progress(i + 1, len(cases), case)

    if names is None:
        # Value-named labels: every case scores every value seen anywhere (absent = both empty).
        values = sorted({int(r["label"]) for r in rows})
        names = {str(v): [v] for v in values}
        have = {(r["case"], r["label"]) for r in rows}
        rows += [_both_empty_row(c, str(v), [v]) for c in cases for v in values if (c, str(v)) not in have]
    order = {name: k for k, name in enumerate(names)}
    rows.sort(key=lambda r: (r["case"], order[r["label"]]))
    # Summary in label order, not first-seen order.
    summary = summarize(rows)
    summary = {name: summary[name] for name in names if name in summary}
    return EvaluationResult(
        rows=rows,
        summary=summary,
        labels=names,
        cases=cases,
        missing_predictions=missing,
        predictions_without_reference=sorted(set(preds) - set(refs)),
        not_predicted=not_predicted,
        files={c: {"prediction": str(preds[c].resolve()), "reference": str(refs[c].resolve())} for c in cases},
        nsd_tolerance_mm=float(nsd_tolerance_mm),
        predictions_dir=str(Path(pred_dir).resolve()),
        labels_dir=str(Path(label_dir).resolve()),
    )

