"""3D encoder-decoder backbones: the V-Net of the VerSemi reference and a plain U-Net.

Both return the full-resolution decoder features ``(B, base_filters, D, H, W)``, which the dynamic head
turns into one logit map per prompt, and the bottleneck features, which it pools into each image's
context. Stage ``i`` has ``base_filters * 2**i`` channels. A
:class:`~versemi.network.geometry.NetworkGeometry` pools and convolves per axis with the SAME weights
(a 1-wide kernel is the centre of the 3-wide one; an unpooled axis sums the down-sampling kernel and
averages the up-sampling kernel over it), so one set of weights serves every plan.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from versemi.network.geometry import NetworkGeometry

NORMS = ("instance", "batch", "group", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 3D normalisation layer by name.

    Args:
        norm: ``"instance"`` (no affine, as the reference V-Net), ``"batch"``, ``"group"`` (up to 8
            groups that divide ``channels``) or ``"none"``.
        channels: Number of feature channels.

    Returns:
        The layer (``nn.Identity`` for ``"none"``).
    """
    if norm == "instance":
        return nn.InstanceNorm3d(channels)
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same weights and state dict) that steps out of CPU bf16 autocast where oneDNN
    computes a wrong weight gradient.

    Measured with torch 2.13 on an AVX-512-BF16 Xeon (``tests/network/test_segmenter.py``): a 3x3x3
    convolution with padding 1 whose input has a depth of exactly 2 gets a bf16 weight gradient that
    is garbage (relative error ~1, often inf/NaN), whatever the other sizes and channels; every other
    depth is exact to bf16 precision. Such inputs occur in a network's deepest stages (a 32^3 patch at
    depth 5, a 16-slice patch at depth 4) and made bf16 training go NaN after a few steps. Those
    convolutions run in float32 (they are the cheapest of the network: a depth of 2).
    """

    def forward(self, x: torch.Tensor, kernel_zyx: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Convolve; ``kernel_zyx`` with 1 on an axis uses the centre of the kernel along it (in-plane)."""
        if x.device.type == "cpu" and x.dim() == 5 and x.shape[2] == 2 and _cpu_autocast_enabled():
            with torch.autocast("cpu", enabled=False):
                return self._conv(x.float(), kernel_zyx)
        return self._conv(x, kernel_zyx)

    def _conv(self, x: torch.Tensor, kernel_zyx: tuple[int, int, int] | None) -> torch.Tensor:
        if kernel_zyx is None or tuple(kernel_zyx) == tuple(self.kernel_size):
            return super().forward(x)
        weight = self.weight
        for axis, (k, full) in enumerate(zip(kernel_zyx, self.kernel_size)):
            if k == 1 and full > 1:
                weight = weight.narrow(2 + axis, full // 2, 1)
        padding = tuple(k // 2 for k in weight.shape[2:])
        return F.conv3d(x, weight, self.bias, 1, padding)


def reference_convs_per_stage(depth: int) -> list[int]:
    """Convolutions per stage of the reference V-Net: 1, 2, 3, 3, 3 (encoder and mirrored decoder)."""
    return [min(stage + 1, 3) for stage in range(depth)]


def resolve_convs_per_stage(convs_per_stage: int | Sequence[int] | None, depth: int) -> list[int]:
    """Turn the ``convs_per_stage`` setting into one count per stage.

    Args:
        convs_per_stage: ``None`` (the reference schedule), one int for every stage, or one int per
            stage (``depth`` of them).
        depth: Number of resolution stages.

    Returns:
        ``depth`` positive ints.
    """
    if convs_per_stage is None:
        return reference_convs_per_stage(depth)
    if isinstance(convs_per_stage, int):
        counts = [convs_per_stage] * depth
    else:
        counts = [int(c) for c in convs_per_stage]
    if len(counts) != depth or any(c < 1 for c in counts):
        raise ValueError(
            f"convs_per_stage must be a positive int or {depth} positive ints (one per stage), "
            f"got {convs_per_stage!r}"
        )
    return counts


class ConvStack(nn.Module):
    """``n`` x (3x3x3 conv -> norm -> activation), optionally residual as in the V-Net.

    With ``residual=True`` the block computes ``act(convs(x) + shortcut(x))`` where the last conv has
    no activation of its own (the reference ``ResidualConvBlock``); the shortcut is a 1x1x1 conv when
    the channel count changes (only the first V-Net stage, whose input is the image).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_convs: int,
        norm: str,
        activation: type[nn.Module],
        residual: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            # A norm right after the conv makes its bias redundant.
            layers.append(
                Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=norm == "none")
            )
            layers.append(make_norm(norm, out_channels))
            if not (residual and i == num_convs - 1):
                layers.append(activation())
        self.convs = nn.Sequential(*layers)
        self.residual = residual
        self.shortcut: nn.Module = (
            nn.Conv3d(in_channels, out_channels, 1)
            if residual and in_channels != out_channels
            else nn.Identity()
        )
        self.final_activation = activation() if residual else nn.Identity()

    def forward(self, x: torch.Tensor, kernel_zyx: tuple[int, int, int] | None = None) -> torch.Tensor:
        out = x
        for layer in self.convs:
            out = layer(out, kernel_zyx) if isinstance(layer, Conv3d) else layer(out)
        if self.residual:
            out = self.final_activation(out + self.shortcut(x))
        return out


class Resample(nn.Sequential):
    """Stride-2, kernel-2 (transposed) conv -> norm -> activation: halves / doubles the resolution.

    ``factor_zyx`` with 1 on an axis leaves that axis alone with the same weights: the down-sampling
    kernel summed over it (as if the axis were sampled twice as finely), the up-sampling kernel
    averaged over it (its two outputs averaged).
    """

    def __init__(self, conv: type[nn.Conv3d] | type[nn.ConvTranspose3d], in_channels: int, out_channels: int,
                 norm: str, activation: type[nn.Module]) -> None:
        super().__init__(
            conv(in_channels, out_channels, 2, stride=2, bias=norm == "none"),
            make_norm(norm, out_channels),
            activation(),
        )

    def forward(self, x: torch.Tensor, factor_zyx: tuple[int, int, int] | None = None) -> torch.Tensor:
        conv, *rest = list(self)
        if factor_zyx is None or all(f == 2 for f in factor_zyx):
            x = conv(x)
        else:
            weight = conv.weight
            for axis, f in enumerate(factor_zyx):
                if f == 1:
                    reduce = weight.mean if isinstance(conv, nn.ConvTranspose3d) else weight.sum
                    weight = reduce(dim=2 + axis, keepdim=True)
            op = F.conv_transpose3d if isinstance(conv, nn.ConvTranspose3d) else F.conv3d
            x = op(x, weight, conv.bias, stride=tuple(factor_zyx))
        for layer in rest:
            x = layer(x)
        return x


class EncoderDecoder3d(nn.Module):
    """Shared skeleton of both backbones: encoder stages, a bottleneck, decoder stages.

    Args:
        in_channels: Image channels (modalities).
        base_filters: Channels of the first stage (doubled per stage).
        depth: Number of resolution stages, including the bottleneck (>= 2).
        convs_per_stage: See :func:`resolve_convs_per_stage`; the decoder mirrors the encoder.
        norm: See :func:`make_norm`.
        dropout: ``Dropout3d`` probability applied to the bottleneck features while training.
        skip: ``"add"`` (V-Net) or ``"concat"`` (U-Net).
        residual: Residual conv blocks (V-Net).
        activation: Activation module class.
    """

    def __init__(
        self,
        in_channels: int,
        base_filters: int,
        depth: int,
        convs_per_stage: int | Sequence[int] | None,
        norm: str,
        dropout: float,
        skip: str,
        residual: bool,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2 (got {depth})")
        if in_channels < 1 or base_filters < 1:
            raise ValueError(
                f"in_channels and base_filters must be >= 1 (got {in_channels}, {base_filters})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        if skip not in ("add", "concat"):
            raise ValueError(f"skip must be 'add' or 'concat' (got {skip!r})")
        make_norm(norm, base_filters)  # validates the name early, with the clear message
        counts = resolve_convs_per_stage(convs_per_stage, depth)
        widths = [base_filters * 2**stage for stage in range(depth)]
        self.skip = skip
        self.out_channels = base_filters
        self.bottleneck_channels = widths[-1]
        self.size_divisor = 2 ** (depth - 1)

        def stack(c_in: int, c_out: int, n: int) -> ConvStack:
            return ConvStack(c_in, c_out, n, norm, activation, residual)

        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        for stage in range(depth):
            self.encoder.append(
                stack(in_channels if stage == 0 else widths[stage], widths[stage], counts[stage])
            )
            if stage < depth - 1:
                self.down.append(Resample(nn.Conv3d, widths[stage], widths[stage + 1], norm, activation))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for stage in reversed(range(depth - 1)):
            self.up.append(Resample(nn.ConvTranspose3d, widths[stage + 1], widths[stage], norm, activation))
            merged = widths[stage] * (2 if skip == "concat" else 1)
            self.decoder.append(stack(merged, widths[stage], counts[stage]))
        self.bottleneck_dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.depth = depth

    def divisor_zyx(self, geometry: NetworkGeometry | None) -> tuple[int, int, int]:
        """What every input size ``(D, H, W)`` must be a multiple of under ``geometry``."""
        if geometry is None:
            return (self.size_divisor,) * 3
        x, y, z = geometry.divisor
        return z, y, x

    def forward(
        self, images: torch.Tensor, geometry: NetworkGeometry | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the encoder-decoder.

        Args:
            images: ``(B, in_channels, D, H, W)``, sizes divisible by :meth:`divisor_zyx`.
            geometry: Per-stage pooling and kernels of the image's plan (``None``: isotropic).

        Returns:
            ``(decoder_features (B, base_filters, D, H, W), bottleneck (B, C_bottleneck, ...))``.
        """
        if geometry is not None and geometry.depth != self.depth:
            raise ValueError(f"the plan's network geometry has {geometry.depth} stages but the network has "
                             f"{self.depth}")
        stages = len(self.encoder)

        def kernel(stage: int) -> tuple[int, int, int] | None:
            return None if geometry is None else geometry.kernel_zyx(stage)

        def factor(stage: int) -> tuple[int, int, int] | None:
            return None if geometry is None else geometry.pool_zyx(stage)

        skips: list[torch.Tensor] = []
        x = images
        for stage, block in enumerate(self.encoder):
            x = block(x, kernel(stage))
            if stage < len(self.down):
                skips.append(x)
                x = self.down[stage](x, factor(stage))
        bottleneck = self.bottleneck_dropout(x)
        x = bottleneck
        for index, (up, block, skip) in enumerate(zip(self.up, self.decoder, reversed(skips))):
            stage = stages - 2 - index  # the resolution this decoder stage works at
            x = up(x, factor(stage))
            x = x + skip if self.skip == "add" else torch.cat([x, skip], dim=1)
            x = block(x, kernel(stage))
        return x, bottleneck


class VNet3d(EncoderDecoder3d):
    """The V-Net of the VerSemi / UA-MT reference: residual conv blocks, stride-2 convs down,
    transposed convs up, additive skips, ReLU, instance norm by default."""

    def __init__(
        self,
        in_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        convs_per_stage: int | Sequence[int] | None = None,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_channels, base_filters, depth, convs_per_stage, norm, dropout,
            skip="add", residual=True, activation=nn.ReLU,
        )


class _LeakyReLU(nn.LeakyReLU):
    """LeakyReLU with the nnU-Net slope (0.01) and in-place update."""

    def __init__(self) -> None:
        super().__init__(negative_slope=0.01, inplace=True)


class UNet3d(EncoderDecoder3d):
    """A plain 3D U-Net (nnU-Net style): conv-norm-LeakyReLU stacks (2 per stage by default),
    stride-2 convs down, transposed convs up, concatenation skips."""

    def __init__(
        self,
        in_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        convs_per_stage: int | Sequence[int] | None = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_channels, base_filters, depth, convs_per_stage, norm, dropout,
            skip="concat", residual=False, activation=_LeakyReLU,
        )


BACKBONES: dict[str, type[EncoderDecoder3d]] = {"vnet": VNet3d, "unet": UNet3d}
