"""The one image reader that refuses damaged files, the registry of image file endings, the grid rule.

Every command reads scans and labels through :func:`read_image` (``predict``, ``pseudolabel``,
``check-dataset``, ``evaluate``, ``train``'s preprocessing, ``review``), so a bad file is refused the
same way everywhere, with one line that names the file and the problem:

- **Truncated or corrupt files.** ITK's NIfTI reader fills a truncated voxel block with zeros and
  says nothing, so NIfTI files (``.nii``, ``.nii.gz``) are checked here first: the whole voxel stream
  is read (a ``.nii.gz`` is decompressed to its end, which also checks the gzip CRC) and the number of
  bytes is compared with what the header's dimensions and data type need. NRRD and MetaImage
  readers detect truncation themselves; their errors are shortened to one line.
- **NaN or infinite voxels**, in every format: ITK's NIfTI reader turns them into 0, so for NIfTI
  they are counted in the same raw pass; other formats keep them and the voxels are checked after
  reading.
- **DICOM series** with a missing, duplicate or unreadable slice, or uneven slice spacing: ITK drops
  unreadable slices and averages the spacing (a wrong grid). The slice positions along the slice
  normal must be evenly spaced; otherwise the series is refused with the positions of the gap,
  unless the caller passes ``allow_gaps=True`` (``--allow-gaps``).

Here too: the one registry of image file endings and the one grid rule (:func:`grid_differences`:
when two images share a voxel grid). Writing images, and the checks every output passes before any
work, are in :mod:`versemi.outputs`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk


# --- the one registry of image file endings (every module and the CLI take them from here) ------
# What the reader takes as an image file (a folder is a DICOM series), longest first.
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Single-file formats that keep a 3D labelmap and its geometry and can be replaced atomically: the
# labelmap outputs, a dataset's ``file_ending``, the files ``evaluate`` pairs.
LABELMAP_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
# Endings of two dots that os.path.splitext would cut in the middle.
_DOUBLE_EXTENSIONS = (".nii.gz", ".nrrd.gz", ".mha.gz")
# Formats an output cannot be: 2D only, or a header whose voxels go to a second file.
TWO_D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
PAIRED_EXTENSIONS = (".mhd", ".nhdr", ".hdr", ".img")
# Relative tolerance on the distance between neighbouring DICOM slices.
SLICE_SPACING_RTOL = 0.05
_READ_CHUNK = 4 * 1024 * 1024
# NIfTI datatype codes of floating-point voxels -> numpy type (NIfTI-1 and NIfTI-2 share them).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_FLOAT_PIXEL_IDS = (sitk.sitkFloat32, sitk.sitkFloat64)


class ImageFileError(ValueError):
    """An image file (or DICOM folder) that cannot be used; the message names it and the problem."""


def split_image_extension(path: str | Path) -> tuple[str, str]:
    """``"a/case.nii.gz"`` -> ``("a/case", ".nii.gz")``; handles the double ``.nii.gz`` ending."""
    text = str(path)
    lower = text.lower()
    for ext in _DOUBLE_EXTENSIONS:
        if lower.endswith(ext):
            return text[: -len(ext)], text[-len(ext):]
    root, ext = os.path.splitext(text)
    return root, ext


def itk_reason(exc: BaseException) -> str:
    """The informative line of an ITK error (they run over many lines, with source file names)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")]
    lines = [re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ", "", ln) for ln in lines]
    for ln in reversed(lines):
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    # MetaImage ends with the C library's errno, which is unrelated ("No such file or directory").
    while len(lines) > 1 and lines[-1].startswith("Reason:"):
        lines.pop()
    return lines[-1] if lines else type(exc).__name__


# --- paths handed to ITK ---------------------------------------------------------------------------
def printable_path(path: str | Path) -> str:
    """``path`` as text that can always be printed: bytes that are not UTF-8 shown as ``\\xff``."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def itk_path(path: str | Path) -> str:
    """``path`` as ITK takes it; ITK aborts the process on a name that is not valid UTF-8.

    Raises:
        ImageFileError: the name is not valid UTF-8 (it names the file, printably).
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageFileError(f"{printable_path(path)}: file name is not valid UTF-8, which the image library "
                             "cannot open; rename it") from None
    return text


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot even be looked at (a symbolic-link loop, no permission...), else None."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "not found" + (" (a symbolic link to a missing file)" if os.path.islink(path) else "")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it points back to itself)"
        return exc.strerror or str(exc)
    except ValueError as exc:  # an embedded NUL byte
        return str(exc)
    return None


# --- ITK warnings ---------------------------------------------------------------------------------
_warnings_lock = threading.Lock()
_warnings_depth = 0


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's multi-line warnings (printed on stderr) while reading: problems are reported
    by this module, in one line each. Re-entrant and safe with reader threads."""
    global _warnings_depth
    with _warnings_lock:
        if _warnings_depth == 0:
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
        _warnings_depth += 1
    try:
        yield
    finally:
        with _warnings_lock:
            _warnings_depth -= 1
            if _warnings_depth == 0:
                sitk.ProcessObject.SetGlobalWarningDisplay(True)


# --- NIfTI: the whole voxel stream ---------------------------------------------------------------
@dataclass(frozen=True)
class _NiftiHeader:
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


def _parse_nifti_header(head: bytes) -> _NiftiHeader | None:
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
            return _NiftiHeader(order, tuple(int(d) for d in dims), datatype, bitpix, max(offset, 352),
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
            return _NiftiHeader(order, tuple(int(d) for d in dims), datatype, bitpix, max(int(offset), 544),
                                tuple(float(v) for v in pixdim), int(sform_code), srow)
    return None


def read_nifti_header(path: str | Path) -> _NiftiHeader | None:
    """The header of a single-file NIfTI image (None: unreadable or not NIfTI-1/2); reads 544 bytes."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            return _parse_nifti_header(f.read(544))
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
    return (f"its NIfTI sform {_fmt(sform.ravel())} is {why}, which the image library does not read (it uses the "
            "qform): an output would get a different sform and not overlay the scan in sform-based viewers")


def scan_nifti(path: str | Path) -> int | None:
    """Read every voxel byte of a single-file NIfTI image and count its NaN/infinite voxels.

    A ``.nii.gz`` is decompressed to its end (so a truncated or corrupt stream, or a bad CRC, is
    found); an uncompressed ``.nii`` of an integer type only needs its size checked.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        The number of non-finite voxels (0 for integer types), or None when the file has no NIfTI
        header this function understands (an Analyze pair, garbage): ITK then reports the problem.

    Raises:
        ImageFileError: the voxel data is shorter than the header says, or the stream is corrupt.
    """
    path = Path(path)
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            try:
                header = _parse_nifti_header(f.read(544))
            except (EOFError, zlib.error, gzip.BadGzipFile):
                header = None  # not even a header: ITK says what the file is not
            if header is None:
                return None
            if any(d < 0 for d in header.dims) or header.bitpix <= 0:
                raise ImageFileError(f"{path}: NIfTI header has invalid dimensions {list(header.dims)}")
            need = header.data_bytes
            float_type = _NIFTI_FLOAT_TYPES.get(header.datatype)
            if not compressed and float_type is None:
                available = path.stat().st_size - header.offset
                if available < need:
                    raise _truncated(path, need, max(available, 0))
                return 0
            f.seek(header.offset)  # a gzip stream seeks by decompressing (backwards: from the start)
            dtype = np.dtype(header.order + float_type) if float_type else None
            got, bad, carry = 0, 0, b""
            while got < need:
                chunk = f.read(min(_READ_CHUNK, need - got))
                if not chunk:
                    break
                got += len(chunk)
                if dtype is not None:
                    data = carry + chunk
                    usable = len(data) - len(data) % dtype.itemsize
                    values = np.frombuffer(data, dtype=dtype, count=usable // dtype.itemsize)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = data[usable:]
            if got < need:
                raise _truncated(path, need, got)
            if compressed:
                while f.read(_READ_CHUNK):  # to the end: checks the gzip CRC and length
                    pass
            return bad
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ImageFileError(
            f"{path}: cannot read image: compressed data is truncated or corrupt ({exc}); copy or export it again"
        ) from None
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot read image: {exc.strerror or exc}") from None


def _truncated(path: Path, need: int, got: int) -> ImageFileError:
    return ImageFileError(
        f"{path}: cannot read image: file is truncated: its header describes {need} bytes of voxel data "
        f"but the file holds {got} ({100.0 * got / need if need else 0:.1f}%); copy or export it again"
    )


# --- reading --------------------------------------------------------------------------------------
def check_image_file(path: Path) -> None:
    """Refuse a missing path, a folder, an empty file, a symbolic-link loop or a name ITK cannot open
    before a reader opens it (one line naming it).

    Raises:
        ImageFileError: not found, not a file, empty, unreachable, or a name that is not UTF-8.
    """
    problem = path_problem(path)
    if problem is not None:
        what = "image file not found" if problem.startswith("not found") else f"cannot open: {problem}"
        raise ImageFileError(f"{printable_path(path)}: {what}")
    if not path.is_file():
        raise ImageFileError(f"{printable_path(path)}: not a file")
    itk_path(path)
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: image file is empty (0 bytes)")


def nonfinite_count(image: sitk.Image) -> int:
    """NaN/infinite voxels of an image in memory (0 for integer pixel types), slab by slab."""
    if image.GetPixelID() not in _FLOAT_PIXEL_IDS:
        return 0
    array = sitk.GetArrayViewFromImage(image)
    flat = array.reshape(-1) if array.ndim < 2 else array.reshape(array.shape[0], -1)
    bad = 0
    for start in range(0, flat.shape[0], 16):
        block = flat[start : start + 16]
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    return bad


class ImageHeaderWarning(UserWarning):
    """A header oddity the reader handles in a way the user should know about (named with the file)."""


def check_read_memory(path: Path) -> None:
    """Read only the header of ``path`` and refuse it, before any voxel is read, when its voxels do
    not fit in the memory limit (:func:`versemi.data.memory.check_memory`). A header ITK cannot
    read is left to the reader, which says what is wrong with the file.

    Raises:
        versemi.data.memory.MemoryLimitError: the voxels need more than the limit allows.
    """
    from versemi.data.memory import check_memory

    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        return
    size = [int(n) for n in reader.GetSize()]
    voxel_bytes = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * 2, reader.GetPixelID())).dtype).itemsize
    need = float(np.prod(np.asarray(size, dtype=np.float64))) * voxel_bytes * max(reader.GetNumberOfComponents(), 1)
    check_memory(need, f"{path}: reading its {' x '.join(map(str, size))} voxels "
                       f"({sitk.GetPixelIDValueAsString(reader.GetPixelID())}) into memory",
                 "crop or downsample the scan, or run on a machine with more memory")
    return reader


