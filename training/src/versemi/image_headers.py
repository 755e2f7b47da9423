"""What an image's header says: NIfTI header fields, header oddities, and the grid rule.

Nothing here reads voxels or refuses a file: the reader (:mod:`versemi.images`) uses these facts to
refuse or warn, and ``check-dataset``, training's preprocessing, ``evaluate`` and ``review`` use the
one grid rule (:func:`grid_differences`: when two images share a voxel grid).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk

# float32 holds every integer exactly up to this magnitude; preprocessing computes in float32.
FLOAT32_EXACT_INTEGER = 2**24
_WIDE_INTEGER_IDS = (sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64)


class ImageHeaderWarning(UserWarning):
    """A header oddity the reader handles in a way the user should know about (named with the file)."""


def fmt_values(values: Iterable[float]) -> str:
    """``[1, 0.5, 2.25]``: numbers of a message, 4 significant digits."""
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# --- NIfTI ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a single-file NIfTI-1/2 header that the reader and the output checks use."""

    order: str  # "<" or ">"
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int
    pixdim: tuple[float, ...] | None = None  # voxel sizes of axes 1..7 (pixdim[1:])
    sform_code: int = 0
    srow: tuple[tuple[float, ...], ...] | None = None  # the sform's three rows (RAS, mm)

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) * self.bitpix // 8


def parse_nifti_header(head: bytes) -> NiftiHeader | None:
    """The fields of a single-file NIfTI-1/2 header needed to size its voxel block (None: not one)."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348 and head[344:347] == b"n+1":
            ndim = struct.unpack(order + "h", head[40:42])[0]
            if not 1 <= ndim <= 7:
                return None
            dims = struct.unpack(order + "7h", head[42:56])[:ndim]
            datatype, bitpix = struct.unpack(order + "hh", head[70:74])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            pixdim = struct.unpack(order + "8f", head[76:108])[1:]
            sform_code = struct.unpack(order + "h", head[254:256])[0]
            srow = tuple(struct.unpack(order + "4f", head[280 + 16 * i : 296 + 16 * i]) for i in range(3))
            return NiftiHeader(order, tuple(int(d) for d in dims), datatype, bitpix, max(offset, 352),
                               tuple(float(v) for v in pixdim), int(sform_code), srow)
        if size == 540 and len(head) >= 540 and head[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "hh", head[12:16])
            ndim = struct.unpack(order + "q", head[16:24])[0]
            if not 1 <= ndim <= 7:
                return None
            dims = struct.unpack(order + "7q", head[24:80])[:ndim]
            offset = struct.unpack(order + "q", head[168:176])[0]
            pixdim = struct.unpack(order + "8d", head[104:168])[1:]
            sform_code = struct.unpack(order + "i", head[348:352])[0]
            srow = tuple(struct.unpack(order + "4d", head[400 + 32 * i : 432 + 32 * i]) for i in range(3))
            return NiftiHeader(order, tuple(int(d) for d in dims), datatype, bitpix, max(int(offset), 544),
                               tuple(float(v) for v in pixdim), int(sform_code), srow)
    return None


def read_nifti_header(path: str | Path) -> NiftiHeader | None:
    """The header of a single-file NIfTI image (None: unreadable or not NIfTI-1/2); reads 544 bytes."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            return parse_nifti_header(f.read(544))
    except (OSError, EOFError, zlib.error):
        return None


def nifti_sform_problem(path: str | Path, image: sitk.Image) -> str | None:
    """Why a NIfTI file's sform would not survive being written back from ``image`` (None: it would).

    ITK ignores an sform it cannot express as rotation x voxel size (a sheared or non-orthogonal
    one, or one with other scales than ``pixdim``) and reads the qform; a labelmap written on that
    grid gets a different sform, so it no longer overlays the scan in sform-based viewers.
    """
    header = read_nifti_header(path)
    if header is None or header.sform_code <= 0 or header.srow is None or image.GetDimension() != 3:
        return None
    sform = np.asarray(header.srow, dtype=float)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    itk = np.hstack([lps_to_ras @ direction @ np.diag(spacing), (lps_to_ras @ np.asarray(image.GetOrigin()))[:, None]])
    tolerance = 1e-4 * max(float(spacing.max()), 1.0) + 1e-5 * float(np.abs(itk[:, 3]).max())
    if np.allclose(sform, itk, rtol=0.0, atol=tolerance):
        return None
    columns = sform[:, :3]
    norms = np.linalg.norm(columns, axis=0)
    unit = columns / np.where(norms > 0, norms, 1.0)
    why = ("sheared (its axes are not perpendicular)" if np.all(norms > 0) and not np.allclose(unit.T @ unit, np.eye(3), atol=1e-4)
           else "not the qform's rotation and voxel sizes")
    return (f"its NIfTI sform {fmt_values(sform.ravel())} is {why}, which the image library does not read (it uses the "
            "qform): an output would get a different sform and not overlay the scan in sform-based viewers")


def zero_spacing_axes(path: Path) -> list[str]:
    """The axes (``"x"``, ``"y"``, ``"z"``) whose NIfTI header spacing is 0 (ITK reads them as 1 mm)."""
    header = read_nifti_header(path)  # None for other formats
    if header is None or header.pixdim is None:
        return []
    return [axis for axis, s in zip("xyz", header.pixdim[: min(len(header.dims), 3)]) if s == 0.0]


