"""What every command writes: the checks each output passes before any work, and the image writer.

- :func:`check_output_paths` and :func:`check_output_geometry` refuse an output before any work when
  its format cannot hold a 3D labelmap with its geometry (PNG and other 2D formats; header + data file
  pairs such as ``.mhd`` that cannot be replaced atomically; a sheared direction matrix, which NIfTI
  cannot store), or when it would overwrite an input (the same path, a symbolic or a hard link);
- :class:`AtomicOutputs` writes images (and sidecars, colour tables) under temporary names and
  publishes them together (:class:`versemi.fileio.AtomicGroup`): ``predict``, ``pseudolabel`` and
  the review's refined labels;
- :func:`sidecar_paths`: the names of a labelmap's sidecar and colour table.

The file endings come from the registry in :mod:`versemi.images`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.fileio import AtomicGroup, retarget_error
from versemi.images import (
    LABELMAP_EXTENSIONS,
    NIFTI_EXTENSIONS,
    PAIRED_EXTENSIONS,
    TWO_D_EXTENSIONS,
    itk_reason,
    split_image_extension,
)

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
        """Write an image (format from the target's extension) to a temporary name."""
        target = Path(target)
        _, ext = split_image_extension(target.name)
        tmp = self.temp_for(target, suffix=ext)
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as exc:
            reason = itk_reason(exc).replace(str(tmp), str(target)).replace(tmp.name, target.name)
            raise OSError(f"{target}: cannot write image: {reason}") from None
        except OSError as exc:
            raise retarget_error(exc, target) from None
        return target


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
    sources = [Path(p) for p in inputs if p is not None]
    for target in [Path(t) for t in (*image_targets, *other_targets)]:
        for source in sources:
            if source.is_dir():
                inside = target.parent.resolve() == source.resolve() and target.exists()
                if inside:
                    raise OutputPathError(
                        f"{target}: refusing to overwrite a file inside the input DICOM folder {source}; "
                        "choose another output path"
                    )
            elif _same_file(target, source) or target.resolve() == source.resolve():
                raise OutputPathError(
                    f"{target}: is the input {source} itself (same file); refusing to overwrite an input - "
                    "choose another output path"
                )


def check_output_geometry(image_targets: Sequence[str | Path], reference: sitk.Image) -> None:
    """Refuse NIfTI outputs for an image whose direction matrix NIfTI cannot store (sheared).

    Args:
        image_targets: image files to be written on ``reference``'s grid.
        reference: the input image whose geometry the outputs copy.

    Raises:
        OutputPathError: naming the target and the formats that keep the geometry.
    """
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
    "is_orthonormal",
    "sidecar_paths",
]
