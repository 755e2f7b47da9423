"""``PromptedSegmenter``: one backbone pass per image, one foreground logit map per prompt.

The architecture is a plain JSON-able dict (stored in checkpoints as ``model_config``)::

    {"backbone": "vnet", "in_channels": 1, "base_filters": 16, "depth": 5, "convs_per_stage": None,
     "norm": "instance", "dropout": 0.0, "num_prompts": 5, "head_channels": 8, "head_layers": 3,
     "prompt_encoding": "onehot", "prompt_embedding_dim": 16, "synthetic_head": "shared",
     "synthetic_prompt": None}

Only ``num_prompts`` is required; :func:`build_model` fills in the rest (the reference V-Net).
``synthetic_head: "own"`` gives the prompt ``synthetic_prompt`` (VerSemi's synthetic prompt) a dynamic
head of its own: its losses then reach the other prompts only through the backbone, not through the
head's shared input projection and controller (``"shared"``: one head for every prompt, the reference).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from versemi.network.backbones import BACKBONES, EncoderDecoder3d, UNet3d
from versemi.network.dynamic_head import DynamicHead
from versemi.network.geometry import NetworkGeometry

DEFAULT_CONFIG: dict[str, Any] = {
    "backbone": "vnet",
    "in_channels": 1,
    "base_filters": 16,
    "depth": 5,
    # None: the reference V-Net schedule (1, 2, 3, 3, 3); the U-Net defaults to 2 per stage.
    "convs_per_stage": None,
    "norm": "instance",
    "dropout": 0.0,
    "num_prompts": None,
    "head_channels": 8,
    "head_layers": 3,
    "prompt_encoding": "onehot",
    "prompt_embedding_dim": 16,
    "synthetic_head": "shared",
    "synthetic_prompt": None,
}
SYNTHETIC_HEADS = ("shared", "own")


class PromptedSegmenter(nn.Module):
    """A 3D backbone plus the dynamic head (see :mod:`versemi.network.dynamic_head`).

    Build it with :func:`build_model`. ``forward(images, prompt_ids)`` returns float32 logits
    ``(B, P, D, H, W)``; :meth:`encode` and :meth:`decode_prompts` split it so inference can run the
    backbone once and the head for chosen prompts.

    Args:
        backbone: The encoder-decoder.
        head: The dynamic head.
        config: The full config dict this model was built from.
        synthetic_head: A head of its own for prompt ``config["synthetic_prompt"]`` (``None``: ``head``
            serves every prompt).
    """

    def __init__(self, backbone: EncoderDecoder3d, head: DynamicHead, config: Mapping[str, Any],
                 synthetic_head: DynamicHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.synthetic_head = synthetic_head
        self._config = copy.deepcopy(dict(config))

    @property
    def config(self) -> dict[str, Any]:
        """The JSON-able architecture dict; ``build_model(model.config)`` rebuilds this model."""
        return copy.deepcopy(self._config)

    @property
    def num_prompts(self) -> int:
        return self.head.num_prompts

    @property
    def in_channels(self) -> int:
        return int(self._config["in_channels"])

    @property
    def size_divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (``2**(depth-1)``)."""
        return self.backbone.size_divisor

    def check_images(self, images: torch.Tensor, geometry: NetworkGeometry | None = None) -> None:
        """Raise ``ValueError`` unless ``images`` is ``(B, in_channels, D, H, W)``, sizes divisible."""
        if images.ndim != 5:
            raise ValueError(
                f"images must be (B, C, D, H, W), got a {images.ndim}-D tensor of shape "
                f"{tuple(images.shape)}"
            )
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"images have {images.shape[1]} channels but the model expects {self.in_channels}"
            )
        spatial = tuple(images.shape[2:])
        divisor = self.backbone.divisor_zyx(geometry)
        if any(s % d for s, d in zip(spatial, divisor)):
            raise ValueError(
                f"spatial size {spatial} (D, H, W) is not divisible by the model's size divisor "
                f"{divisor[0] if len(set(divisor)) == 1 else divisor}; pad or crop the input (e.g. a patch "
                "size that is a multiple of it)"
            )

    def normalize_prompt_ids(self, prompt_ids: torch.Tensor | list[int], batch: int) -> torch.Tensor:
        """``(P,)`` or ``(B, P)`` prompt ids -> a validated ``(B, P)`` LongTensor."""
        ids = torch.as_tensor(prompt_ids)
        if ids.numel() == 0:
            raise ValueError("prompt_ids is empty: give at least one prompt")
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise ValueError(f"prompt_ids must be integers, got dtype {ids.dtype}")
        ids = ids.long()
        if ids.ndim == 1:
            ids = ids[None].expand(batch, ids.shape[0])
        elif ids.ndim != 2 or ids.shape[0] != batch:
            raise ValueError(
                f"prompt_ids must be (P,) or (B, P) with B={batch}, got shape {tuple(ids.shape)}"
            )
        if bool(((ids < 0) | (ids >= self.num_prompts)).any()):
            raise ValueError(
                f"prompt ids must be in [0, {self.num_prompts - 1}], got {ids.unique().tolist()}"
            )
        return ids

    def encode(
        self, images: torch.Tensor, geometry: NetworkGeometry | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone pass (once per image, shared by every prompt).

        Args:
            images: ``(B, in_channels, D, H, W)``, sizes divisible by :attr:`size_divisor`.
            geometry: The images' plan's pooling and kernels (``None``: isotropic).

        Returns:
            ``(decoder_features (B, base_filters, D, H, W), pooled (B, C_bottleneck))``.
        """
        self.check_images(images, geometry)
        features, bottleneck = self.backbone(images, geometry)
        return features, bottleneck.mean(dim=(2, 3, 4))

    def decode_prompts(
        self,
        decoder_features: torch.Tensor,
        pooled: torch.Tensor,
        prompt_ids: torch.Tensor | list[int],
    ) -> torch.Tensor:
        """The dynamic head for the given prompts.

        Args:
            decoder_features: From :meth:`encode`.
            pooled: From :meth:`encode`.
            prompt_ids: ``(P,)`` (same prompts for every image) or ``(B, P)``.

        Returns:
            float32 logits ``(B, P, D, H, W)``.
        """
        ids = self.normalize_prompt_ids(prompt_ids, decoder_features.shape[0]).to(pooled.device)
        # float32 out, also under autocast: losses and probability maps downstream expect it.
        if self.synthetic_head is None:
            return self.head(decoder_features, pooled, ids).float()
        own = ids == int(self._config["synthetic_prompt"])
        if not bool(own.any()):
            return self.head(decoder_features, pooled, ids).float()
        # The shared head computes a stand-in (prompt 0) where the synthetic prompt is asked for and
        # ``where`` drops it: the synthetic prompt's losses give the shared head no gradient.
        shared = self.head(decoder_features, pooled, ids.masked_fill(own, 0)).float()
        single = torch.zeros_like(ids[:, :1])
        synthetic = self.synthetic_head(decoder_features, pooled, single).float()
        return torch.where(own[:, :, None, None, None], synthetic, shared)

    def forward(
        self,
        images: torch.Tensor,
        prompt_ids: torch.Tensor | list[int],
        geometry: NetworkGeometry | None = None,
    ) -> torch.Tensor:
        """Logits of every requested prompt from ONE backbone pass per image.

        Args:
            images: ``(B, in_channels, D, H, W)``, sizes divisible by :attr:`size_divisor`.
            prompt_ids: LongTensor ``(P,)`` (same prompts for every image) or ``(B, P)``.
            geometry: The images' plan's pooling and kernels (``None``: isotropic, every axis pooled).

        Returns:
            float32 foreground logits ``(B, P, D, H, W)``; ``sigmoid`` gives probabilities.
        """
        # Validate the prompts before the (expensive) backbone pass.
        self.normalize_prompt_ids(prompt_ids, images.shape[0])
        features, pooled = self.encode(images, geometry)
        return self.decode_prompts(features, pooled, prompt_ids)


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults into a model config and check it.

    Args:
        config: At least ``num_prompts``; unknown keys are an error (typos must not pass silently).

    Returns:
        The complete config dict (JSON-able).
    """
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(
            f"unknown model config key(s) {unknown}; known keys: {sorted(DEFAULT_CONFIG)}"
        )
    resolved = {**DEFAULT_CONFIG, **dict(config)}
    if resolved["num_prompts"] is None:
        raise ValueError("model config needs 'num_prompts' (size of the label space)")
    if resolved["backbone"] not in BACKBONES:
        raise ValueError(
            f"unknown backbone {resolved['backbone']!r}; expected one of {sorted(BACKBONES)}"
        )
    if resolved["convs_per_stage"] is not None and not isinstance(resolved["convs_per_stage"], int):
        resolved["convs_per_stage"] = [int(c) for c in resolved["convs_per_stage"]]
    for key in ("in_channels", "base_filters", "depth", "num_prompts", "head_channels",
                "head_layers", "prompt_embedding_dim"):
        resolved[key] = int(resolved[key])
    resolved["dropout"] = float(resolved["dropout"])
    if resolved["synthetic_head"] not in SYNTHETIC_HEADS:
        raise ValueError(
            f"unknown synthetic_head {resolved['synthetic_head']!r}; expected one of {', '.join(SYNTHETIC_HEADS)}"
        )
    if resolved["synthetic_prompt"] is not None:
        resolved["synthetic_prompt"] = int(resolved["synthetic_prompt"])
    return resolved


def build_model(config: Mapping[str, Any]) -> PromptedSegmenter:
    """Build a :class:`PromptedSegmenter` from a config dict (see the module docstring).

    Args:
        config: Model config; ``model.config`` of the result is the completed dict.

    Returns:
        The model (freshly initialised).
    """
    cfg = resolve_config(config)
    # Checked here, not in resolve_config: config checks resolve with a stand-in prompt count.
    if cfg["synthetic_head"] == "own" and cfg["synthetic_prompt"] is None:
        raise ValueError("synthetic_head 'own' needs synthetic_prompt (the synthetic prompt's id; the trainer "
                         "fills it in from the label space)")
    if cfg["synthetic_prompt"] is not None and not 0 <= cfg["synthetic_prompt"] < cfg["num_prompts"]:
        raise ValueError(f"synthetic_prompt {cfg['synthetic_prompt']} is not a prompt id (0 to {cfg['num_prompts'] - 1})")
    backbone_cls = BACKBONES[cfg["backbone"]]
    convs = cfg["convs_per_stage"]
    if convs is None and backbone_cls is UNet3d:
        convs = 2
    backbone = backbone_cls(
        in_channels=cfg["in_channels"],
        base_filters=cfg["base_filters"],
        depth=cfg["depth"],
        convs_per_stage=convs,
        norm=cfg["norm"],
        dropout=cfg["dropout"],
    )

    def make_head(num_prompts: int) -> DynamicHead:
        return DynamicHead(
            feature_channels=backbone.out_channels,
            context_channels=backbone.bottleneck_channels,
            num_prompts=num_prompts,
            head_channels=cfg["head_channels"],
            num_layers=cfg["head_layers"],
            norm=cfg["norm"],
            prompt_encoding=cfg["prompt_encoding"],
            embedding_dim=cfg["prompt_embedding_dim"],
        )

    head = make_head(cfg["num_prompts"])
    synthetic_head = make_head(1) if cfg["synthetic_head"] == "own" else None
    return PromptedSegmenter(backbone, head, cfg, synthetic_head)