def header_warnings(path: Path, image: sitk.Image) -> list[str]:
    """The header oddities of a file the reader accepted, one phrase each (empty: none).

    - a NIfTI spacing (``pixdim``) of 0 on an axis, which ITK reads as 1 mm;
    - integer intensities beyond float32's exact range (:data:`FLOAT32_EXACT_INTEGER`): preprocessing
      works in float32, where neighbouring values merge (uint32 values near 4e9 step by 256).
    """
    notes = []
    zero = zero_spacing_axes(path)
    if zero:
        read_as = ", ".join(f"{image.GetSpacing()['xyz'.index(a)]:g}" for a in zero)
        notes.append(f"header spacing of axis {', '.join(zero)} is 0, read as {read_as} mm (the image library's "
                     "default): distances, volumes and resampling assume that; fix the header")
    if image.GetPixelID() in _WIDE_INTEGER_IDS:
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(image)
        low, high = stats.GetMinimum(), stats.GetMaximum()
        largest = max(abs(low), abs(high))
        if largest > FLOAT32_EXACT_INTEGER:
            step = float(np.spacing(np.float32(largest)))
            notes.append(f"integer intensities up to {largest:.4g} ({image.GetPixelIDTypeAsString()}) exceed float32's "
                         f"exact range (2^24): preprocessing computes in float32, where values {step:g} apart merge, "
                         f"so the range {low:.10g}..{high:.10g} keeps about {max(int((high - low) / step), 0) + 1} distinct "
                         "levels and contrast may be lost; shift or rescale the intensities (e.g. subtract the minimum)")
    return notes


# --- grids ----------------------------------------------------------------------------------------
# THE grid-equality rule of versemi (check-dataset, training's preprocessing, evaluate, review): two
# images share one voxel grid when they have the same size and, within header float noise (NIfTI
# stores geometry as float32; Slicer converts RAS <-> LPS), the same spacing, origin and direction.
# Anything larger is a different grid, refused with the differences named: a label even 0.05 voxel
# off is a mismatched file, not rounding.
GRID_SPACING_RTOL = 1e-4  # relative difference of each voxel side
GRID_ORIGIN_VOXELS = 1e-3  # distance between the origins, as a fraction of the smallest voxel side
GRID_DIRECTION_ATOL = 1e-4  # absolute difference of each direction cosine


def _grid(image: object) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Size, spacing, origin and direction of a ``sitk.Image`` or a header-read ``sitk.ImageFileReader``."""
    return (
        tuple(int(n) for n in image.GetSize()),  # type: ignore[attr-defined]
        np.asarray(image.GetSpacing(), dtype=float),  # type: ignore[attr-defined]
        np.asarray(image.GetOrigin(), dtype=float),  # type: ignore[attr-defined]
        np.asarray(image.GetDirection(), dtype=float),  # type: ignore[attr-defined]
    )


def _fmt_grid(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def grid_differences(a: sitk.Image | sitk.ImageFileReader, b: sitk.Image | sitk.ImageFileReader) -> list[str]:
    """How the voxel grids of ``a`` and ``b`` differ: empty when they are the same grid.

    The one rule (module constants): same size (and dimension); each spacing within
    :data:`GRID_SPACING_RTOL` relative; the origins within :data:`GRID_ORIGIN_VOXELS` of the smallest
    voxel side of either image (a physical distance, so oblique grids are judged alike); each
    direction cosine within :data:`GRID_DIRECTION_ATOL`.

    Args:
        a, b: images, or readers after ``ReadImageInformation()`` (only the headers are needed).

    Returns:
        One phrase per difference, e.g. ``"origin (0, 0, 0) vs (0.05, 0, 0)"`` (values of ``a`` first).
    """
    size_a, spacing_a, origin_a, direction_a = _grid(a)
    size_b, spacing_b, origin_b, direction_b = _grid(b)
    if len(size_a) != len(size_b):
        return [f"dimension {len(size_a)} vs {len(size_b)}"]
    out = []
    if size_a != size_b:
        out.append(f"size {_fmt_grid(size_a)} vs {_fmt_grid(size_b)}")
    if np.any(np.abs(spacing_a - spacing_b) > GRID_SPACING_RTOL * np.maximum(np.abs(spacing_a), np.abs(spacing_b))):
        out.append(f"spacing {_fmt_grid(spacing_a)} vs {_fmt_grid(spacing_b)}")
    voxel = float(min(spacing_a.min(), spacing_b.min()))
    if float(np.linalg.norm(origin_a - origin_b)) > GRID_ORIGIN_VOXELS * voxel:
        out.append(f"origin {_fmt_grid(origin_a)} vs {_fmt_grid(origin_b)}")
    if np.any(np.abs(direction_a - direction_b) > GRID_DIRECTION_ATOL):
        out.append(f"direction {_fmt_grid(direction_a)} vs {_fmt_grid(direction_b)}")
    return out


__all__ = [
    "FLOAT32_EXACT_INTEGER",
    "GRID_DIRECTION_ATOL",
    "GRID_ORIGIN_VOXELS",
    "GRID_SPACING_RTOL",
    "ImageHeaderWarning",
    "NiftiHeader",
    "fmt_values",
    "grid_differences",
    "header_warnings",
    "nifti_sform_problem",
    "parse_nifti_header",
    "read_nifti_header",
    "zero_spacing_axes",
]
