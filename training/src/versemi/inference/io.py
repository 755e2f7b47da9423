"""Reading scans for prediction and writing its outputs atomically.

Input: one file SimpleITK reads (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, MetaImage
``.mha``/``.mhd``, ...) or a folder holding a DICOM series. Each input is checked before any work is
done: it must be a scalar 3D image with more than one voxel along every axis and no NaN voxels.

Outputs (see "Prediction outputs" in ``docs/DEVELOPMENT.md``): the labelmap, a JSON sidecar, a Slicer
colour table (``.ctbl``) and optional probability maps. :class:`AtomicOutputs` writes each to a
hidden temporary name in its target folder and renames all of them only when every one was written,
so a failure leaves no partial output behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import SimpleITK as sitk

# Extensions whose last two parts form the image extension.
_DOUBLE_EXTENSIONS = (".nii.gz", ".nrrd.gz", ".mha.gz")
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class InputImageError(ValueError):
    """A scan that cannot be used for prediction; the message names the file and the problem."""


def split_image_extension(path: str | Path) -> tuple[str, str]:
    """``"a/case.nii.gz"`` -> ``("a/case", ".nii.gz")``; handles the double ``.nii.gz`` ending."""
    text = str(path)
    lower = text.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lower.endswith(ext):
            return text[: -len(ext)], text[-len(ext):]
    root, ext = os.path.splitext(text)
    return root, ext


def sidecar_paths(output: str | Path) -> tuple[Path, Path]:
    """The JSON sidecar and ``.ctbl`` colour table that belong beside a labelmap path."""
    root, _ = split_image_extension(output)
    return Path(root + ".json"), Path(root + ".ctbl")


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series directly in ``folder``."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    uids = list_dicom_series(folder)
    if not uids:
        raise InputImageError(f"{folder}: folder holds no DICOM series (and is not an image file)")
    if series_uid is None:
        if len(uids) > 1:
            raise InputImageError(
                f"{folder}: folder holds {len(uids)} DICOM series; choose one with --series-uid "
                f"(available: {', '.join(uids)})"
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputImageError(
            f"{folder}: no DICOM series with UID {series_uid}; available: {', '.join(uids)}"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputImageError(f"{folder}: cannot read DICOM series {series_uid}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """ITK error messages run over many lines; the useful part is usually at the end."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_input_image(path: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Read a scan for prediction and check it (see :func:`validate_input_image`).

    Args:
        path: An image file, or a folder with a DICOM series.
        series_uid: Which DICOM series to read when the folder holds several.

    Raises:
        InputImageError: missing, empty, unreadable or unsuitable input; several DICOM series and no
            ``series_uid``.
    """
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path, series_uid)
    elif not path.exists():
        raise InputImageError(f"{path}: input image not found")
    else:
        if path.stat().st_size == 0:
            raise InputImageError(f"{path}: input image file is empty")
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise InputImageError(f"{path}: cannot read image (corrupt or unsupported file): {_first_line(exc)}") from exc
    validate_input_image(image, str(path))
    return image


def validate_input_image(image: sitk.Image, name: str = "input image") -> None:
    """Check that ``image`` can be segmented: scalar, 3D, >1 voxel per axis, finite values.

    Args:
        image: The scan.
        name: How to name it in error messages (usually its path).

    Raises:
        InputImageError: the first problem found.
    """
    dim = image.GetDimension()
    if dim != 3:
        raise InputImageError(f"{name}: a {dim}D image (size {list(image.GetSize())}); a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(
            f"{name}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); a scalar 3D volume is needed"
        )
    size = image.GetSize()
    if min(size) < 2:
        raise InputImageError(f"{name}: image of size {list(size)} is a single slice; a 3D volume is needed")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputImageError(f"{name}: invalid voxel spacing {list(spacing)}")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        # Check slab by slab so a large float volume needs no full-size boolean temporary.
        for z in range(0, array.shape[0], 16):
            if not np.isfinite(array[z : z + 16]).all():
                raise InputImageError(f"{name}: image contains NaN or infinite voxel values")


def copy_geometry(target: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Give ``target`` exactly the spacing, origin and direction of ``reference`` (same size)."""
    if target.GetSize() != reference.GetSize():
        raise ValueError(f"size {target.GetSize()} differs from the reference size {reference.GetSize()}")
    target.SetSpacing(reference.GetSpacing())
    target.SetOrigin(reference.GetOrigin())
    target.SetDirection(reference.GetDirection())
    return target


