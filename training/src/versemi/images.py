"""The one image reader (:func:`read_image`, :func:`read_image_header`), its one exception
(:class:`ImageFileError`) and the registry of image file endings.

Every command reads scans and labels here, so a damaged file is refused the same way everywhere, in
one line naming the file and the problem: truncated or corrupt files (ITK fills a truncated NIfTI
voxel block with zeros and says nothing, so NIfTI voxel streams are read to their end first),
NaN/infinite voxels (ITK's NIfTI reader turns them into 0, so they are counted in that raw pass),
and DICOM series whose slices are not evenly spaced (ITK drops unreadable slices and averages the
spacing) unless ``allow_gaps``. Header facts and the grid rule are in :mod:`versemi.image_headers`;
writing images, and the checks of outputs, in :mod:`versemi.outputs`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import threading
import warnings
import zlib
from pathlib import Path
from typing import Iterator, Literal, Sequence, overload

import numpy as np
import SimpleITK as sitk

from versemi.data.memory import check_memory
from versemi.image_headers import ImageHeaderWarning, fmt_values, header_warnings, parse_nifti_header


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
    """An image file, DICOM folder or scan that cannot be used; the message names it and the problem."""


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
                header = parse_nifti_header(f.read(544))
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
def _check_file(path: Path, endings: Sequence[str] | None) -> None:
    """Refuse a missing path, a folder, an empty file, a symbolic-link loop, a name ITK cannot open
    or (``endings`` given) another file type, before a reader opens it."""
    problem = path_problem(path)
    if problem is not None:
        what = "image file not found" if problem.startswith("not found") else f"cannot open: {problem}"
        raise ImageFileError(f"{printable_path(path)}: {what}")
    if not path.is_file():
        raise ImageFileError(f"{printable_path(path)}: not a file")
    itk_path(path)
    if path.stat().st_size == 0:
        raise ImageFileError(f"{path}: image file is empty (0 bytes)")
    if endings is not None and split_image_extension(path.name)[1].lower() not in endings:
        raise ImageFileError(f"{path}: unsupported file type; use one of {', '.join(endings)}")


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


def _header_reader(path: Path) -> sitk.ImageFileReader:
    """An ITK reader after ``ReadImageInformation()`` (raises ITK's ``RuntimeError``)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(path))
    with quiet_itk():
        reader.ReadImageInformation()
    return reader


def _check_read_memory(path: Path) -> None:
    """Refuse ``path`` from its header, before any voxel is read, when its voxels do not fit in the
    memory limit (a header ITK cannot read is left to the reader, which says what is wrong).

    Raises:
        versemi.data.memory.MemoryLimitError: the voxels need more than the limit allows.
    """
    try:
        reader = _header_reader(path)
    except RuntimeError:
        return
    size = [int(n) for n in reader.GetSize()]
    voxel_bytes = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * 2, reader.GetPixelID())).dtype).itemsize
    need = float(np.prod(np.asarray(size, dtype=np.float64))) * voxel_bytes * max(reader.GetNumberOfComponents(), 1)
    check_memory(need, f"{path}: reading its {' x '.join(map(str, size))} voxels "
                       f"({sitk.GetPixelIDValueAsString(reader.GetPixelID())}) into memory",
                 "crop or downsample the scan, or run on a machine with more memory")


def _read_file(path: Path, endings: Sequence[str] | None) -> tuple[sitk.Image, int]:
    """One image file and its number of NaN/infinite voxels (see :func:`read_image`)."""
    _check_file(path, endings)
    _check_read_memory(path)
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
        warnings.warn(f"{path}: {note}", ImageHeaderWarning, stacklevel=3)
    return image, nifti_bad if nifti_bad is not None else nonfinite_count(image)


@overload
def read_image(path: str | Path, series_uid: str | None = None, *, allow_gaps: bool = False,
               allow_nonfinite: bool = False, count_nonfinite: Literal[False] = False,
               endings: Sequence[str] | None = None) -> sitk.Image: ...
@overload
def read_image(path: str | Path, series_uid: str | None = None, *, allow_gaps: bool = False,
               allow_nonfinite: bool = False, count_nonfinite: Literal[True],
               endings: Sequence[str] | None = None) -> tuple[sitk.Image, int]: ...
