"""``versemi predict -i FOLDER -o FOLDER``: every scan of a folder, resumable, one outcome per case.

What nnU-Net users expect of ``nnUNetv2_predict -i FOLDER -o FOLDER``, with versemi's output contract
per case (``<case>.nii.gz`` + ``<case>.json`` sidecar + ``<case>.ctbl``, written atomically by
:meth:`~versemi.inference.Predictor.predict_file`), through the folder loop that ``versemi pseudolabel``
uses too (:mod:`versemi.inference.folder`: the same scans, resume rule and per-case failures). Unlike
``pseudolabel`` there is no review manifest and no review score: the output folder is plain predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from versemi.inference.folder import ScanFolder, finished_by_same_model
from versemi.inference.progress import ProgressReporter

STATUSES = ("done", "skipped", "failed")


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
    folder = ScanFolder(input_dir, output_dir, output_extension)
    prompts = prompts if isinstance(prompts, str) else list(prompts)
    prompt_ids = predictor.resolve_prompts(prompts)  # a bad prompt fails before any work
    names = [predictor.label_space.prompts[i].name for i in prompt_ids]
    sha256 = predictor.model_info["sha256"]
    outcomes: list[CaseOutcome] = []
    for case in folder.cases(progress):
        meta = finished_by_same_model(case.output, case.sidecar, sha256, names) if resume else None
        if meta is not None:
            outcome = CaseOutcome(case.name, case.image, case.output, "skipped",
                                  warnings=list((meta.get("prediction") or {}).get("warnings") or []))
            case.skip()
        else:
            probabilities = Path(probabilities_dir) / case.name if probabilities_dir is not None else None
            written = case.attempt(lambda: predictor.predict_file(
                case.image, case.output, prompts, probabilities_dir=probabilities,
                probabilities_dtype=probabilities_dtype, progress=case.progress, allow_gaps=allow_gaps,
                overwrite=overwrite))
            outcome = (CaseOutcome(case.name, case.image, None, "failed", case.seconds(), error=case.error)
                       if written is None else
                       CaseOutcome(case.name, case.image, written.output, "done", case.seconds(),
                                   warnings=list(written.result.info.get("warnings") or [])))
        outcomes.append(outcome)
        if on_case is not None:
            on_case(outcome, case.index, case.total)
    return outcomes


__all__ = ["CaseOutcome", "STATUSES", "predict_folder"]
