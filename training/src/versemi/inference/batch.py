"""``versemi predict -i FOLDER -o FOLDER``: every scan of a folder, resumable, one outcome per case.

What nnU-Net users expect of ``nnUNetv2_predict -i FOLDER -o FOLDER``, with versemi's output
contract per case (``<case>.nii.gz`` + ``<case>.json`` sidecar + ``<case>.ctbl``, written atomically by
:meth:`~versemi.inference.Predictor.predict_file`):

- the scans are found as ``versemi pseudolabel`` finds them (:func:`versemi.inference.io.find_images`:
  image files, nnU-Net ``<case>_0000`` channels or an ``imagesTr`` folder, DICOM series in
  sub-folders);
- **resumable**: a case whose labelmap and sidecar exist and whose sidecar names the same model
  (SHA-256) and prompts is skipped (:func:`finished_by_same_model`), so an interrupted run is
  resumed by running the same command again; anything else is (re)done;
- a case that fails (unreadable scan, NaN voxels, too large for memory...) is reported and the run
  goes on with the next one; nothing partial is left for it.

Unlike ``versemi pseudolabel`` there is no review manifest and no review score: the output folder is
plain predictions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from versemi.fileio import make_folder, remove_stale_temp_files
from versemi.images import IMAGE_EXTENSIONS
from versemi.inference.io import find_images
from versemi.inference.progress import ProgressReporter, SubtaskProgress, report_info
from versemi.inference.results import PredictionError
from versemi.outputs import resolved, sidecar_paths

STATUSES = ("done", "skipped", "failed")


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
class CaseOutcome:
    """What happened to one scan of the folder.

    Attributes:
        case: the case name (``la_012`` for ``la_012_0000.nii.gz``).
        image: the scan.
        output: its labelmap (None when it failed).
        status: ``"done"``, ``"skipped"`` (an earlier run did it with the same model and prompts) or
            ``"failed"``.
        seconds: time spent on it (0 when skipped).
        error: the one-line reason of a failure.
        warnings: warnings of the prediction (e.g. the field of view), from its sidecar.
    """

    case: str
    image: Path
    output: Path | None
    status: str
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def line(self, index: int, total: int) -> str:
        """One line for people: ``[3/20] case_012: done in 4.2 s -> out/case_012.nii.gz``."""
        head = f"[{index}/{total}] {self.case}"
        if self.status == "failed":
            return f"{head}: FAILED: {self.error}"
        if self.status == "skipped":
            return f"{head}: skipped, already done by this model ({self.output})"
        return f"{head}: done in {self.seconds:.1f} s -> {self.output}"


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


def predict_folder(
    predictor: Any,
    input_dir: str | Path,
    output_dir: str | Path,
    prompts: str | Iterable[str] = "all",
    *,
    output_extension: str = ".nii.gz",
    resume: bool = True,
    progress: ProgressReporter | None = None,
    on_case: Callable[[CaseOutcome, int, int], None] | None = None,
    probabilities_dir: str | Path | None = None,
    probabilities_dtype: str = "float32",
    allow_gaps: bool = False,
    overwrite: bool = False,
) -> list[CaseOutcome]:
    """Segment every scan of ``input_dir`` into ``output_dir`` (see the module docstring).

    Args:
        predictor: a loaded :class:`~versemi.inference.Predictor`.
        input_dir: a folder of scans (image files or DICOM series sub-folders) or an nnU-Net raw dataset.
        output_dir: where ``<case><output_extension>`` + ``<case>.json`` + ``<case>.ctbl`` go (created).
        prompts: prompt names, ``"all"``...
        output_extension: the labelmap format.
        resume: skip the cases an earlier run finished with the same model and prompts.
        progress: the overall fraction covers the whole folder.
        on_case: called with ``(outcome, index (1-based), number of cases)`` after each case.
        probabilities_dir: also write ``<dir>/<case>/<prompt>.nii.gz``.
        probabilities_dtype: ``"float32"`` or ``"uint8"``.
        allow_gaps: read DICOM series with missing or unevenly spaced slices anyway.
        overwrite: replace existing outputs versemi did not write (else that case fails, naming them).

    Returns:
        One outcome per case, in case order.

    Raises:
        PredictionError: the input folder is missing or holds no scan, the output folder is the input
            folder, or a prompt the model lacks (all before any case is done).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise PredictionError(f"{input_dir}: input folder not found")
    check_folders(input_dir, output_dir)
    cases = find_images(input_dir)
    if not cases:
        raise PredictionError(f"{input_dir}: no scans found ({', '.join(IMAGE_EXTENSIONS)} or DICOM sub-folders)")
    prompts = prompts if isinstance(prompts, str) else list(prompts)
    prompt_ids = predictor.resolve_prompts(prompts)  # a bad prompt fails before any work
    names = [predictor.label_space.prompts[i].name for i in prompt_ids]
    sha256 = predictor.model_info["sha256"]
    make_folder(output_dir)
    remove_stale_temp_files(output_dir)  # left by a run that was killed
    outcomes: list[CaseOutcome] = []
    total = len(cases)
    for index, (case, image) in enumerate(cases, start=1):
        sub = SubtaskProgress(progress, (index - 1) / total, index / total, prefix=f"{case}: ")
        output = output_dir / f"{case}{output_extension}"
        sidecar, _ = sidecar_paths(output)
        meta = finished_by_same_model(output, sidecar, sha256, names) if resume else None
        if meta is not None:
            outcome = CaseOutcome(case, image, output, "skipped",
                                  warnings=list((meta.get("prediction") or {}).get("warnings") or []))
            sub.update("export", 1.0, "already done by this model, skipped")
        else:
            start = time.perf_counter()
            probabilities = Path(probabilities_dir) / case if probabilities_dir is not None else None
            try:
                written = predictor.predict_file(image, output, prompts, probabilities_dir=probabilities,
                                                 probabilities_dtype=probabilities_dtype, progress=sub,
                                                 allow_gaps=allow_gaps, overwrite=overwrite)
            except (ValueError, OSError, RuntimeError) as exc:
                # One bad scan must not stop a folder of hundreds: report it and go on.
                from versemi.cli import describe_error

                outcome = CaseOutcome(case, image, None, "failed", round(time.perf_counter() - start, 3),
                                      error=describe_error(exc))
                report_info(progress, f"{case}: failed: {outcome.error}")
            else:
                outcome = CaseOutcome(case, image, written.output, "done", round(time.perf_counter() - start, 3),
                                      warnings=list(written.result.info.get("warnings") or []))
        outcomes.append(outcome)
        if on_case is not None:
            on_case(outcome, index, total)
    return outcomes


__all__ = ["CaseOutcome", "STATUSES", "check_folders", "finished_by_same_model", "predict_folder"]
