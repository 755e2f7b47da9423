"""Pseudo-labels for a folder of scans, resumable, with one manifest line per case.

``pseudolabel_folder`` runs the :class:`~versemi.inference.Predictor` over every scan of a folder (a
flat folder of images, DICOM series in sub-folders, or an nnU-Net raw dataset whose ``imagesTr`` is
used) and writes, per case, ``<output>/<case>.nii.gz`` + ``<case>.json`` (sidecar) + ``<case>.ctbl``
exactly as ``versemi predict`` does, and ``<output>/manifest.jsonl``::

    {"case": "la_012", "image": "/data/imagesTr/la_012_0000.nii.gz",
     "pseudo_label": "/out/la_012.nii.gz", "sidecar": "/out/la_012.json",
     "model": {"name": "heart", "version": "1.0.0", "sha256": "..."}, "prompts": ["left_atrium"],
     "status": "done", "seconds": 12.3, "time": "2026-11-25T23:10:00+00:00"}

``status`` is ``done`` (written now or by an earlier run), ``failed`` (with ``error``; the run goes
on with the next case and exits non-zero) - never a partial output. The manifest holds exactly one
line per case, in case order; it is rewritten atomically after each case, so an interrupted run
leaves a consistent manifest and is resumed by running the same command again: a case whose
labelmap and sidecar exist and whose sidecar names the same model SHA-256 and prompts is skipped.

Review folder: the output folder is also a review folder of the annotation loop
(:mod:`versemi.review`, ``docs/REVIEW.md``). Each prediction also computes the synthetic "all
foreground" prompt, in the same backbone pass, as a hidden prompt of the predictor
(``Predictor.predict_file(..., hidden_prompts=...)``); it is never written as a label (the
labelmap, sidecar and colour table hold only the chosen real prompts). From the model-spacing probabilities
the review score :class:`~versemi.review.UncertaintyScore` is computed (1 - soft Dice between the max
over the chosen real prompts and the synthetic prompt, combined with the mean predictive entropy;
:mod:`versemi.review.uncertainty`). It is stored as ``uncertainty`` in the sidecar's ``prediction``
section and in the manifest line, and every finished case is upserted into
``<output>/manifest.json`` (:class:`~versemi.review.ReviewManifest`: image, pseudo-label, model,
score, status ``pending`` for a new case; a case already reviewed keeps its status and refined
label) together with the label table. The review manifest is updated after the case's files and
its ``manifest.jsonl`` line; a resumed run re-registers finished cases whose row is missing or
stale from their sidecars, so the files and both manifests always end up consistent.

Extra per-case fields ride along in :attr:`PseudoLabelRecord.extra` and appear as top-level keys of
the manifest line; a ``model_space_hook`` passed to :func:`pseudolabel_folder` can compute them from
the model-spacing probabilities of the chosen prompts (the synthetic prompt is not passed to it
unless chosen).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from versemi.fileio import atomic_write_text, remove_stale_temp_files
from versemi.images import IMAGE_EXTENSIONS, sidecar_paths
from versemi.inference.io import find_images
from versemi.inference.predictor import LabelEntry, ModelSpaceHook, PredictFileResult, Predictor
from versemi.inference.progress import ProgressReporter, SubtaskProgress, report_info
from versemi.review.manifest import ReviewManifest
from versemi.review.uncertainty import UncertaintyScore, uncertainty_from_prompt_probabilities
from versemi.timestamps import utc_now

MANIFEST_NAME = "manifest.jsonl"
UNCERTAINTY_KEY = "uncertainty"
STATUSES = ("done", "failed")
_BASE_FIELDS = ("case", "image", "pseudo_label", "sidecar", "model", "prompts", "status", "seconds", "time", "error")


@dataclass
class PseudoLabelRecord:
    """The outcome for one case (one line of ``manifest.jsonl``).

    Attributes:
        case: Case name (``la_012`` for ``la_012_0000.nii.gz``).
        image: The scan read.
        pseudo_label: The labelmap written (None when the case failed).
        sidecar: Its JSON sidecar (None when the case failed).
        model: ``{"name", "version", "sha256"}`` of the model that produced it.
        prompts: The prompt names, in label-value order.
        status: ``"done"`` or ``"failed"``.
        seconds: Time spent on this case (of the run that produced it).
        time: UTC time the case finished (ISO 8601).
        error: The error message of a failed case.
        extra: Further per-case fields (e.g. ``"uncertainty"``), written as top-level keys.
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

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in _BASE_FIELDS}
        if d["error"] is None:
            del d["error"]
        for key, value in self.extra.items():
            d.setdefault(key, value)  # extra fields never override the base ones
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PseudoLabelRecord":
        extra = {k: v for k, v in d.items() if k not in _BASE_FIELDS}
        return cls(
            case=str(d["case"]), image=str(d["image"]), pseudo_label=d.get("pseudo_label"),
            sidecar=d.get("sidecar"), model=dict(d.get("model") or {}), prompts=list(d.get("prompts") or []),
            status=str(d.get("status", "done")), seconds=float(d.get("seconds", 0.0)), time=str(d.get("time", "")),
            error=d.get("error"), extra=extra,
        )


