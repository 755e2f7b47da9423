"""Validation of an nnU-Net v2 raw dataset folder (behind ``versemi check-dataset``).

:func:`check_dataset` reports every problem it finds in one pass, each naming the file, instead of
stopping at the first: a user fixing a dataset wants the whole list. Every file's voxels are read
exactly once (that is what catches truncated files, NaN/Inf voxels and undeclared label values);
cases are checked in a few threads because SimpleITK decodes files without holding the GIL.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.dataset import (
    REQUIRED_DATASET_JSON_KEYS,
    SUPPORTED_ENDINGS,
    split_ending,
)
from versemi.image_headers import grid_differences, zero_spacing_axes
from versemi.images import NIFTI_EXTENSIONS, ImageFileError, read_image, read_image_header, scan_nifti

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

@dataclass(frozen=True)
class Problem:
    """One finding: ``severity`` is ``"error"`` (unusable for training) or ``"warning"``."""

    severity: Severity
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "path": str(self.path), "message": self.message}


@dataclass
class _Geometry:
    """What the checks need of an image or a header; its grid is compared with
    :func:`versemi.images.grid_differences` (through the ``Get*`` accessors below)."""

    dimension: int
    components: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_id: int

    @classmethod
    def of_header(cls, r: sitk.ImageFileReader) -> "_Geometry":
        return cls(r.GetDimension(), r.GetNumberOfComponents(), r.GetSize(), r.GetSpacing(),
                   r.GetOrigin(), r.GetDirection(), r.GetPixelID())

    @classmethod
    def of_image(cls, im: sitk.Image) -> "_Geometry":
        return cls(im.GetDimension(), im.GetNumberOfComponentsPerPixel(), im.GetSize(), im.GetSpacing(),
                   im.GetOrigin(), im.GetDirection(), im.GetPixelID())

    def GetSize(self) -> tuple[int, ...]:  # noqa: N802 - the SimpleITK accessor names
        return self.size

    def GetSpacing(self) -> tuple[float, ...]:  # noqa: N802
        return self.spacing

    def GetOrigin(self) -> tuple[float, ...]:  # noqa: N802
        return self.origin

    def GetDirection(self) -> tuple[float, ...]:  # noqa: N802
        return self.direction


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


# --- dataset.json ----------------------------------------------------------------------------------
@dataclass
class _JsonFacts:
    """What the file checks need from dataset.json (``None`` where it could not be determined)."""

    file_ending: str | None = None
    num_channels: int | None = None
    label_values: set[int] | None = None
    num_training: int | None = None


def _check_dataset_json(path: Path, problems: list[Problem]) -> _JsonFacts:
    facts = _JsonFacts()

    def error(msg: str) -> None:
        problems.append(Problem(ERROR, path, msg))

    if not path.is_file():
        error("dataset.json not found (required: channel_names, labels, numTraining, file_ending)")
        return facts
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        error(f"invalid JSON: {exc}")
        return facts
    if not isinstance(data, dict):
        error("must be a JSON object")
        return facts
    missing = [k for k in REQUIRED_DATASET_JSON_KEYS if k not in data]
    if missing:
        error(f"missing required key(s): {', '.join(missing)}")

    if "file_ending" in data:
        if data["file_ending"] in SUPPORTED_ENDINGS:
            facts.file_ending = data["file_ending"]
        else:
            error(f"file_ending {data['file_ending']!r} is not supported; "
                  f"use one of {', '.join(SUPPORTED_ENDINGS)}")

    if "channel_names" in data:
        ch = data["channel_names"]
        if not isinstance(ch, dict) or not ch:
            error("channel_names must be a non-empty object, e.g. {\"0\": \"CT\"}")
        else:
            keys = sorted(ch)
            expected = [str(i) for i in range(len(ch))]
            if sorted(keys, key=lambda k: (len(k), k)) != expected:
                error(f"channel_names keys must be \"0\"..\"{len(ch) - 1}\", got {keys}")
            else:
                facts.num_channels = len(ch)

    if "labels" in data:
        labels = data["labels"]
        if not isinstance(labels, dict) or not labels:
            error("labels must be a non-empty object mapping label name -> integer value")
        else:
            bad = {k: v for k, v in labels.items() if isinstance(v, bool) or not isinstance(v, int)}
            if bad:
                error(f"label values must be integers (region labels as lists are not supported): {bad}")
            values = [v for v in labels.values() if not isinstance(v, bool) and isinstance(v, int)]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                error(f"several labels share the value(s) {dupes}")
            if 0 not in values:
                error("labels must declare background with value 0, e.g. \"background\": 0")
            negative = sorted(v for v in values if v < 0)
            if negative:
                error(f"negative label values {negative}")
            if not bad:
                facts.label_values = set(values) | {0}

    if "numTraining" in data:
        n = data["numTraining"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            error(f"numTraining must be a non-negative integer, got {n!r}")
        else:
            facts.num_training = n
    return facts


def _infer_file_ending(folder: Path) -> str | None:
    """The most common supported ending in a folder (used when dataset.json cannot tell)."""
    counts: dict[str, int] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            split = split_ending(p)
            if split:
                counts[split[1].lower()] = counts.get(split[1].lower(), 0) + 1
    return max(counts, key=lambda e: counts[e]) if counts else None


# --- per case -------------------------------------------------------------------------------------
def _nonfinite_count(path: Path) -> int:
    """NaN/Inf voxels of an image file, reading every voxel once (so truncated or corrupt data is caught).

    NIfTI files are counted from their raw voxel stream (ITK's NIfTI reader turns NaN and Inf into 0
    and fills truncated files with zeros, see :func:`versemi.images.scan_nifti`); other formats are
    read with the one checking reader.

    Raises:
        ImageFileError: the voxels cannot be read (truncated, corrupt or unreadable file).
    """
    if path.name.lower().endswith(NIFTI_EXTENSIONS):
        raw = scan_nifti(path)
        if raw is not None:
            return raw
    return read_image(path, count_nonfinite=True)[1]


def _label_values(arr: np.ndarray) -> np.ndarray:
    """Distinct values of an integer label array; bincount is far faster than unique for small labels."""
    flat = arr.ravel()
    if flat.size and np.issubdtype(flat.dtype, np.integer):
        lo, hi = int(flat.min()), int(flat.max())
        if lo >= 0 and hi < 1 << 16:
            return np.flatnonzero(np.bincount(flat, minlength=hi + 1))
    return np.unique(flat)


def _check_image_header(path: Path, geom: _Geometry, what: str) -> list[Problem]:
    out = []
    if geom.dimension != 3:
        out.append(Problem(ERROR, path, f"{what} is {geom.dimension}D (size {_fmt(geom.size)}); "
                                        "expected a 3D image"))
    if geom.components != 1:
        out.append(Problem(ERROR, path, f"{what} has {geom.components} components per voxel "
                                        "(vector/RGB image); expected one scalar per voxel"))
    return out


def _check_case(
    case_id: str,
    image_paths: Sequence[Path],
    label_path: Path | None,
    label_values: set[int] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    reference: tuple[Path, _Geometry] | None = None  # channel 0 when usable
    for channel, path in enumerate(image_paths):
        try:
            header = _Geometry.of_header(read_image_header(path))
        except ImageFileError as exc:
            problems.append(Problem(ERROR, path, str(exc).removeprefix(f"{path}: ")))
            continue
        header_problems = _check_image_header(path, header, "image")
        problems += header_problems
        zero = zero_spacing_axes(path)
        if zero:
            read_as = ", ".join(f"{header.GetSpacing()['xyz'.index(a)]:g}" for a in zero)
            problems.append(Problem(WARNING, path, f"header spacing of axis {', '.join(zero)} is 0, read as "
                                                   f"{read_as} mm (the image library's default); fix the header"))
        if header.components == 1:
            try:
                bad = _nonfinite_count(path)
            except ImageFileError as exc:
                problems.append(Problem(ERROR, path, str(exc).removeprefix(f"{path}: ")))
                continue
            if bad:
                problems.append(Problem(ERROR, path, f"{bad} voxel(s) are NaN or infinite"))
        if header_problems:
            continue
        if reference is None and channel == 0:
            reference = (path, header)
        elif reference is not None:
            diffs = grid_differences(reference[1], header)
            if diffs:
                problems.append(Problem(ERROR, path, f"geometry differs from channel 0 {reference[0].name}: "
                                                     + "; ".join(diffs)))

    if label_path is None:
        return problems
    try:
        label, bad_label_voxels = read_image(label_path, count_nonfinite=True)
    except ImageFileError as exc:
        return problems + [Problem(ERROR, label_path, str(exc).removeprefix(f"{label_path}: "))]
    geom = _Geometry.of_image(label)
    header_problems = _check_image_header(label_path, geom, "label")
    problems += header_problems
    if header_problems:
        return problems
    if reference is not None:
        diffs = grid_differences(reference[1], geom)
        if diffs:
            problems.append(Problem(ERROR, label_path, f"label geometry differs from image "
                                                       f"{reference[0].name}: " + "; ".join(diffs)))
    arr = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(arr.dtype, np.floating) or bad_label_voxels:
        if bad_label_voxels:
            problems.append(Problem(ERROR, label_path, f"{bad_label_voxels} label voxel(s) are NaN or infinite"))
            return problems
        if not np.array_equal(arr, np.round(arr)):
            problems.append(Problem(ERROR, label_path, "label has non-integer values; "
                                                       "labels must be integers"))
            return problems
    values = [int(v) for v in _label_values(arr)]
    if label_values is not None:
        undeclared = [v for v in values if v not in label_values]
        if undeclared:
            problems.append(Problem(ERROR, label_path,
                                    f"label values {undeclared} are not declared in dataset.json "
                                    f"labels (declared: {sorted(label_values)})"))
    if all(v == 0 for v in values):
        problems.append(Problem(WARNING, label_path, "label is empty (background only)"))
    return problems


# --- the whole folder -----------------------------------------------------------------------------
def check_dataset(
    root: str | Path,
    workers: int | None = None,
) -> list[Problem]:
    """Check an nnU-Net v2 raw dataset folder and return every problem found.

    Checked: ``dataset.json`` (present, valid JSON, required keys, label values, file ending);
    ``imagesTr``/``labelsTr`` present; every image has a label and every label an image; every
    channel file in ``channel_names`` exists; images and labels are 3D with one component per voxel;
    channels and labels share the channel-0 grid (:func:`versemi.images.grid_differences`: the
    rule training's preprocessing and ``evaluate`` apply too); no NaN/Inf voxels; label values are declared in ``dataset.json``; labels are not
    empty (warning); ``numTraining`` matches the number of cases (warning); stray files (warning).

    Args:
        root: the dataset folder.
        workers: threads reading files (default: up to 4, bounded by the CPU count).

    Returns:
        The problems, dataset-level first, then per case in case-id order; empty when all is well.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        return [Problem(ERROR, root, "dataset folder not found")]
    problems: list[Problem] = []
    facts = _check_dataset_json(root / "dataset.json", problems)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            problems.append(Problem(ERROR, folder, "folder not found"))

    ending = facts.file_ending or _infer_file_ending(images_dir) or ".nii.gz"
    stray = f"ignored: not a {ending} file (dataset.json file_ending)"

    # imagesTr: <case>_<4-digit channel><ending>
    channel_files: dict[str, dict[int, Path]] = {}
    for path in sorted(images_dir.iterdir()) if images_dir.is_dir() else []:
        if path.name.startswith("."):
            continue
        if not path.name.endswith(ending):
            problems.append(Problem(WARNING, path, stray))
            continue
        stem = path.name[: -len(ending)]
        case_id, _, channel = stem.rpartition("_")
        if not case_id or len(channel) != 4 or not channel.isdigit():
            problems.append(Problem(ERROR, path, f"image name must be <case>_<4-digit channel>{ending}, "
                                                 f"e.g. {stem}_0000{ending}"))
            continue
        channel_files.setdefault(case_id, {})[int(channel)] = path

    label_files: dict[str, Path] = {}
    for path in sorted(labels_dir.iterdir()) if labels_dir.is_dir() else []:
        if path.name.startswith("."):
            continue
        if not path.name.endswith(ending) or len(path.name) == len(ending):
            problems.append(Problem(WARNING, path, stray))
            continue
        label_files[path.name[: -len(ending)]] = path

    num_channels = facts.num_channels or 1
    cases: list[tuple[str, list[Path], Path | None]] = []
    for case_id in sorted(set(channel_files) | set(label_files)):
        present = channel_files.get(case_id, {})
        if not present:
            problems.append(Problem(ERROR, label_files[case_id],
                                    f"label has no image: expected imagesTr/{case_id}_0000{ending}"))
            continue
        for c in sorted(present):
            if c >= num_channels:
                problems.append(Problem(ERROR, present[c], f"channel {c} is not declared in dataset.json "
                                                           f"channel_names ({num_channels} channel(s))"))
        paths = []
        for c in range(num_channels):
            if c in present:
                paths.append(present[c])
            else:
                problems.append(Problem(ERROR, images_dir / f"{case_id}_{c:04d}{ending}",
                                        f"missing channel {c} file of case {case_id}"))
        label = label_files.get(case_id)
        if label is None and labels_dir.is_dir():
            problems.append(Problem(ERROR, present[min(present)],
                                    f"image has no label: expected labelsTr/{case_id}{ending}"))
        cases.append((case_id, paths, label))

    num_cases = sum(1 for cid in channel_files if channel_files[cid])
    if facts.num_training is not None and facts.num_training != num_cases:
        problems.append(Problem(WARNING, root / "dataset.json",
                                f"numTraining is {facts.num_training} but imagesTr has {num_cases} case(s)"))
    if images_dir.is_dir() and num_cases == 0:
        problems.append(Problem(ERROR, images_dir, f"no images named <case>_0000{ending}"))

    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
        per_case = pool.map(lambda c: _check_case(c[0], c[1], c[2], facts.label_values), cases)
        for found in per_case:
            problems.extend(found)
    return problems


def summarize(problems: Sequence[Problem]) -> tuple[int, int]:
    """(number of errors, number of warnings)."""
    errors = sum(p.severity == ERROR for p in problems)
    return errors, len(problems) - errors
