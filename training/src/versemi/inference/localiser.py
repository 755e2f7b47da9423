"""Localisers: find a crop-trained structure in a whole scan, for coarse-to-fine prediction.

Sweeping a whole head with a prompt trained on hippocampus crops is slow and leaves false components,
and a coarse pass of the segmentation model does not find the structure. A localiser is a separate,
tiny fully convolutional network run once over the scan on a coarse isotropic grid; components above
``threshold`` become boxes (input voxel indices) grown by ``margin_mm`` and at least ``min_box_mm``.
It belongs to a training dataset, is its own small file referenced from the model's catalogue entry
and is verified like a checkpoint. ``bench/localiser.py`` trains it; docs/PREDICT.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from versemi.checkpoint import CheckpointError, _save_with_checksum, verify_checkpoint_file
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case
from versemi.fileio import atomic_write, sha256_file

LOCALISER_FORMAT = "versemi-localiser"
LOCALISER_VERSION = 1
#: Every axis of the localiser's input is padded to a multiple of this (two poolings).
SIZE_DIVISOR = 4


class LocaliserError(ValueError):
    """A localiser file that cannot be read or does not fit (the message names the file)."""


class LocaliserNet(nn.Module):
    """A three-level 3D U-Net with ``channels``, 2x and 4x filters: one logit per voxel."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        c = int(channels)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True),
                nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True),
            )

        self.enc1, self.enc2, self.enc3 = block(1, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.dec2, self.dec1 = block(6 * c, 2 * c), block(3 * c, c)
        self.head = nn.Conv3d(c, 1, 1)
        self.pool = nn.MaxPool3d(2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.head(d1)


@dataclass
class Localiser:
    """A trained localiser of one dataset's structures.

    Attributes:
        dataset: The training dataset whose labels (their union) it locates.
        net: The network.
        spacing: Its isotropic input grid, mm, (x, y, z).
        threshold: Probability from which a voxel is "structure".
        margin_mm: Each located box grows by this on every side before the fine stage.
        min_box_mm: A box is at least this large (x, y, z mm): the context the prompt was trained on.
        min_fraction: Components smaller than this fraction of the largest are ignored.
        info: What it was trained on and its validation numbers (free-form, JSON-like).
    """

    dataset: str
    net: LocaliserNet
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    threshold: float = 0.5
    margin_mm: float = 5.0
    min_box_mm: tuple[float, float, float] = (35.0, 50.0, 36.0)
    min_fraction: float = 0.1
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def spec_for(self, plan_spec: PreprocessingSpec) -> PreprocessingSpec:
        """The dataset plan's preprocessing at the localiser's grid."""
        return dataclasses.replace(plan_spec, target_spacing=tuple(self.spacing))

    @torch.no_grad()
    def probabilities(self, volume: np.ndarray) -> np.ndarray:
        """Structure probability per voxel of a preprocessed ``(d, h, w)`` volume (padded as needed)."""
        self.net.eval()
        shape = volume.shape
        padded = [int(math.ceil(n / SIZE_DIVISOR) * SIZE_DIVISOR) for n in shape]
        x = np.full(padded, float(volume.min()) if volume.size else 0.0, dtype=np.float32)
        x[: shape[0], : shape[1], : shape[2]] = volume
        logits = self.net(torch.from_numpy(x)[None, None])
        return torch.sigmoid(logits)[0, 0, : shape[0], : shape[1], : shape[2]].numpy()

    def locate(self, image: sitk.Image, plan_spec: PreprocessingSpec) -> list[tuple[int, ...]]:
        """Boxes ``(x0, y0, z0, x1, y1, z1)`` (voxel indices of ``image``, end exclusive) around each
        located component, grown by the margin; overlapping boxes are merged; empty when nothing is
        located."""
        case = preprocess_case(image, self.spec_for(plan_spec))
        prob = self.probabilities(case.image)
        boxes = [physical_box(b, case.record, image) for b in component_boxes(prob >= self.threshold, self.min_fraction)]
        grown = [grow_box(b, image, self.margin_mm, self.min_box_mm) for b in boxes]
        return merge_boxes(grown)

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": LOCALISER_FORMAT, "version": LOCALISER_VERSION, "dataset": self.dataset,
            "channels": int(self.net.enc1[0].out_channels), "spacing": list(self.spacing),
            "threshold": float(self.threshold), "margin_mm": float(self.margin_mm),
            "min_box_mm": list(self.min_box_mm), "min_fraction": float(self.min_fraction),
            "info": dict(self.info), "state_dict": self.net.state_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically with a SHA-256 trailer (:mod:`versemi.checkpoint`)."""
        payload = self.to_payload()
        return atomic_write(Path(path), lambda f: _save_with_checksum(payload, f))

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> "Localiser":
        """Read a localiser file: its SHA-256 checked against ``expected_sha256`` (the catalogue's) and
        its own checksum trailer, then ``torch.load(weights_only=True)``.

        Raises:
            LocaliserError: damaged, not a localiser, or an unknown version.
        """
        path = Path(path)
        try:
            if expected_sha256 is not None and sha256_file(path) != expected_sha256.lower():
                raise LocaliserError(f"{path}: localiser file does not match its recorded SHA-256; reinstall it")
            verify_checkpoint_file(path)
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (CheckpointError, OSError, RuntimeError, ValueError) as exc:
            raise LocaliserError(f"{path}: cannot read localiser: {exc}") from None
        if not isinstance(payload, Mapping) or payload.get("format") != LOCALISER_FORMAT:
            raise LocaliserError(f"{path}: not a VerSemi localiser file")
        if payload.get("version") != LOCALISER_VERSION:
            raise LocaliserError(f"{path}: localiser version {payload.get('version')} is not supported")
        net = LocaliserNet(int(payload["channels"]))
        net.load_state_dict(payload["state_dict"])
        net.eval()
        return cls(
            dataset=str(payload["dataset"]), net=net, spacing=tuple(float(s) for s in payload["spacing"]),  # type: ignore[arg-type]
            threshold=float(payload["threshold"]), margin_mm=float(payload["margin_mm"]),
            min_box_mm=tuple(float(s) for s in payload["min_box_mm"]),  # type: ignore[arg-type]
            min_fraction=float(payload["min_fraction"]), info=dict(payload.get("info") or {}),
        )


def component_boxes(mask: np.ndarray, min_fraction: float) -> list[tuple[tuple[int, int], ...]]:
    """Half-open ``((z0, z1), (y0, y1), (x0, x1))`` boxes of the 26-connected components of ``mask``
    holding at least ``min_fraction`` of the largest one's voxels."""
    from scipy import ndimage

    if not mask.any():
        return []
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    keep = {i + 1 for i, s in enumerate(sizes) if s >= min_fraction * sizes.max()}
    out = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if index in keep and region is not None:
            out.append(tuple((int(s.start), int(s.stop)) for s in region))
    return out


def physical_box(box_zyx: Sequence[tuple[int, int]], record: Mapping[str, Any], image: sitk.Image) -> tuple[int, ...]:
    """A box on the preprocessed (cropped) grid -> the covering box ``(x0, y0, z0, x1, y1, z1)`` of
    ``image``'s voxel indices (all 8 corners mapped through physical space, clipped to the image)."""
    grid = record["resampled"]
    crop = [int(a) for a, _ in record["crop_bbox_zyx"]]
    spacing = np.asarray(grid["spacing"], dtype=float)
    direction = np.asarray(grid["direction"], dtype=float).reshape(3, 3)
    origin = np.asarray(grid["origin"], dtype=float)
    lo_xyz = [box_zyx[2 - a][0] + crop[2 - a] - 0.5 for a in range(3)]
    hi_xyz = [box_zyx[2 - a][1] + crop[2 - a] - 0.5 for a in range(3)]
    corners = []
    for bits in np.ndindex(2, 2, 2):
        index = np.asarray([hi_xyz[a] if bits[a] else lo_xyz[a] for a in range(3)])
        point = origin + direction @ (spacing * index)
        corners.append(image.TransformPhysicalPointToContinuousIndex(point.tolist()))
    arr = np.asarray(corners)
    size = np.asarray(image.GetSize())
    lo = np.clip(np.floor(arr.min(axis=0) + 0.5), 0, size).astype(int)
    hi = np.clip(np.ceil(arr.max(axis=0) + 0.5), 0, size).astype(int)
    return (*lo.tolist(), *hi.tolist())


def grow_box(box: Sequence[int], image: sitk.Image, margin_mm: float, min_mm: Sequence[float]) -> tuple[int, ...]:
    """``box`` grown by ``margin_mm`` per side and to at least ``min_mm`` per axis (centred), clipped
    to ``image``."""
    size, spacing = image.GetSize(), image.GetSpacing()
    out_lo, out_hi = [], []
    for a in range(3):
        lo, hi = box[a] - margin_mm / spacing[a], box[a + 3] + margin_mm / spacing[a]
        short = min_mm[a] / spacing[a] - (hi - lo)
        if short > 0:
            lo, hi = lo - short / 2, hi + short / 2
        out_lo.append(max(0, int(math.floor(lo))))
        out_hi.append(min(int(size[a]), int(math.ceil(hi))))
    return (*out_lo, *out_hi)


def merge_boxes(boxes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Overlapping boxes merged into their union box, repeatedly, so the result is disjoint."""
    out = [tuple(int(v) for v in b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if all(a[k] < b[k + 3] and b[k] < a[k + 3] for k in range(3)):
                    out[i] = (*[min(a[k], b[k]) for k in range(3)], *[max(a[k + 3], b[k + 3]) for k in range(3)])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(out)


__all__ = ["LOCALISER_FORMAT", "Localiser", "LocaliserError", "LocaliserNet", "component_boxes", "grow_box",
           "merge_boxes", "physical_box"]
