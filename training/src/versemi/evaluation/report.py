"""Evaluate a folder of predicted label maps against reference labels; write CSV, JSON, Markdown.

Files are matched by case id, nnU-Net style: prediction ``<case><ending>`` against reference
``<case><ending>`` (endings ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``; the two may differ). Every
pair must share one grid (:func:`versemi.images.grid_differences`: the rule check-dataset and
training apply), otherwise the evaluation stops with an error naming both files.

Which voxels form a label:

- References: the label names and values of ``dataset.json`` (``labels``, background excluded;
  nnU-Net region labels given as a list of values are the union of those values), optionally
  renamed with a versemi label mapping file exactly as training renames them. Without names, every
  non-zero value found is a label named by its value.
- Predictions: when a prediction carries a versemi sidecar (``<case>.json`` with ``{"labels":
  [{"value", "name", ...}]}``, written by ``versemi predict``), its values are mapped to names and
  compared with the reference label OF THE SAME NAME (names compared after
  :func:`versemi.labels.normalize_name`). Reference labels the sidecar does not name were not
  predicted and are listed per case in ``not_predicted`` rather than scored. Without a sidecar the
  prediction uses the reference's values (nnU-Net convention).

Missing predictions: by default every reference case needs a prediction and the evaluation stops
naming the missing ones (the nnU-Net default); with ``allow_missing`` only cases with predictions are
evaluated and the missing ones are listed in every output. Predictions without a reference are
ignored and listed.

Metrics and empty-mask conventions: :mod:`versemi.evaluation.metrics`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi import __version__
from versemi.data.dataset import DatasetError, SUPPORTED_ENDINGS, read_image, split_ending
from versemi.evaluation.metrics import DEFAULT_NSD_TOLERANCE_MM, STATUS_BOTH_EMPTY, binary_metrics, summarize
from versemi.fileio import AtomicGroup, remove_stale_temp_files
from versemi.images import grid_differences
from versemi.labels import normalize_name
from versemi.outputs import sidecar_paths

CSV_COLUMNS = (
    "case",
    "label",
    "dice",
    "hd95",
    "nsd",
    "status",
    "ref_values",
    "pred_values",
    "ref_voxels",
    "pred_voxels",
    "ref_volume_ml",
    "pred_volume_ml",
)
OUTPUT_FILES = ("metrics.csv", "metrics.json", "summary.md")

class EvaluationError(ValueError):
    """A problem with the inputs of an evaluation; the message names the file(s)."""


@dataclass
class EvaluationResult:
    """Per-case x per-label metrics of one evaluation and their per-label summary.

    Attributes:
        rows: one dict per (case, label): ``case``, ``label``, ``dice``, ``hd95`` (mm, ``inf`` when
            undefined), ``nsd``, ``status``, ``ref_values``, ``pred_values``, voxel counts, volumes.
        summary: :func:`versemi.evaluation.metrics.summarize` of ``rows`` (label -> statistics).
        labels: label name -> reference value(s), in report order.
        cases: the evaluated case ids, sorted.
        missing_predictions: reference cases without a prediction (only with ``allow_missing``).
        predictions_without_reference: prediction case ids with no reference file (ignored).
        not_predicted: case -> reference labels its prediction's sidecar does not name (not scored).
        files: case -> ``{"prediction": path, "reference": path}``.
        nsd_tolerance_mm: the NSD tolerance used.
        predictions_dir: the predictions folder.
        labels_dir: the reference folder.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, Any]]
    labels: dict[str, list[int]]
    cases: list[str]
    missing_predictions: list[str] = field(default_factory=list)
    predictions_without_reference: list[str] = field(default_factory=list)
    not_predicted: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM
    predictions_dir: str = ""
    labels_dir: str = ""

    @property
    def mean_over_labels(self) -> dict[str, float | None]:
        """Mean of the per-label means of Dice, HD95 and NSD (labels without a value skipped)."""
        out: dict[str, float | None] = {}
        for metric in ("dice", "hd95", "nsd"):
            means = [s[metric]["mean"] for s in self.summary.values() if s[metric]["mean"] is not None]
            out[metric] = float(np.mean(means)) if means else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``: strict JSON (undefined HD95 -> ``null``)."""
        per_case: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            files = self.files.get(row["case"], {})
            entry = per_case.setdefault(row["case"], {"case": row["case"], **files, "labels": {}})
            entry["labels"][row["label"]] = {k: row[k] for k in CSV_COLUMNS if k not in ("case", "label")}
        return _json_safe(
            {
                "versemi_version": __version__,
                "predictions": self.predictions_dir,
                "references": self.labels_dir,
                "nsd_tolerance_mm": self.nsd_tolerance_mm,
                "labels": self.labels,
                "conventions": (
                    "Dice/NSD/HD95 in mm on the reference grid. Both masks empty: Dice 1, NSD 1, "
                    "HD95 0 (status both_empty). One mask empty: Dice 0, NSD 0, HD95 undefined (null; "
                    "status pred_empty or ref_empty); HD95 statistics use defined cases only "
                    "(hd95_n) and count the rest (hd95_undefined). std is the population std."
                ),
                "summary": self.summary,
                "mean_over_labels": self.mean_over_labels,
                "cases": list(per_case.values()),
                "missing_predictions": self.missing_predictions,
                "predictions_without_reference": self.predictions_without_reference,
                "not_predicted": self.not_predicted,
            }
        )

    def to_csv(self) -> str:
        """The content of ``metrics.csv``: one row per case x label (undefined HD95 -> ``inf``)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row[k]) for k in CSV_COLUMNS})
        return buf.getvalue()

    def to_markdown(self) -> str:
        """The content of ``summary.md``: a table with one row per label."""
        tol = f"{self.nsd_tolerance_mm:g}"
        lines = [
            "# VerSemi evaluation",
            "",
            f"- predictions: `{self.predictions_dir}`",
            f"- references: `{self.labels_dir}`",
            f"- cases: {len(self.cases)}; NSD tolerance: {tol} mm",
            "",
            f"| label | n | Dice | HD95 (mm) | NSD@{tol}mm | HD95 undefined | missed | false positive | both empty |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in self.summary.items():
            hd = _mean_std(s["hd95"], 2)
            if s["hd95_undefined"]:
                hd += f" (n={s['hd95_n']})"
            lines.append(
                f"| {name} | {s['n']} | {_mean_std(s['dice'], 3)} | {hd} | {_mean_std(s['nsd'], 3)} | "
                f"{s['hd95_undefined']} | {s['n_pred_empty']} | {s['n_ref_empty']} | {s['n_both_empty']} |"
            )
        overall = self.mean_over_labels
        if len(self.summary) > 1:
            lines.append(
                f"| **mean over labels** | | {_fmt(overall['dice'], 3)} | {_fmt(overall['hd95'], 2)} | "
                f"{_fmt(overall['nsd'], 3)} | | | | |"
            )
        lines += [
            "",
            "Values are mean ± std (population) over cases. Both masks empty counts as Dice 1, NSD 1, "
            "HD95 0; a missed structure (prediction empty) or a false positive one (reference empty) "
            "counts as Dice 0 and NSD 0, and its HD95 is undefined: HD95 is averaged over the other "
            "cases (n) and never as a zero distance.",
        ]
        if self.missing_predictions:
            lines += ["", f"Not evaluated, no prediction ({len(self.missing_predictions)}): "
                      + ", ".join(self.missing_predictions)]
        if self.not_predicted:
            lines += ["", "Labels not predicted (absent from the prediction's sidecar), not scored:"]
            lines += [f"- {case}: {', '.join(names)}" for case, names in self.not_predicted.items()]
        if self.predictions_without_reference:
            lines += ["", f"Ignored, no reference ({len(self.predictions_without_reference)}): "
                      + ", ".join(self.predictions_without_reference)]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | Path) -> dict[str, Path]:
        """Write ``metrics.csv``, ``metrics.json`` and ``summary.md`` into ``output_dir``.

        All three are written to temporary files first and then renamed, so a failure never leaves
        a partial file behind.

        Returns:
            File name -> written path.
        """
        out = Path(output_dir)
        contents = {
            "metrics.csv": self.to_csv(),
            "metrics.json": json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
            "summary.md": self.to_markdown(),
        }
        remove_stale_temp_files(out)  # left by a run that was killed
        with AtomicGroup() as group:
            for name, text in contents.items():
                group.write_text(text, out / name)
        return {name: out / name for name in contents}


# --- formatting helpers -------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "inf"
    return value


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_std(stats: Mapping[str, float | None], digits: int) -> str:
    if stats["mean"] is None:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


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
        image = read_image(path)
    except DatasetError as exc:
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

