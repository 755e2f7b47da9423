"""versemi.model: 3D backbones (V-Net, U-Net), the DoDNet dynamic head, ``PromptedSegmenter``."""

from versemi.model.backbones import BACKBONES, EncoderDecoder3d, UNet3d, VNet3d
from versemi.model.dynamic_head import DynamicHead
from versemi.model.network import DEFAULT_CONFIG, PromptedSegmenter, build_model, resolve_config

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