# float32 holds every integer exactly up to this magnitude; preprocessing computes in float32.
FLOAT32_EXACT_INTEGER = 2**24
_WIDE_INTEGER_IDS = (sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64)


def zero_spacing_axes(path: Path) -> list[str]:
    """The axes (``"x"``, ``"y"``, ``"z"``) whose NIfTI header spacing is 0 (ITK reads them as 1 mm)."""
    header = read_nifti_header(path) if path.name.lower().endswith(NIFTI_EXTENSIONS) else None
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


def read_image_counting(path: str | Path) -> tuple[sitk.Image, int]:
    """Read one image file, refusing truncated and corrupt files, and count its NaN/infinite voxels.

    The header is read first and the file refused, before any voxel is read, when its voxels do not
    fit in memory. Header oddities (:func:`header_warnings`) are issued as :class:`ImageHeaderWarning`.

    Args:
        path: the file (any format SimpleITK reads).

    Returns:
        The image (ITK reads NaN/Inf from NIfTI as 0) and the number of non-finite voxels in the file.

    Raises:
        ImageFileError: missing, empty, truncated, corrupt or unreadable file.
        versemi.data.memory.MemoryLimitError: its voxels need more memory than the limit allows.
    """
    path = Path(path)
    check_image_file(path)
    check_read_memory(path)
    nifti_bad = scan_nifti(path) if path.name.lower().endswith(NIFTI_EXTENSIONS) else None
    try:
        with quiet_itk():
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = itk_reason(exc)
        if "allocate" in reason.lower() or "bad_alloc" in reason.lower():
            raise ImageFileError(f"{path}: not enough memory to read the image: {reason}") from None
        raise ImageFileError(
            f"{path}: cannot read image (truncated, corrupt or unsupported file): {reason}"
        ) from None
    for note in header_warnings(path, image):
        warnings.warn(f"{path}: {note}", ImageHeaderWarning, stacklevel=2)
    return image, nifti_bad if nifti_bad is not None else nonfinite_count(image)


