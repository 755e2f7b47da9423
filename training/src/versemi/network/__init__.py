"""The network architecture: backbones (V-Net, U-Net), the DoDNet dynamic head, ``PromptedSegmenter``
and the per-plan geometry (pooling and kernels per stage).

A trained model *file* is :mod:`versemi.models`' business. Names are imported lazily so the plans can
read :mod:`versemi.network.geometry` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKBONES": "backbones",
    "EncoderDecoder3d": "backbones",
    "UNet3d": "backbones",
    "VNet3d": "backbones",
    "DynamicHead": "dynamic_head",
    "NetworkGeometry": "geometry",
    "plan_geometry": "geometry",
    "DEFAULT_CONFIG": "segmenter",
    "PromptedSegmenter": "segmenter",
    "build_model": "segmenter",
    "resolve_config": "segmenter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'versemi.network' has no attribute {name!r}")
    return getattr(importlib.import_module(f"versemi.network.{_EXPORTS[name]}"), name)