def read_manifest(output_dir: str | Path) -> dict[str, PseudoLabelRecord]:
    """The records of ``<output_dir>/manifest.jsonl`` by case (empty if there is none).

    Unparseable lines (e.g. from a manifest edited by hand) are ignored: their cases are redone.
    """
    path = Path(output_dir) / MANIFEST_NAME
    records: dict[str, PseudoLabelRecord] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = PseudoLabelRecord.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        records[record.case] = record
    return records


def write_manifest(output_dir: str | Path, records: Iterable[PseudoLabelRecord]) -> Path:
    """Rewrite ``manifest.jsonl`` atomically (temp file + fsync + rename), one line per case."""
    path = Path(output_dir) / MANIFEST_NAME
    text = "".join(json.dumps(r.to_dict()) + "\n" for r in sorted(records, key=lambda r: r.case))
    return atomic_write_text(path, text)


def _finished_by_same_model(
    output: Path, sidecar: Path, sha256: str | None, prompts: list[str], needs_score: bool
) -> dict[str, Any] | None:
    """The sidecar when an earlier run wrote this case with the same model file and the same prompts
    (and, when a review score is expected, with the score); else None (the case is redone)."""
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
        and [d.get("name") for d in meta.get("labels", [])] == prompts
    ):
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
    image_path: Path,
    output: Path,
    prompt_ids: list[int],
    progress: ProgressReporter | None,
    model_space_hook: ModelSpaceHook | None,
    allow_gaps: bool = False,
) -> tuple[PredictFileResult, UncertaintyScore | None]:
    """:meth:`Predictor.predict_file` with the synthetic prompt as a hidden prompt for the score
    (computed in the same backbone pass, never written) unless it is chosen."""
    synthetic_id = predictor.label_space.synthetic_id
    hidden = [synthetic_id] if synthetic_id is not None and synthetic_id not in prompt_ids else []
    hook = _ReviewScoreHook(synthetic_id, model_space_hook)
    written = predictor.predict_file(image_path, output, prompt_ids, progress=progress, model_space_hook=hook,
                                     hidden_prompts=hidden, allow_gaps=allow_gaps)
    return written, hook.score


def _register_for_review(
    review: ReviewManifest, record: PseudoLabelRecord, score: UncertaintyScore | None, only_if_stale: bool
) -> None:
    """Upsert a finished case into the review manifest (skipped when its row is already current)."""
    assert record.pseudo_label is not None
    if only_if_stale:
        row = review.load().rows.get(record.case)
        if (
            row is not None
            and row.pseudo_label == Path(record.pseudo_label).resolve()
            and row.image == Path(record.image).resolve()
            and row.model.get("sha256") == record.model.get("sha256")
            and row.score == (score.score if score is not None else None)
        ):
            return
    review.upsert(record.case, image=record.image, pseudo_label=record.pseudo_label, model=record.model,
                  score=score, extra={"sidecar": record.sidecar})