def colour_table_text(labels: Sequence[dict[str, Any]]) -> str:
    """A Slicer colour table (``.ctbl``): ``value name r g b a`` per line, 0 = background."""
    lines = ["# VerSemi label colours (Slicer colour table)", "0 background 0 0 0 0"]
    for entry in labels:
        r, g, b = (int(c) for c in entry["color"])
        name = str(entry["name"]).replace(" ", "_")
        lines.append(f"{int(entry['value'])} {name} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


class AtomicOutputs:
    """Writes a group of output files under temporary names and publishes them together.

    Usage::

        with AtomicOutputs() as out:
            out.write_image(labelmap, "case.nii.gz")
            out.write_text(text, "case.json")
        # all renamed here; on an exception every temporary file is removed

    Temporary files are hidden (``.name.XXXX.tmp<ext>``) and live in the target's folder so the final
    rename is atomic on one file system. Files are renamed in the order they were written; writers
    put the sidecar last, so a reader that sees the sidecar sees a complete prediction.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._created_dirs: list[Path] = []

    def _temp_path(self, target: Path) -> Path:
        if not target.parent.exists():
            # Remember the folders we create so a failure can remove them again.
            missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            self._created_dirs.extend(missing)  # deepest first
        _, ext = split_image_extension(target.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{ext}", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        self._pending.append((tmp_path, target))
        return tmp_path

    def write_image(self, image: sitk.Image, target: str | Path, compress: bool = True) -> Path:
        """Write an image (format from the target's extension) to a temporary name."""
        target = Path(target)
        tmp = self._temp_path(target)
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            raise OSError(f"{target}: cannot write image: {_first_line(exc)}") from exc
        return target

    def write_text(self, text: str, target: str | Path) -> Path:
        target = Path(target)
        tmp = self._temp_path(target)
        tmp.write_text(text, encoding="utf-8")
        return target

    def write_json(self, obj: Any, target: str | Path) -> Path:
        return self.write_text(json.dumps(obj, indent=2) + "\n", target)

    def commit(self) -> list[Path]:
        """Rename every temporary file to its target; returns the targets."""
        done = []
        for tmp, target in self._pending:
            os.replace(tmp, target)
            done.append(target)
        self._pending = []
        return done

    def discard(self) -> None:
        """Remove every temporary file (and folders this object created, if left empty)."""
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []
        for folder in self._created_dirs:
            try:
                folder.rmdir()
            except OSError:
                pass
        self._created_dirs = []

    def __enter__(self) -> "AtomicOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def find_images(folder: str | Path) -> list[tuple[str, Path]]:
    """The scans of a folder as ``(case name, path)``, sorted by case name.

    Understands an nnU-Net raw dataset (uses its ``imagesTr``; ``<case>_0000.<ext>`` -> ``<case>``;
    other channels are skipped), a flat folder of image files, and sub-folders that hold a DICOM
    series (case = sub-folder name).
    """
    folder = Path(folder)
    if (folder / "imagesTr").is_dir():
        folder = folder / "imagesTr"
    cases: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            root, ext = split_image_extension(entry.name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if len(root) > 5 and root[-5] == "_" and root[-4:].isdigit():
                if root[-4:] != "0000":
                    continue  # an extra channel of a multi-channel nnU-Net case
                root = root[:-5]
            cases.setdefault(root, entry)
        elif entry.is_dir() and list_dicom_series(entry):
            cases.setdefault(entry.name, entry)
    return sorted(cases.items())


def iter_slabs(depth: int, slab: int) -> Iterable[slice]:
    """Slices covering ``range(depth)`` in chunks of ``slab``."""
    for z in range(0, depth, slab):
        yield slice(z, min(z + slab, depth))