def read_image_file(path: str | Path, *, allow_nonfinite: bool = False) -> sitk.Image:
    """Read one image file, refusing truncated, corrupt and (unless allowed) NaN/Inf files.

    Args:
        path: the file (any format SimpleITK reads).
        allow_nonfinite: return images with NaN/infinite voxels (ITK reads them from NIfTI as 0).

    Raises:
        ImageFileError: missing, empty, truncated, corrupt or unreadable file; non-finite voxels.
    """
    path = Path(path)
    image, bad = read_image_counting(path)
    if bad and not allow_nonfinite:
        raise _nonfinite_error(path, bad)
    return image


def _nonfinite_error(path: Path | str, count: int) -> ImageFileError:
    return ImageFileError(f"{path}: image contains NaN or infinite voxel values ({count} voxel(s))")


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM series directly in ``folder``."""
    with quiet_itk():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(itk_path(folder)) or [])


def _slice_geometry(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImagePositionPatient, ImageOrientationPatient) of one DICOM file, None if it lacks them."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.SetImageIO("GDCMImageIO")
    reader.ReadImageInformation()
    try:
        position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        orientation = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
    except (RuntimeError, ValueError):
        return None
    if position.size != 3 or orientation.size != 6:
        return None
    return position, orientation


def check_dicom_slices(folder: Path, files: Sequence[str], series_uid: str) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (see the module docstring).

    Raises:
        ImageFileError: unreadable slice header, slices with different orientations, two slices at
            one position, or a gap / uneven spacing, naming the positions (mm along the normal).
    """
    if len(files) < 2:
        return
    geometry = []
    for name in files:
        try:
            found = _slice_geometry(name)
        except RuntimeError as exc:
            raise ImageFileError(f"{folder}: cannot read DICOM slice {Path(name).name}: {itk_reason(exc)}") from None
        if found is None:
            return  # no position tags (e.g. a single multi-frame file): ITK's own geometry is all there is
        geometry.append(found)
    orientation = geometry[0][1]
    for name, (_, o) in zip(files, geometry):
        if not np.allclose(o, orientation, atol=1e-3):
            raise ImageFileError(
                f"{folder}: DICOM series {series_uid} mixes slice orientations ({Path(files[0]).name}: "
                f"{_fmt(orientation)}, {Path(name).name}: {_fmt(o)}); it is not one volume"
            )
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([float(np.dot(p, normal)) for p, _ in geometry])
    order = np.argsort(positions, kind="stable")
    pos = positions[order]
    names = [Path(files[i]).name for i in order]
    steps = np.diff(pos)
    typical = float(np.median(steps))
    tol = max(SLICE_SPACING_RTOL * abs(typical), 1e-3)
    for k, step in enumerate(steps):
        if abs(step) < tol:
            raise ImageFileError(
                f"{folder}: DICOM series {series_uid} has two slices at position {pos[k]:.3f} mm "
                f"({names[k]}, {names[k + 1]}): duplicate slices; remove one, or pass --allow-gaps to read it anyway"
            )
    uneven = [k for k, step in enumerate(steps) if abs(step - typical) > tol]
    if uneven:
        k = uneven[0]
        missing = steps[k] / typical - 1 if typical > 0 else 0.0
        what = (f"about {round(missing)} slice(s) missing" if missing > 0.5
                else "uneven slice spacing")
        raise ImageFileError(
            f"{folder}: DICOM series {series_uid}: {what} between positions {pos[k]:.3f} and "
            f"{pos[k + 1]:.3f} mm ({names[k]}, {names[k + 1]}: {steps[k]:.4g} mm apart, "
            f"{typical:.4g} mm elsewhere; {len(uneven)} uneven step(s) in {len(files)} slices)"
            + _unlisted_files_note(folder, files)
            + "; restore the slice, or pass --allow-gaps to read it with an averaged spacing"
        )


