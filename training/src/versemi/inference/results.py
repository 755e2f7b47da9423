"""What a prediction returns (label table, labelmap, probabilities, files) and how it refuses.

Shared by the planning (:mod:`versemi.inference.planning`), the export
(:mod:`versemi.inference.export`) and the :class:`~versemi.inference.Predictor` that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import SimpleITK as sitk

from versemi.labels import display_name

if TYPE_CHECKING:
    import torch


class PredictionError(ValueError):
    """A prediction request that cannot be carried out (bad ROI, bad option, ...)."""


@dataclass(frozen=True)
class LabelEntry:
    """One value of the output labelmap, or (``hidden``) a hidden prompt shown to a model-space hook.

    Attributes:
        value: The label value (1..K); 0 for a hidden prompt, which never becomes a label.
        name: The prompt name.
        color: RGB colour.
        snomed: SNOMED CT code, if any.
        prompt_id: The prompt's index in the model's label space.
        hidden: A hidden prompt (see :meth:`Predictor.predict`): only a ``model_space_hook`` sees it.
    """

    value: int
    name: str
    color: tuple[int, int, int]
    snomed: dict[str, str] | None
    prompt_id: int
    hidden: bool = False

    @property
    def title(self) -> str:
        """The human-readable name Slicer shows (``"Hippocampus, anterior"``)."""
        return display_name(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "title": self.title, "color": list(self.color),
                "snomed": self.snomed, "prompt_id": self.prompt_id}


@dataclass
class PredictionResult:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        labelmap: uint8 image on exactly the input grid; values 1..K follow ``labels``.
        labels: The label table (value, name, colour, SNOMED CT code, prompt id), in prompt order.
        probabilities: Prompt name -> float32 probability image on the input grid, when requested.
        info: How the prediction was made (device, quality, spacing, overlap, TTA, timings, ...);
            JSON-serialisable, copied into the sidecar.
    """

    labelmap: sitk.Image
    labels: list[LabelEntry]
    probabilities: dict[str, sitk.Image] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictFileResult:
    """What :meth:`Predictor.predict_file` wrote."""

    output: Path
    sidecar: Path
    colour_table: Path
    probabilities: list[Path]
    result: PredictionResult


ProbabilitySink = Callable[[LabelEntry, sitk.Image], None]
"""Receives each prompt's full-resolution probability image as soon as it is restored."""

ModelSpaceHook = Callable[["torch.Tensor", list[LabelEntry], Mapping[str, Any]], "Mapping[str, Any] | None"]
"""Receives the ``(P, d, h, w)`` probabilities at the model spacing, their label entries (channel
``k`` is ``labels[k]``) and the preprocessing record, before they are restored; may return fields to
add to ``result.info`` (e.g. a per-case uncertainty score computed cheaply at the model spacing).
When the chosen prompts need several preprocessing groups, it is called once, for the first group
(the group of the first chosen prompt, which also holds the synthetic prompt), with that group's
probabilities and label entries. Hidden prompts come last, as entries with ``hidden=True`` and
value 0 (find them by ``prompt_id`` or ``name``); the hook must not modify ``probs``."""


__all__ = [
    "LabelEntry",
    "ModelSpaceHook",
    "PredictFileResult",
    "PredictionError",
    "PredictionResult",
    "ProbabilitySink",
]
