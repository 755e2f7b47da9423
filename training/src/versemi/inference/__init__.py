"""Inference: checkpoint -> preprocessing -> sliding window -> labelmap on the input grid.

The one path of ``versemi predict``, ``versemi pseudolabel``, evaluation and the Slicer module::

    from versemi.inference import Predictor

    predictor = Predictor("model.pt", device="auto")
    result = predictor.predict(image, "liver,spleen")          # labelmap on the image's grid
    predictor.predict_file("ct.nrrd", "ct_seg.nii.gz", "all")  # + ct_seg.json + ct_seg.ctbl, atomically

Modules: :mod:`~versemi.inference.predictor` (the :class:`Predictor`), the three steps it runs -
:mod:`~versemi.inference.planning`, :mod:`~versemi.inference.sliding`,
:mod:`~versemi.inference.export` - and :mod:`~versemi.inference.results` (what it returns),
:mod:`~versemi.inference.io` (input checks), :mod:`~versemi.inference.progress`,
:mod:`~versemi.inference.folder` (the loop over a folder of scans) and its two users,
:mod:`~versemi.inference.batch` (predictions) and :mod:`~versemi.inference.pseudolabel` (for review).

The names below are imported on first use (PEP 562), so that a light submodule (e.g. the planning)
can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "validate_input_image": "versemi.inference.io",
    "LabelEntry": "versemi.inference.results",
    "PredictFileResult": "versemi.inference.results",
    "PredictionError": "versemi.inference.results",
    "PredictionResult": "versemi.inference.results",
    "Predictor": "versemi.inference.predictor",
    "resolve_device": "versemi.devices",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
