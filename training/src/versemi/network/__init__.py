"""versemi.network: 3D backbones (V-Net, U-Net), the DoDNet dynamic head, ``PromptedSegmenter``.

The network architecture (a checkpoint's ``model_config`` builds it). "Model" elsewhere in the
package means a trained model file: :mod:`versemi.models` (catalogue, cache, downloads), the CLI's
``versemi models`` and the Slicer module's model list.
"""

from versemi.network.backbones import BACKBONES, EncoderDecoder3d, UNet3d, VNet3d
from versemi.network.dynamic_head import DynamicHead
from versemi.network.segmenter import DEFAULT_CONFIG, PromptedSegmenter, build_model, resolve_config

__all__ = [
    "BACKBONES",
    "DEFAULT_CONFIG",
    "DynamicHead",
    "EncoderDecoder3d",
    "PromptedSegmenter",
    "UNet3d",
    "VNet3d",
    "build_model",
    "resolve_config",
]
