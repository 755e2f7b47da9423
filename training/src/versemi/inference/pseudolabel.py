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

Extra per-case fields (e.g. an uncertainty score) ride along in :attr:`PseudoLabelRecord.extra`
and appear as top-level keys of the manifest line; a ``model_space_hook`` passed to
:func:`pseudolabel_folder` can compute them from the model-spacing probabilities.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from versemi.inference.io import find_images, sidecar_paths
from versemi.inference.predictor import ModelSpaceHook, Predictor
from versemi.inference.progress import ProgressReporter, SubtaskProgress, report_info

MANIFEST_NAME = "manifest.jsonl"
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _finished_by_same_model(output: Path, sidecar: Path, sha256: str | None, prompts: list[str]) -> bool:
    """True when an earlier run wrote this case with the same model file and the same prompts."""
    if not (output.is_file() and sidecar.is_file()):
        return False
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        sha256 is not None
        and meta.get("model", {}).get("sha256") == sha256
        and [d.get("name") for d in meta.get("labels", [])] == prompts
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
) -> list[PseudoLabelRecord]:
    """Pseudo-label every scan of a folder (see the module docstring).

    Args:
        predictor: The loaded model.
        input_dir: Folder of scans, or an nnU-Net raw dataset folder (its ``imagesTr`` is used).
        output_dir: Where labelmaps, sidecars and ``manifest.jsonl`` go (created if needed).
        prompts: Prompt names or ``"all"``.
        output_extension: Image format of the labelmaps.
        resume: Skip cases already done by the same model with the same prompts.
        progress: Reporter; the overall fraction covers the whole folder.
        model_space_hook: Per-case hook on the model-spacing probabilities; what it returns is
            stored in the record's ``extra`` (and the sidecar).
        on_case: Called with each case's record as soon as the manifest has it.

    Returns:
        One record per case, in case order.

    Raises:
        ValueError: the input folder does not exist or holds no scans; a prompt the model lacks.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise ValueError(f"{input_dir}: input folder not found")
    cases = find_images(input_dir)
    if not cases:
        raise ValueError(f"{input_dir}: no scans found (.nii.gz, .nii, .nrrd, .mha, .mhd or DICOM sub-folders)")
    prompt_ids = predictor.resolve_prompts(prompts)  # a bad prompt fails before any work
    prompt_names = [predictor.label_space.prompts[i].name for i in prompt_ids]
    output_dir.mkdir(parents=True, exist_ok=True)
    model = predictor.model_info
    records = read_manifest(output_dir)
    finished: list[PseudoLabelRecord] = []
    for index, (case, image_path) in enumerate(cases):
        sub = SubtaskProgress(progress, index / len(cases), (index + 1) / len(cases), prefix=f"{case}: ")
        output = output_dir / f"{case}{output_extension}"
        sidecar, _ = sidecar_paths(output)
        previous = records.get(case)
        if resume and _finished_by_same_model(output, sidecar, model["sha256"], prompt_names):
            if previous is None or previous.status != "done":
                previous = PseudoLabelRecord(case, str(image_path), str(output), str(sidecar), model, prompt_names,
                                             "done", 0.0, _now(), extra={"resumed": True})
                records[case] = previous
                write_manifest(output_dir, records.values())
            sub.update("export", 1.0, "already done by this model, skipped")
            finished.append(previous)
            if on_case:
                on_case(previous)
            continue
        start = time.perf_counter()
        try:
            written = predictor.predict_file(image_path, output, prompt_ids, progress=sub,
                                             model_space_hook=model_space_hook)
        except (ValueError, OSError, RuntimeError) as exc:
            # One bad scan must not stop a folder of hundreds: record it and go on.
            record = PseudoLabelRecord(case, str(image_path), None, None, model, prompt_names, "failed",
                                       round(time.perf_counter() - start, 3), _now(), error=str(exc))
            report_info(progress, f"{case}: failed: {exc}")
        else:
            info = written.result.info
            base_info = {"prompts", "device", "fell_back_to_cpu", "quality", "spacing_mm", "patch_size", "overlap",
                         "batch_size", "tta", "threshold", "roi", "seconds"}
            extra = {k: v for k, v in info.items() if k not in base_info}
            record = PseudoLabelRecord(case, str(image_path), str(written.output), str(written.sidecar), model,
                                       prompt_names, "done", round(time.perf_counter() - start, 3), _now(),
                                       extra=extra)
        records[case] = record
        write_manifest(output_dir, records.values())
        finished.append(record)
        if on_case:
            on_case(record)
    return finished
