"""The one loop over a folder of scans, shared by ``versemi predict -i FOLDER`` and ``versemi pseudolabel``.

:class:`ScanFolder` lists the scans (:func:`versemi.inference.io.find_images`), refuses an output folder
that is the input folder or inside it, and hands out one :class:`ScanCase` at a time with its progress;
:meth:`ScanCase.attempt` turns a case's failure into one line and the run goes on (one bad scan must
not stop a folder of hundreds). The resume rule (:func:`finished_by_same_model`) is here too. What a
case writes and records is the caller's: :mod:`versemi.inference.batch`, :mod:`versemi.inference.pseudolabel`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from versemi.fileio import describe_error, make_folder, remove_stale_temp_files
from versemi.images import IMAGE_EXTENSIONS
from versemi.inference.io import find_images
from versemi.inference.progress import ProgressReporter, SubtaskProgress
from versemi.inference.results import PredictionError
from versemi.outputs import resolved, sidecar_paths

# What a failing case may raise (unreadable scan, NaN voxels, memory, an unwritable output...).
CASE_ERRORS = (ValueError, OSError, RuntimeError)
T = TypeVar("T")


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Refuse an output folder that is (or is inside) the input folder: its labelmaps would be read as
    scans by the next run.

    Raises:
        PredictionError: naming both folders.
    """
    scans = (input_dir / "imagesTr") if (input_dir / "imagesTr").is_dir() else input_dir
    source, target = resolved(scans), resolved(output_dir)
    if target == source or source in target.parents:
        raise PredictionError(f"{output_dir}: the output folder must not be the input folder {input_dir} or inside it "
                              "(its labelmaps would be taken for scans); choose another folder")


def skipped_prompts(meta: Mapping[str, Any]) -> list[str]:
    """The prompts a sidecar's prediction skipped (:mod:`versemi.inference.guard`)."""
    modality = (meta.get("prediction") or {}).get("modality") or {}
    return list(modality.get("skipped") or {}) if isinstance(modality, Mapping) else []


def finished_by_same_model(output: Path, sidecar: Path, sha256: str | None, prompts: list[str]) -> dict[str, Any] | None:
    """The sidecar of ``output`` when an earlier run wrote it with the same model file (SHA-256) and
    the same prompts in the same order; else None (the case must be (re)done).

    Args:
        output: the case's labelmap.
        sidecar: its sidecar JSON.
        sha256: the model's SHA-256 (None: unknown, never "the same").
        prompts: the prompt names asked for, in label-value order (the sidecar lacks those the modality
            guard skipped on that scan).
    """
    if not (output.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (
        isinstance(meta, dict)
        and sha256 is not None
        and (meta.get("model") or {}).get("sha256") == sha256
        and [d.get("name") for d in meta.get("labels", [])] == [p for p in prompts if p not in skipped_prompts(meta)]
    ):
        return None
    return meta


@dataclass
class ScanCase:
    """One scan of the folder, as :meth:`ScanFolder.cases` hands it out.

    Attributes:
        name: the case name (``la_012`` for ``la_012_0000.nii.gz``).
        image: the scan (a file, or a DICOM series folder).
        output: its labelmap in the output folder.
        sidecar: the labelmap's sidecar JSON.
        index: 1-based position in the folder.
        total: number of cases in the folder.
        progress: this case's share of the run's progress.
        error: the one-line reason of a failed :meth:`attempt` (None: no failure).
    """

    name: str
    image: Path
    output: Path
    sidecar: Path
    index: int
    total: int
    progress: SubtaskProgress
    error: str | None = None
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def seconds(self) -> float:
        """Seconds since the case's work started (its :meth:`attempt`)."""
        return round(time.perf_counter() - self._started, 3)

    def skip(self) -> None:
        """Report the case as done by an earlier run (nothing to do)."""
        self.progress.update("export", 1.0, "already done by this model, skipped")

    def attempt(self, work: Callable[[], T]) -> T | None:
        """``work()``, or None when it raises one of :data:`CASE_ERRORS`: then :attr:`error` holds the
        one-line reason (:func:`versemi.fileio.describe_error`), reported as ``<case>: failed: ...``."""
        self._started = time.perf_counter()
        try:
            return work()
        except CASE_ERRORS as exc:
            self.error = describe_error(exc)
            self.progress.info(f"failed: {self.error}")
            return None


class ScanFolder:
    """The scans of an input folder and the output folder their results go to.

    Args:
        input_dir: a folder of scans (image files, nnU-Net ``<case>_0000`` files or ``imagesTr``, DICOM
            series in sub-folders).
        output_dir: where ``<case><output_extension>`` and its sidecar go (created by :meth:`cases`).
        output_extension: the labelmap format.

    Raises:
        PredictionError: the input folder is missing or holds no scan, or the output folder is the
            input folder or inside it (all before anything is created).
    """

    def __init__(self, input_dir: str | Path, output_dir: str | Path, output_extension: str = ".nii.gz") -> None:
        self.input_dir, self.output_dir = Path(input_dir), Path(output_dir)
        self.output_extension = output_extension
        if not self.input_dir.is_dir():
            raise PredictionError(f"{self.input_dir}: input folder not found")
        check_folders(self.input_dir, self.output_dir)
        self.scans = find_images(self.input_dir)
        if not self.scans:
            raise PredictionError(f"{self.input_dir}: no scans found ({', '.join(IMAGE_EXTENSIONS)} or DICOM sub-folders)")
        self._prepared = False

    def prepare_output(self) -> None:
        """Create the output folder and remove the temporary files a killed run left in it (once)."""
        if not self._prepared:
            make_folder(self.output_dir)
            remove_stale_temp_files(self.output_dir)
            self._prepared = True

    def cases(self, progress: ProgressReporter | None = None) -> Iterator[ScanCase]:
        """Every scan in case order, each with its share of ``progress`` (the whole folder is 0..1)."""
        self.prepare_output()
        total = len(self.scans)
        for index, (name, image) in enumerate(self.scans, start=1):
            output = self.output_dir / f"{name}{self.output_extension}"
            yield ScanCase(name, image, output, sidecar_paths(output)[0], index, total,
                           SubtaskProgress(progress, (index - 1) / total, index / total, prefix=f"{name}: "))


__all__ = ["CASE_ERRORS", "ScanCase", "ScanFolder", "check_folders", "finished_by_same_model", "skipped_prompts"]
