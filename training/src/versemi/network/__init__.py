"""versemi.network: 3D backbones (V-Net, U-Net), the DoDNet dynamic head, ``PromptedSegmenter``, and
the per-plan network geometry (pooling and kernels per stage).

The network architecture (a checkpoint's ``model_config`` builds it). "Model" elsewhere in the
package means a trained model file: :mod:`versemi.models` (catalogue, cache, downloads), the CLI's
``versemi models`` and the Slicer module's model list.

Names are imported lazily: the plans read :mod:`versemi.network.geometry` without importing torch.
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
