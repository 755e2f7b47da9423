"""Checks of a scan before prediction, the scans of a folder, and small helpers of the outputs.

A scan is read with :func:`versemi.images.read_image` and must then be a scalar 3D image with more
than one voxel along every axis (:func:`validate_input_image`). The outputs are written together by
:class:`versemi.outputs.AtomicOutputs` (re-exported here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import SimpleITK as sitk

from versemi.images import IMAGE_EXTENSIONS, ImageFileError, list_dicom_series, nonfinite_count, split_image_extension
from versemi.outputs import COLOUR_TABLE_HEADER
from versemi.outputs import AtomicOutputs, sidecar_paths  # noqa: F401 - re-exported (io.AtomicOutputs, io.sidecar_paths)


def validate_input_image(image: sitk.Image, name: str = "input image", check_values: bool = True) -> None:
    """Check that ``image`` can be segmented: scalar, 3D, >1 voxel per axis, finite values.

    Args:
        image: The scan.
        name: How to name it in error messages (usually its path).
        check_values: Also check that every voxel is finite.

    Raises:
        ImageFileError: the first problem found.
    """
    dim = image.GetDimension()
    if dim != 3:
        raise ImageFileError(f"{name}: a {dim}D image (size {list(image.GetSize())}); a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageFileError(
            f"{name}: image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); a scalar 3D volume is needed"
        )
    size = image.GetSize()
    if min(size) < 2:
        raise ImageFileError(f"{name}: image of size {list(size)} is a single slice; a 3D volume is needed")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ImageFileError(f"{name}: invalid voxel spacing {list(spacing)}")
    if check_values:
        bad = nonfinite_count(image)  # slab by slab: no full-size boolean temporary
        if bad:
            raise ImageFileError(f"{name}: image contains NaN or infinite voxel values ({bad} voxel(s))")


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
    lines = [COLOUR_TABLE_HEADER, "0 background 0 0 0 0"]
    for entry in labels:
        r, g, b = (int(c) for c in entry["color"])
        name = str(entry["name"]).replace(" ", "_")
        lines.append(f"{int(entry['value'])} {name} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


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
        elif entry.is_dir():
            try:
                has_series = bool(list_dicom_series(entry))
            except ImageFileError:
                has_series = True  # a name ITK cannot open: listed, so that reading it fails with a line
            if has_series:
                cases.setdefault(entry.name, entry)
    return sorted(cases.items())


def iter_slabs(depth: int, slab: int) -> Iterable[slice]:
    """Slices covering ``range(depth)`` in chunks of ``slab``."""
    for z in range(0, depth, slab):
        yield slice(z, min(z + slab, depth))
