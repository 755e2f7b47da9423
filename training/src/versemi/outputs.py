"""What every command writes: the checks each output passes before any work, and the image writer.

- :func:`check_output_paths`, :func:`check_output_geometry`: refuse, before any work, an output whose
  format cannot hold a 3D labelmap with its geometry, that would overwrite an input, or that two
  outputs of one run share;
- :func:`check_overwrite`: never replace a file versemi did not write, unless asked (``--overwrite``);
- :class:`AtomicOutputs`: images, sidecars and colour tables published together;
- :func:`sidecar_paths`: the names of a labelmap's sidecar and colour table.

Each refusal and its reason: docs/REFUSALS.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.fileio import AtomicGroup, retarget_error
from versemi.image_headers import nifti_sform_problem, read_nifti_header
from versemi.images import (
    LABELMAP_EXTENSIONS,
    NIFTI_EXTENSIONS,
    PAIRED_EXTENSIONS,
    TWO_D_EXTENSIONS,
    ImageFileError,
    itk_path,
    itk_reason,
    printable_path,
    quiet_itk,
    scan_nifti,
    split_image_extension,
)

# The first line of every colour table versemi writes (how it recognises its own).
COLOUR_TABLE_HEADER = "# VerSemi label colours (Slicer colour table)"
# |D^T D - I| above this: a sheared (non-orthonormal) direction matrix.
ORTHONORMAL_ATOL = 1e-4


def _fmt(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


class OutputPathError(ValueError):
    """An output path that would lose data or geometry; the message names it and says what to do."""


def sidecar_paths(labelmap: str | Path) -> tuple[Path, Path]:
    """The JSON sidecar and ``.ctbl`` colour table that belong beside a labelmap: its image ending
    replaced (``seg.nii.gz`` -> ``seg.json``, ``seg.ctbl``)."""
    root, _ = split_image_extension(labelmap)
    return Path(root + ".json"), Path(root + ".ctbl")


class AtomicOutputs(AtomicGroup):
    """The image writer: a group of output files written under temporary names, published together.

    Usage::

        with AtomicOutputs() as out:
            out.check_writable([labelmap_path, sidecar_path])  # before the long work
            out.write_image(labelmap, "case.nii.gz")
            out.write_text(text, "case.json")
        # all renamed here; on an exception every temporary file is removed

    Temporary files are hidden (``.name.<pid>-XXXX.tmp<ext>``, see :mod:`versemi.fileio`) and live
    in the target's folder so the final rename is atomic on one file system. Files are renamed in the
    order they were written; writers put the sidecar last, so a reader that sees the sidecar sees a
    complete prediction. Errors name the target, never the temporary file.
    """

    def write_image(self, image: sitk.Image, target: str | Path, compress: bool = True) -> Path:
        """Write an image (format from the target's extension) to a temporary name, then read the
        file back to check that every voxel reached the disk (:func:`check_written_image`).

        Raises:
            OSError: the image cannot be written, or the written file is short (disk full, file-size
                limit); the error names ``target``.
        """
        target = Path(target)
        _, ext = split_image_extension(target.name)
        tmp = self.temp_for(target, suffix=ext)
        with native_stderr_collected() as noise:  # the NIfTI library prints its write errors on fd 2
            try:
                sitk.WriteImage(image, itk_path(tmp), useCompression=compress)
            except RuntimeError as exc:
                reason = itk_reason(exc).replace(str(tmp), str(target)).replace(tmp.name, target.name)
                raise OSError(f"{target}: cannot write image: {reason}") from None
            except OSError as exc:
                raise retarget_error(exc, target) from None
        check_written_image(tmp, target, image)  # a failure says it in one line: the noise is dropped
        if noise:
            sys.stderr.write("".join(noise))
        return target


@contextlib.contextmanager
def native_stderr_collected() -> Iterator[list[str]]:
    """Within the block, what C/C++ code prints on file descriptor 2 is collected, not shown: the
    list holds it after the block (the caller decides whether it still matters). Where fd 2 cannot
    be redirected (no spare file), nothing is collected."""
    collected: list[str] = []
    try:
        sys.stderr.flush()
        sink = tempfile.TemporaryFile()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield collected
        return
    try:
        os.dup2(sink.fileno(), 2)
        try:
            yield collected
        finally:
            os.dup2(saved, 2)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            if text:
                collected.append(text)
    finally:
        os.close(saved)
        sink.close()


def check_written_image(written: Path, target: Path, image: sitk.Image) -> None:
    """Check that the file ``written`` holds all of ``image``: ITK's writers do not notice a short
    write (disk full, file-size limit), and readers fill the missing voxels with zeros.

    NIfTI is checked by streaming its voxel block (:func:`versemi.images.scan_nifti`, which also
    checks a ``.nii.gz`` to its end); other formats are read back by ITK, whose NRRD and MetaImage
    readers refuse a truncated file.

    Raises:
        OSError: the file is incomplete; the message names ``target``.
    """
    def short(detail: str) -> OSError:
        return OSError(errno.EIO, f"cannot write image: the written file is incomplete ({detail}; disk full or "
                                  "file-size limit?); the previous file is unchanged", str(target))

    if written.name.lower().endswith(NIFTI_EXTENSIONS):
        try:
            found = scan_nifti(written)
        except ImageFileError as exc:
            raise short(str(exc).split(": ", 1)[-1].removeprefix("cannot read image: ").split(";")[0]) from None
        header = read_nifti_header(written)
        if found is None or header is None:
            raise short("no complete header")
        if tuple(header.dims[: image.GetDimension()]) != tuple(image.GetSize()):
            raise short(f"header size {list(header.dims)} instead of {list(image.GetSize())}")
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(itk_path(written))
    try:
        with quiet_itk():
            back = reader.Execute()
    except RuntimeError as exc:
        raise short(itk_reason(exc).replace(str(written), str(target))) from None
    if back.GetSize() != image.GetSize():
        raise short(f"size {list(back.GetSize())} instead of {list(image.GetSize())}")


def is_orthonormal(direction: Sequence[float], atol: float = ORTHONORMAL_ATOL) -> bool:
    """Whether a flattened 3x3 (or 2x2) direction matrix is a rotation/reflection (no shear)."""
    d = np.asarray(direction, dtype=float)
    n = int(round(math.sqrt(d.size)))
    d = d.reshape(n, n)
    return bool(np.allclose(d.T @ d, np.eye(n), atol=atol))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(
    image_targets: Sequence[str | Path],
    other_targets: Sequence[str | Path] = (),
    inputs: Sequence[str | Path | None] = (),
) -> None:
    """Refuse, before any work, outputs that cannot hold a 3D labelmap or would overwrite an input.

    Args:
        image_targets: image files to be written (their extension picks the format).
        other_targets: other files to be written (sidecars, colour tables).
        inputs: files or folders that are read (scan, DICOM folder, checkpoint); None entries skipped.

    Raises:
        OutputPathError: a 2D or two-file format, an unknown extension, or a target that is an input
            (same path, or a symbolic or hard link to it) or a file inside an input DICOM folder.
    """
    for target in image_targets:
        target = Path(target)
        _, ext = split_image_extension(target.name)
        ext = ext.lower()
        if ext in LABELMAP_EXTENSIONS:
            continue
        use = f"use {', '.join(LABELMAP_EXTENSIONS[:-1])} or {LABELMAP_EXTENSIONS[-1]}"
        if ext in TWO_D_EXTENSIONS:
            why = f"{ext} is a 2D image format: it cannot hold a 3D labelmap (only one slice would be kept)"
        elif ext in PAIRED_EXTENSIONS:
            why = f"{ext} writes its voxels to a second file beside the header, which cannot be written atomically"
        else:
            why = f"unsupported labelmap format {ext or '(no extension)'!r}"
        raise OutputPathError(f"{target}: {why}; {use}")
    targets = [Path(t) for t in (*image_targets, *other_targets)]
    for target in targets:
        try:
            itk_path(target)
        except ImageFileError as exc:
            raise OutputPathError(str(exc).replace("which the image library cannot open", "which the image "
                                                   "library cannot write")) from None
    seen: dict[Path, Path] = {}
    for target in targets:
        key = resolved(target)
        if key in seen:
            raise OutputPathError(f"{target}: two outputs of this run are the same file ({seen[key]} and {target}); "
                                  "one would be lost - choose different output paths")
        seen[key] = target
    sources = [Path(p) for p in inputs if p is not None]
    for target in targets:
        for source in sources:
            if source.is_dir():
                folder = resolved(source)
                if folder == resolved(target) or folder in resolved(target).parents:
                    raise OutputPathError(
                        f"{target}: is inside the input folder {source}; refusing to write into an input folder "
                        "(the file would be read with it next time) - choose another output path"
                    )
            elif _same_file(target, source) or resolved(target) == resolved(source):
                raise OutputPathError(
                    f"{target}: is the input {source} itself (same file); refusing to overwrite an input - "
                    "choose another output path"
                )


def resolved(path: str | Path) -> Path:
    """``path`` with its symbolic links resolved as far as they go (a link loop stays as it is)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a symbolic-link loop: Python < 3.13 raises RuntimeError
        return Path(os.path.abspath(path))


def is_versemi_sidecar(path: Path) -> bool:
    """Whether ``path`` is a JSON sidecar that versemi wrote (labels, model and versemi version)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "versemi_version" in document and isinstance(document.get("labels"), list)


def is_versemi_colour_table(path: Path) -> bool:
    """Whether ``path`` is a colour table that versemi wrote (its first line is :data:`COLOUR_TABLE_HEADER`)."""
    try:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n") == COLOUR_TABLE_HEADER.encode()
    except OSError:
        return False


def check_overwrite(
    targets: Sequence[str | Path], sidecar: str | Path, colour_table: str | Path, overwrite: bool = False
) -> None:
    """Refuse to replace files versemi did not write, before any work.

    A prediction publishes its colour table first and its sidecar last, so existing outputs are
    versemi's own when a versemi sidecar (:func:`is_versemi_sidecar`) or colour table
    (:func:`is_versemi_colour_table`) lies beside the labelmap. An existing sidecar name must be a
    versemi sidecar. Anything else (a BIDS JSON with the sidecar's name, a hand-made segmentation)
    is someone else's.

    Args:
        targets: every file the run writes.
        sidecar: the labelmap's sidecar JSON (one of ``targets``).
        colour_table: the labelmap's ``.ctbl`` (one of ``targets``).
        overwrite: replace them anyway (``--overwrite``).

    Raises:
        OutputPathError: naming the first such file and ``--overwrite``.
    """
    if overwrite:
        return
    sidecar = Path(sidecar)
    existing = [Path(t) for t in targets if os.path.lexists(t) and not Path(t).is_dir()]  # a folder: check_writable
    if not existing:
        return
    sidecar_ours = is_versemi_sidecar(sidecar)
    ours = sidecar_ours or is_versemi_colour_table(Path(colour_table))
    for path in existing:
        if path == sidecar and not sidecar_ours:
            what = "is not a versemi sidecar (e.g. the scan's BIDS metadata)"
        elif path != sidecar and not ours:
            what = "exists and was not written by versemi (no versemi sidecar or colour table beside it)"
        else:
            continue
        raise OutputPathError(f"{printable_path(path)}: {what}; refusing to overwrite it - choose another output "
                              "path, or pass --overwrite to replace it")


def check_output_geometry(
    image_targets: Sequence[str | Path], reference: sitk.Image, source: str | Path | None = None
) -> None:
    """Refuse outputs that cannot carry the input's geometry exactly: NIfTI for an image whose
    direction matrix NIfTI cannot store (sheared), and any output for a NIfTI input whose sform the
    image library does not read (:func:`versemi.image_headers.nifti_sform_problem`).

    Args:
        image_targets: image files to be written on ``reference``'s grid.
        reference: the input image whose geometry the outputs copy.
        source: the file ``reference`` was read from (its NIfTI header is checked).

    Raises:
        OutputPathError: naming the file and what to do.
    """
    if source is not None and Path(source).is_file() and Path(source).name.lower().endswith(NIFTI_EXTENSIONS):
        problem = nifti_sform_problem(source, reference)
        if problem is not None:
            raise OutputPathError(f"{source}: {problem}; refusing to write a labelmap with changed geometry - "
                                  "resample the scan onto an orthogonal grid, or set its sform to its qform")
    if is_orthonormal(reference.GetDirection()):
        return
    for target in image_targets:
        _, ext = split_image_extension(Path(target).name)
        if ext.lower() in NIFTI_EXTENSIONS:
            raise OutputPathError(
                f"{target}: the input's direction matrix {_fmt(reference.GetDirection())} is sheared (not "
                "orthonormal), which NIfTI cannot store: the labelmap would not lie on the input grid; "
                "write .nrrd or .mha, which keep it"
            )


__all__ = [
    "ORTHONORMAL_ATOL",
    "AtomicOutputs",
    "OutputPathError",
    "check_output_geometry",
    "check_output_paths",
    "COLOUR_TABLE_HEADER",
    "check_overwrite",
    "is_versemi_colour_table",
    "check_written_image",
    "is_versemi_sidecar",
    "resolved",
    "is_orthonormal",
    "sidecar_paths",
]
