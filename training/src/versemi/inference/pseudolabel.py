"""``versemi pseudolabel``: pseudo-labels for a folder of scans, resumable, recorded in the folder's manifest.

Runs the :class:`~versemi.inference.Predictor` over a folder through the loop ``versemi predict`` uses
(:mod:`versemi.inference.folder`) and writes the same files per case. The output folder is a review
folder of the annotation loop (:mod:`versemi.review`, ``docs/REVIEW.md``): its one manifest records
every case, done (with its review score) or failed, after each case, so an interrupted run is resumed
by running the same command again. The review score (:class:`~versemi.review.UncertaintyScore`)
compares the chosen prompts with the synthetic "all foreground" prompt, computed in the same backbone
pass as a hidden prompt and never written as a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from versemi.dicomseg import write_dicom_seg
from versemi.images import printable_path
from versemi.inference.folder import ScanCase, ScanFolder, finished_by_same_model
from versemi.inference.predictor import Predictor
from versemi.inference.progress import ProgressReporter
from versemi.inference.results import LabelEntry, ModelSpaceHook, PredictFileResult
from versemi.review.legacy import migrate_run_log
from versemi.review.manifest import ReviewManifest
from versemi.review.uncertainty import UncertaintyScore, uncertainty_from_prompt_probabilities
from versemi.timestamps import utc_now

UNCERTAINTY_KEY = "uncertainty"
STATUSES = ("done", "failed")
# Fields of a prediction's info that describe its settings (kept in the sidecar only); the others
# (review score, model-space hook fields, preprocessing groups) are per-case results.
_SETTINGS_INFO = frozenset({"prompts", "device", "precision", "fell_back_to_cpu", "quality", "spacing_mm",
                            "patch_size", "overlap", "batch_size", "tta", "threshold", "roi", "seconds"})


@dataclass
class PseudoLabelRecord:
    """The outcome for one case, as :func:`pseudolabel_folder` returns it (the manifest row holds the same).

    Attributes:
        case: Case name (``la_012`` for ``la_012_0000.nii.gz``).
        image: The scan read.
        pseudo_label: The labelmap written (None when the case failed).
        sidecar: Its JSON sidecar (None when the case failed).
        model: ``{"name", "version", "sha256"}`` of the model that produced it.
        prompts: The prompt names, in label-value order.
        status: ``"done"`` or ``"failed"``.
        seconds: Time spent on this case (0 when an earlier run had done it).
        time: UTC time the case finished (ISO 8601).
        error: The error message of a failed case.
        extra: Further per-case fields (e.g. ``"uncertainty"``; ``"resumed"`` for a case an earlier
            run had done).
    """

    case: str
    image: str
    pseudo_label: str | None
    sidecar: str | None
    model: dict[str, Any]
    prompts: list[str]
    status: str
    seconds: float
    time: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row_extra(self) -> dict[str, Any]:
        """What the manifest row keeps in ``extra`` (its score and uncertainty have fields of their own)."""
        kept = {k: v for k, v in self.extra.items() if k not in (UNCERTAINTY_KEY, "resumed")}
        if self.status == "failed":
            return {"seconds": self.seconds, **kept}
        return {"sidecar": self.sidecar, "prompts": list(self.prompts), **({"seconds": self.seconds} if self.seconds else {}),
                **kept}


def _finished_by_same_model(
    output: Path, sidecar: Path, sha256: str | None, prompts: list[str], needs_score: bool
) -> dict[str, Any] | None:
    """The sidecar when an earlier run wrote this case with the same model file and the same prompts
    (:func:`versemi.inference.folder.finished_by_same_model`) and, when a review score is expected,
    with the score; else None (the case is redone)."""
    meta = finished_by_same_model(output, sidecar, sha256, prompts)
    if meta is None:
        return None
    if needs_score and _sidecar_score(meta) is None:
        return None  # written before review scores existed: redo it to rank it
    return meta


def _sidecar_score(meta: Mapping[str, Any]) -> UncertaintyScore | None:
    found = (meta.get("prediction") or {}).get(UNCERTAINTY_KEY)
    try:
        return UncertaintyScore.from_dict(found) if isinstance(found, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


class _ReviewScoreHook:
    """The model-space hook of one case: the review score from the real prompts and the synthetic
    prompt (chosen, or hidden: computed in the same pass, never labelled), plus a caller's hook.

    A caller's own hook gets the chosen prompts' probabilities only (never a hidden prompt's).
    """

    def __init__(self, synthetic_id: int | None, user_hook: ModelSpaceHook | None) -> None:
        self.synthetic_id = synthetic_id
        self.user_hook = user_hook
        self.score: UncertaintyScore | None = None

    def __call__(self, probs: torch.Tensor, labels: list[LabelEntry], record: Mapping[str, Any]) -> dict[str, Any]:
        ids = [e.prompt_id for e in labels]
        synthetic = ids.index(self.synthetic_id) if self.synthetic_id in ids else None
        real = [i for i, e in enumerate(labels) if e.prompt_id != self.synthetic_id and not e.hidden]
        if synthetic is not None and real:
            self.score = uncertainty_from_prompt_probabilities(probs, real, synthetic)
        fields: dict[str, Any] = {}
        if self.user_hook is not None:
            visible = [i for i, e in enumerate(labels) if not e.hidden]
            if len(visible) == len(labels):
                fields.update(self.user_hook(probs, labels, record) or {})
            else:
                keep = torch.as_tensor(visible, dtype=torch.long, device=probs.device)
                fields.update(self.user_hook(probs.index_select(0, keep), [labels[i] for i in visible], record) or {})
        if self.score is not None:
            fields[UNCERTAINTY_KEY] = self.score.to_dict()  # the review score wins over a caller's field
        return fields


def _predict_case(
    predictor: Predictor,
    case: ScanCase,
    prompts: str | list[str] | list[int],
    prompt_ids: list[int],
    model_space_hook: ModelSpaceHook | None,
    allow_gaps: bool,
    overwrite: bool,
    dicom_seg: bool,
) -> tuple[PredictFileResult, UncertaintyScore | None, Path | None]:
    """:meth:`Predictor.predict_file` with the synthetic prompt as a hidden prompt for the score
    (computed in the same backbone pass, never written) unless it is chosen; then the DICOM SEG.

    Returns:
        What was written, the review score, and the DICOM SEG (None: not asked for, or not a series).
    """
    synthetic_id = predictor.label_space.synthetic_id
    hidden = [synthetic_id] if synthetic_id is not None and synthetic_id not in prompt_ids else []
    hook = _ReviewScoreHook(synthetic_id, model_space_hook)
    written = predictor.predict_file(case.image, case.output, prompts, progress=case.progress, model_space_hook=hook,
                                     hidden_prompts=hidden, allow_gaps=allow_gaps, overwrite=overwrite)
    seg_path = None
    if dicom_seg and case.image.is_dir():
        seg_path = write_dicom_seg(written.result.labelmap, written.result.labels, case.image,
                                   case.output.parent / f"{case.name}.dcm",
                                   model_name=str(predictor.model_info.get("name") or "VerSemi"))
    elif dicom_seg:
        case.progress.info("not a DICOM series, so no DICOM SEG (the labelmap is written)")
    return written, hook.score, seg_path


def _register(
    review: ReviewManifest, record: PseudoLabelRecord, score: UncertaintyScore | None, only_if_stale: bool
) -> None:
    """Record a case in the folder's manifest (a finished case is skipped when its row is already current)."""
    if record.status == "failed":
        review.record_failure(record.case, image=record.image, error=record.error or "failed", model=record.model,
                              extra=record.row_extra())
        return
    assert record.pseudo_label is not None
    if only_if_stale:
        row = review.load().rows.get(record.case)
        if (
            row is not None
            and row.pseudo_label == Path(record.pseudo_label).resolve()
            and row.image == Path(record.image).resolve()
            and row.model.get("sha256") == record.model.get("sha256")
            and row.score == (score.score if score is not None else None)
            and row.error is None
        ):
            return
    review.upsert(record.case, image=record.image, pseudo_label=record.pseudo_label, model=record.model,
                  score=score, extra=record.row_extra())


def pseudolabel_folder(
    predictor: Predictor,
    input_dir: str | Path,
    output_dir: str | Path,
    prompts: str | Iterable[str] = "all",
    *,
    model_space_hook: ModelSpaceHook | None = None,
    dicom_seg: bool = False,
    on_case: Callable[[PseudoLabelRecord], None] | None = None,
    output_extension: str = ".nii.gz",
    resume: bool = True,
    progress: ProgressReporter | None = None,
    allow_gaps: bool = False,
    overwrite: bool = False,
) -> list[PseudoLabelRecord]:
    """Pseudo-label every scan of a folder and record it in the folder's manifest (see the module docstring).

    Args:
        predictor: The loaded model.
        input_dir: Folder of scans, or an nnU-Net raw dataset folder (its ``imagesTr`` is used).
        output_dir: Where labelmaps, sidecars and the folder's ``manifest.json`` go (created if needed).
        prompts: Prompt names or ``"all"``.
        model_space_hook: Per-case hook on the model-spacing probabilities of the chosen prompts;
            what it returns is stored in the record's ``extra``, the row's ``extra`` and the sidecar,
            except an ``uncertainty`` field, which is the review score's.
        dicom_seg: Also write ``<case>.dcm``, a DICOM SEG referencing the case's series, for every
            case that is a DICOM series (its path goes into the row's ``extra["dicom_seg"]``).
        on_case: Called with each case's record as soon as the manifest has it.
        output_extension: Image format of the labelmaps.
        resume: Skip cases already done by the same model with the same prompts.
        progress: Reporter; the overall fraction covers the whole folder.
        allow_gaps: Read DICOM series with missing or unevenly spaced slices anyway.
        overwrite: Replace existing outputs versemi did not write (else that case fails, naming them).

    Returns:
        One record per case, in case order.

    Raises:
        ValueError: the input folder does not exist or holds no scans; the output folder is the input
            folder or inside it; a prompt the model lacks; the manifest is unreadable or its label
            table differs while cases are refined.
    """
    folder = ScanFolder(input_dir, output_dir, output_extension)  # checked before anything is created
    prompts = prompts if isinstance(prompts, str) else list(prompts)
    prompt_ids = predictor.resolve_prompts(prompts)  # a bad prompt fails before any work
    prompt_names = [predictor.label_space.prompts[i].name for i in prompt_ids]
    synthetic_id = predictor.label_space.synthetic_id
    # A score needs the synthetic prompt and at least one real prompt.
    needs_score = synthetic_id is not None and any(i != synthetic_id for i in prompt_ids)
    folder.prepare_output()
    review = ReviewManifest(folder.output_dir)
    migrate_run_log(review)  # a folder made when pseudolabel kept its own manifest.jsonl
    # Before any work: a model with other labels cannot reuse a folder whose cases are refined.
    review.set_label_table([e.to_dict() for e in predictor.label_table(prompt_ids)])
    model = predictor.model_info
    finished: list[PseudoLabelRecord] = []
    for case in folder.cases(progress):
        meta = _finished_by_same_model(case.output, case.sidecar, model["sha256"], prompt_names, needs_score) if resume else None
        if meta is not None:
            score = _sidecar_score(meta)
            extra: dict[str, Any] = {"resumed": True}
            if score is not None:
                extra[UNCERTAINTY_KEY] = score.to_dict()
            record = PseudoLabelRecord(case.name, str(case.image), str(case.output), str(case.sidecar), model,
                                       prompt_names, "done", 0.0, utc_now(), extra=extra)
            # An earlier run may have stopped after the files and before the manifest.
            _register(review, record, score, only_if_stale=True)
            case.skip()
        else:
            done = case.attempt(lambda: _predict_case(predictor, case, prompts, prompt_ids, model_space_hook,
                                                      allow_gaps, overwrite, dicom_seg))
            if done is None:
                # printable_path: a name that is not UTF-8 cannot be stored in the UTF-8 manifest as is.
                score = None
                record = PseudoLabelRecord(case.name, printable_path(case.image), None, None, model, prompt_names,
                                           "failed", case.seconds(), utc_now(), error=case.error)
            else:
                written, score, seg_path = done
                results = {k: v for k, v in written.result.info.items() if k not in _SETTINGS_INFO}
                if seg_path is not None:
                    results["dicom_seg"] = str(seg_path)
                record = PseudoLabelRecord(case.name, str(case.image), str(written.output), str(written.sidecar), model,
                                           prompt_names, "done", case.seconds(), utc_now(), extra=results)
            _register(review, record, score, only_if_stale=False)
        finished.append(record)
        if on_case:
            on_case(record)
    return finished