def pseudolabel_folder(
    predictor: Predictor,
    input_dir: str | Path,
    output_dir: str | Path,
    prompts: str | Iterable[str] = "all",
    *,
    output_extension: str = ".nii.gz",
    resume: bool = True,
    progress: ProgressReporter | None = None,
    model_space_hook: ModelSpaceHook | None = None,
    on_case: Callable[[PseudoLabelRecord], None] | None = None,
    allow_gaps: bool = False,
) -> list[PseudoLabelRecord]:
    """Pseudo-label every scan of a folder and register it for review (see the module docstring).

    Args:
        predictor: The loaded model.
        input_dir: Folder of scans, or an nnU-Net raw dataset folder (its ``imagesTr`` is used).
        output_dir: Where labelmaps, sidecars, ``manifest.jsonl`` and the review ``manifest.json`` go
            (created if needed).
        prompts: Prompt names or ``"all"``.
        output_extension: Image format of the labelmaps.
        resume: Skip cases already done by the same model with the same prompts.
        progress: Reporter; the overall fraction covers the whole folder.
        model_space_hook: Per-case hook on the model-spacing probabilities of the chosen prompts;
            what it returns is stored in the record's ``extra`` (and the sidecar), except an
            ``uncertainty`` field, which is the review score's.
        on_case: Called with each case's record as soon as both manifests have it.
        allow_gaps: Read DICOM series with missing or unevenly spaced slices anyway.

    Returns:
        One record per case, in case order.

    Raises:
        ValueError: the input folder does not exist or holds no scans; a prompt the model lacks; the
            review manifest is unreadable or its label table differs while cases are refined.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise ValueError(f"{input_dir}: input folder not found")
    cases = find_images(input_dir)
    if not cases:
        raise ValueError(f"{input_dir}: no scans found ({', '.join(IMAGE_EXTENSIONS)} or DICOM sub-folders)")
    prompt_ids = predictor.resolve_prompts(prompts)  # a bad prompt fails before any work
    prompt_names = [predictor.label_space.prompts[i].name for i in prompt_ids]
    synthetic_id = predictor.label_space.synthetic_id
    # A score needs the synthetic prompt and at least one real prompt.
    needs_score = synthetic_id is not None and any(i != synthetic_id for i in prompt_ids)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(output_dir)  # left by a run that was killed (SIGKILL, out of memory)
    review = ReviewManifest(output_dir)
    # Before any work: a model with other labels cannot reuse a folder whose cases are refined.
    review.set_label_table([e.to_dict() for e in predictor.label_table(prompt_ids)])
    model = predictor.model_info
    records = read_manifest(output_dir)
    finished: list[PseudoLabelRecord] = []
    for index, (case, image_path) in enumerate(cases):
        sub = SubtaskProgress(progress, index / len(cases), (index + 1) / len(cases), prefix=f"{case}: ")
        output = output_dir / f"{case}{output_extension}"
        sidecar, _ = sidecar_paths(output)
        previous = records.get(case)
        meta = _finished_by_same_model(output, sidecar, model["sha256"], prompt_names, needs_score) if resume else None
        if meta is not None:
            stored = _sidecar_score(meta)
            if previous is None or previous.status != "done":
                extra: dict[str, Any] = {"resumed": True}
                if stored is not None:
                    extra[UNCERTAINTY_KEY] = stored.to_dict()
                previous = PseudoLabelRecord(case, str(image_path), str(output), str(sidecar), model, prompt_names,
                                             "done", 0.0, utc_now(), extra=extra)
                records[case] = previous
                write_manifest(output_dir, records.values())
            # An earlier run may have stopped after the files and before the review manifest.
            _register_for_review(review, previous, stored, only_if_stale=True)
            sub.update("export", 1.0, "already done by this model, skipped")
            finished.append(previous)
            if on_case:
                on_case(previous)
            continue
        start = time.perf_counter()
        score: UncertaintyScore | None = None
        try:
            written, score = _predict_case(predictor, image_path, output, prompt_ids, sub, model_space_hook,
                                           allow_gaps)
        except (ValueError, OSError, RuntimeError) as exc:
            # One bad scan must not stop a folder of hundreds: record it and go on.
            record = PseudoLabelRecord(case, str(image_path), None, None, model, prompt_names, "failed",
                                       round(time.perf_counter() - start, 3), utc_now(), error=str(exc))
            report_info(progress, f"{case}: failed: {exc}")
        else:
            info = written.result.info
            base_info = {"prompts", "device", "fell_back_to_cpu", "quality", "spacing_mm", "patch_size", "overlap",
                         "batch_size", "tta", "threshold", "roi", "seconds"}
            extra = {k: v for k, v in info.items() if k not in base_info}
            record = PseudoLabelRecord(case, str(image_path), str(written.output), str(written.sidecar), model,
                                       prompt_names, "done", round(time.perf_counter() - start, 3), utc_now(),
                                       extra=extra)
        records[case] = record
        write_manifest(output_dir, records.values())
        if record.status == "done":
            _register_for_review(review, record, score, only_if_stale=False)
        finished.append(record)
        if on_case:
            on_case(record)
    return finished