def _unlisted_files_note(folder: Path, files: Sequence[str]) -> str:
    """Names of files in the folder that are in no readable DICOM series (a corrupt slice?)."""
    listed = {Path(f).name for f in files}
    others = []
    for uid in list_dicom_series(folder):
        with quiet_itk():
            listed |= {Path(f).name for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and not entry.name.startswith(".") and entry.name not in listed:
            others.append(entry.name)
    if not others:
        return ""
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return f"; unreadable file(s) in the folder: {shown}"


def _fmt(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> tuple[str, list[str]]:
    """The series UID and its files in slice order (the order :func:`read_dicom_series` stacks them).

    Raises:
        ImageFileError: no series, several series and no ``series_uid``, or an unknown UID.
    """
    folder = Path(folder)
    uids = list_dicom_series(folder)
    if not uids:
        raise ImageFileError(f"{folder}: folder holds no DICOM series (and is not an image file)")
    if series_uid is None:
        if len(uids) > 1:
            raise ImageFileError(
                f"{folder}: folder holds {len(uids)} DICOM series; choose one with --series-uid "
                f"(available: {', '.join(uids)})"
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise ImageFileError(f"{folder}: no DICOM series with UID {series_uid}; available: {', '.join(uids)}")
    with quiet_itk():
        return series_uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *, allow_gaps: bool = False) -> sitk.Image:
    """Read one DICOM series of a folder after checking its slices (see :func:`check_dicom_slices`).

    Args:
        folder: the folder holding the series files.
        series_uid: the series to read when the folder holds several.
        allow_gaps: read a series with missing/duplicate slices or uneven spacing anyway (ITK then
            averages the spacing).

    Raises:
        ImageFileError: no series, several series and no ``series_uid``, an unknown UID, a series
            whose slices are not evenly spaced, unreadable files, or NaN voxels.
    """
    folder = Path(folder)
    series_uid, files = dicom_series_files(folder, series_uid)
    with quiet_itk():
        if not allow_gaps:
            check_dicom_slices(folder, files, series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise ImageFileError(f"{folder}: cannot read DICOM series {series_uid}: {itk_reason(exc)}") from None
    bad = nonfinite_count(image)
    if bad:
        raise _nonfinite_error(folder, bad)
    return image


def read_image(
    path: str | Path,
    series_uid: str | None = None,
    *,
    allow_gaps: bool = False,
    allow_nonfinite: bool = False,
) -> sitk.Image:
    """Read an image file or a DICOM series folder, refusing damaged input (see the module docstring).

    Args:
        path: an image file, or a folder with a DICOM series.
        series_uid: which DICOM series to read when the folder holds several.
        allow_gaps: read DICOM series with missing or unevenly spaced slices anyway.
        allow_nonfinite: return files with NaN/infinite voxels (callers that count them).

    Raises:
        ImageFileError: the first problem found, in one line naming the file.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid, allow_gaps=allow_gaps)
    return read_image_file(path, allow_nonfinite=allow_nonfinite)


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
    "GRID_DIRECTION_ATOL",
    "GRID_ORIGIN_VOXELS",
    "GRID_SPACING_RTOL",
    "IMAGE_EXTENSIONS",
    "dicom_series_files",
    "LABELMAP_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "PAIRED_EXTENSIONS",
    "TWO_D_EXTENSIONS",
    "FLOAT32_EXACT_INTEGER",
    "ImageFileError",
    "ImageHeaderWarning",
    "check_dicom_slices",
    "check_image_file",
    "check_read_memory",
    "header_warnings",
    "itk_path",
    "nifti_sform_problem",
    "path_problem",
    "printable_path",
    "read_nifti_header",
    "zero_spacing_axes",
    "grid_differences",
    "itk_reason",
    "list_dicom_series",
    "nonfinite_count",
    "quiet_itk",
    "read_dicom_series",
    "read_image",
    "read_image_counting",
    "read_image_file",
    "scan_nifti",
    "split_image_extension",
]