def read_image(
    path: str | Path,
    series_uid: str | None = None,
    *,
    allow_gaps: bool = False,
    allow_nonfinite: bool = False,
    count_nonfinite: bool = False,
    endings: Sequence[str] | None = None,
) -> sitk.Image | tuple[sitk.Image, int]:
    """Read an image file or a DICOM series folder, refusing damaged input (see the module docstring).

    The header is read first and the file refused, before any voxel is read, when its voxels do not
    fit in memory. Header oddities (:func:`versemi.image_headers.header_warnings`) are issued as
    :class:`~versemi.image_headers.ImageHeaderWarning`.

    Args:
        path: an image file (any format SimpleITK reads), or a folder with a DICOM series.
        series_uid: which DICOM series to read when the folder holds several.
        allow_gaps: read DICOM series with missing or unevenly spaced slices anyway.
        allow_nonfinite: return images with NaN/infinite voxels (ITK reads them from NIfTI as 0).
        count_nonfinite: allow them and return ``(image, number of NaN/infinite voxels in the file)``.
        endings: accept only files with one of these endings (a folder is then "not a file").

    Returns:
        The image, or ``(image, count)`` with ``count_nonfinite``.

    Raises:
        ImageFileError: the first problem found, in one line naming the file.
        versemi.data.memory.MemoryLimitError: its voxels need more memory than the limit allows.
    """
    path = Path(path)
    if endings is None and path.is_dir():
        image = _read_dicom_series(path, series_uid, allow_gaps)
        bad = nonfinite_count(image)
    else:
        image, bad = _read_file(path, endings)
    if count_nonfinite:
        return image, bad
    if bad and not allow_nonfinite:
        raise ImageFileError(f"{path}: image contains NaN or infinite voxel values ({bad} voxel(s))")
    return image


def read_image_header(path: str | Path, *, endings: Sequence[str] | None = None) -> sitk.ImageFileReader:
    """Read only an image file's header (size, spacing, origin, direction, pixel type), not its voxels.

    Args:
        path: the image file.
        endings: accept only files with one of these endings.

    Returns:
        The reader after ``ReadImageInformation()``: use ``GetSize()``, ``GetSpacing()``,
        ``GetOrigin()``, ``GetDirection()``, ``GetDimension()``, ``GetNumberOfComponents()``,
        ``GetPixelID()``.

    Raises:
        ImageFileError: missing, empty or unreadable file, or another ending than ``endings``.
    """
    path = Path(path)
    _check_file(path, endings)
    try:
        return _header_reader(path)
    except RuntimeError as exc:
        raise ImageFileError(f"{path}: cannot read image header: {itk_reason(exc)}") from None


# --- DICOM series ---------------------------------------------------------------------------------
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


def _check_dicom_slices(folder: Path, files: Sequence[str], series_uid: str) -> None:
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
                f"{fmt_values(orientation)}, {Path(name).name}: {fmt_values(o)}); it is not one volume"
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


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> tuple[str, list[str]]:
    """The series UID and its files in slice order (the order :func:`read_image` stacks them).

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


def _read_dicom_series(folder: Path, series_uid: str | None, allow_gaps: bool) -> sitk.Image:
    """One DICOM series of a folder, its slices checked first unless ``allow_gaps`` (ITK then averages
    the spacing); see :func:`read_image`."""
    series_uid, files = dicom_series_files(folder, series_uid)
    with quiet_itk():
        if not allow_gaps:
            _check_dicom_slices(folder, files, series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise ImageFileError(f"{folder}: cannot read DICOM series {series_uid}: {itk_reason(exc)}") from None


__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELMAP_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "PAIRED_EXTENSIONS",
    "TWO_D_EXTENSIONS",
    "ImageFileError",
    "dicom_series_files",
    "itk_path",
    "itk_reason",
    "list_dicom_series",
    "nonfinite_count",
    "path_problem",
    "printable_path",
    "quiet_itk",
    "read_image",
    "read_image_header",
    "scan_nifti",
    "split_image_extension",
]
