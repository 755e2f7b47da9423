"""The modality and content guard: which of the chosen prompts fit the scan.

An MRI prompt run over a CT marks tissue it never saw, so (as TotalSegmentator and Auto3DSeg offer only
what a model was trained for on that modality) :func:`guard_prompts` compares the scan's modality
(:func:`scan_modality`) with that of each prompt's training datasets. Default prompts (``all``) that
differ are skipped with the reason, named prompts run with a warning, ``--any-modality`` checks
nothing; a running prompt whose dataset's intensity profile is far from the scan's gets a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.intensity import PROFILE_SAMPLES, is_ct
from versemi.data.plans import Plans, PlansError
from versemi.inference.results import PredictionError
from versemi.labels import LabelSpace, normalize_name

#: A scan whose 0.5th intensity percentile is below this is CT (fat about -100 HU, air -1000 HU).
CT_HU_BELOW = -50.0
DICOM_MODALITY_TAG = "0008|0060"


@dataclass(frozen=True)
class GuardDecision:
    """What runs on a scan.

    Attributes:
        scan_modality: ``"CT"`` or ``"MR"``.
        reason: How the scan's modality was decided.
        prompt_ids: The prompts that run, in the order asked.
        skipped: Prompt name -> why it was skipped.
        warnings: One line per concern about a running prompt.
    """

    scan_modality: str
    reason: str
    prompt_ids: list[int]
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def sample_values(image: sitk.Image) -> np.ndarray:
    """At most about :data:`versemi.data.intensity.PROFILE_SAMPLES` voxels of ``image``, evenly strided."""
    array = sitk.GetArrayViewFromImage(image).ravel()
    step = max(1, array.size // PROFILE_SAMPLES)
    return np.array(array[::step], dtype=np.float32)


def scan_modality(image: sitk.Image, values: np.ndarray | None = None) -> tuple[str, str]:
    """``("CT" | "MR", reason)`` of a scan.

    The header's DICOM Modality when it has one; else CT when the 0.5th percentile of the intensities
    is below :data:`CT_HU_BELOW` (fat or air in Hounsfield units, where no MR scan goes), else MR. A
    CT crop with neither fat nor air reads as MR: ``--any-modality`` or named prompts get past that.
    """
    if image.HasMetaDataKey(DICOM_MODALITY_TAG):
        header = image.GetMetaData(DICOM_MODALITY_TAG).strip().upper()
        if header:
            return ("CT" if header == "CT" else "MR"), f"DICOM header Modality {header}"
    values = sample_values(image) if values is None else values
    low = float(np.percentile(values, 0.5)) if values.size else 0.0
    if low < CT_HU_BELOW:
        return "CT", f"intensities reach {low:.0f} (Hounsfield units of fat or air)"
    return "MR", f"no intensities in the Hounsfield range of fat or air (0.5th percentile {low:.3g})"


def is_default_request(prompts: str | Iterable[str] | Iterable[int]) -> bool:
    """True for ``"all"`` (the default prompts); named prompts or ids are an explicit request."""
    return isinstance(prompts, str) and normalize_name(prompts.strip()) == "all"


def prompt_modalities(plans: Plans, label_space: LabelSpace, prompt_id: int) -> set[str]:
    """``{"CT"}``, ``{"MR"}``, both, or empty (synthetic prompt, unknown datasets)."""
    out = set()
    for source in label_space.prompts[prompt_id].sources:
        try:
            out.add("CT" if is_ct(plans.plan_for(source.dataset).spec.modality) else "MR")
        except PlansError:
            continue
    return out


def guard_prompts(
    image: sitk.Image, plans: Plans, label_space: LabelSpace, prompt_ids: Sequence[int], explicit: bool,
    name: str, enabled: bool = True,
) -> GuardDecision:
    """Which of ``prompt_ids`` run on ``image`` and what to warn about (see the module docstring).

    Args:
        image: The scan (its ROI when there is one).
        plans: The model's plans (modalities, intensity profiles).
        label_space: The model's prompts.
        prompt_ids: The chosen prompts.
        explicit: The prompts were named (run them all, warn on a mismatch) rather than ``all``.
        name: How to name the scan in messages.
        enabled: False: run every chosen prompt and check nothing.
    """
    if not enabled:
        return GuardDecision("unchecked", "the modality guard is off", list(prompt_ids))
    values = sample_values(image)
    modality, reason = scan_modality(image, values)
    kept: list[int] = []
    skipped: dict[str, str] = {}
    notes: list[str] = []
    for pid in prompt_ids:
        prompt = label_space.prompts[pid]
        modalities = prompt_modalities(plans, label_space, pid)
        if modalities and modality not in modalities:
            why = f"trained on {'/'.join(sorted(modalities))}"
            if not explicit:
                skipped[prompt.name] = why
                continue
            notes.append(f"{name}: prompt {prompt.name} was {why} but the scan is {modality} ({reason}); "
                         "running it because it was asked for")
        kept.append(pid)
    for dataset, prompts in _datasets_of(plans, label_space, kept).items():
        profile = plans.plan_for(dataset).fingerprint.intensity_profile  # type: ignore[union-attr]
        note = profile.distance_note(values) if profile is not None and (is_ct(profile.modality) == (modality == "CT")) else None
        if note:
            notes.append(f"{name}: intensities far from the scans {dataset} was trained on: {note} "
                         f"[prompts {', '.join(prompts)}]")
    return GuardDecision(modality, reason, kept, skipped, notes)


def _datasets_of(plans: Plans, label_space: LabelSpace, prompt_ids: Sequence[int]) -> dict[str, list[str]]:
    """Dataset with a fingerprint -> the names of the given prompts trained from it."""
    out: dict[str, list[str]] = {}
    for pid in prompt_ids:
        prompt = label_space.prompts[pid]
        for source in prompt.sources:
            try:
                plan = plans.plan_for(source.dataset)
            except PlansError:
                continue
            if plan.fingerprint is not None:
                out.setdefault(plan.dataset, []).append(prompt.name)
    return out


def skipped_message(decision: GuardDecision, name: str) -> str:
    """The one line saying which default prompts were skipped and why."""
    parts = ", ".join(f"{prompt} ({why})" for prompt, why in decision.skipped.items())
    return (f"{name}: the scan is {decision.scan_modality} ({decision.reason}): skipped the prompts of "
            f"another modality: {parts}; name them with --prompts, or use --any-modality, to run them anyway")


def run_guard(
    image: sitk.Image, plans: Plans, label_space: LabelSpace, prompts: str | Iterable[str] | Iterable[int],
    prompt_ids: list[int], name: str, enabled: bool, model_name: str,
) -> tuple[list[int], list[str], dict[str, object]]:
    """The predictor's use of :func:`guard_prompts`: the prompts that run, the warning lines (skipped
    prompts first) and the sidecar's ``prediction.modality`` record.

    Raises:
        PredictionError: none of the chosen prompts is left to run.
    """
    decision = guard_prompts(image, plans, label_space, prompt_ids, not is_default_request(prompts), name, enabled)
    notes = [skipped_message(decision, name)] if decision.skipped else []
    notes += decision.warnings
    if not decision.prompt_ids:
        raise PredictionError(f"{notes[0]}; no prompt of model {model_name} is left to run")
    info = {"scan": decision.scan_modality, "reason": decision.reason, "skipped": dict(decision.skipped)}
    return decision.prompt_ids, notes, info


__all__ = ["CT_HU_BELOW", "GuardDecision", "guard_prompts", "is_default_request", "prompt_modalities",
           "run_guard", "scan_modality", "skipped_message"]
