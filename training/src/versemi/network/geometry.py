"""Per-plan network geometry: which axes each stage pools and where kernels stay in-plane.

One network serves 1 mm isotropic crops and 1.5 x 1.5 x 10 mm cine MRI; pooling every axis would
shrink an 8-slice patch to one slice, and a 3x3x3 kernel would mix slices 10 mm apart. So each plan
carries a :class:`NetworkGeometry` (nnU-Net's rule): an axis is pooled while its spacing is at most
twice the finest and it keeps :data:`MIN_FEATURE_SIZE` voxels; a kernel is 1 along an axis more than
twice as coarse as the finest. Weights are shared by every geometry (:mod:`versemi.network.backbones`);
``None`` is the isotropic network. Axes are ``(x, y, z)``. Example, ACDC (patch 104 x 104 x 8)::

    pool   [[2, 2, 1], [2, 2, 1], [2, 2, 2]]        -> bottleneck 13 x 13 x 4
    kernel [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: A pooled axis keeps at least this many voxels (nnU-Net's minimum feature map size).
MIN_FEATURE_SIZE = 4
#: An axis coarser than this multiple of the finest axis is neither pooled nor convolved across.
ANISOTROPY_THRESHOLD = 2.0

Triple = tuple[int, int, int]


def _triples(values: Any, allowed: set[int], what: str) -> tuple[Triple, ...]:
    try:
        out = tuple(tuple(int(v) for v in entry) for entry in values)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a list of (x, y, z) integer triples, got {values!r}") from None
    if any(len(t) != 3 or any(v not in allowed for v in t) for t in out):
        raise ValueError(f"{what}: every entry must be three of {sorted(allowed)}, got {values!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class NetworkGeometry:
    """Pooling per stage transition and kernel per stage, ``(x, y, z)``.

    Attributes:
        pool: ``depth - 1`` triples of 1 or 2: the down-sampling factor after each encoder stage.
        kernel: ``depth`` triples of 1 or 3: the kernel of each stage's convolutions (the decoder stage
            at the same resolution uses the same).
    """

    pool: tuple[Triple, ...]
    kernel: tuple[Triple, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool", _triples(self.pool, {1, 2}, "pool"))
        object.__setattr__(self, "kernel", _triples(self.kernel, {1, 3}, "kernel"))
        if len(self.kernel) != len(self.pool) + 1:
            raise ValueError(f"a geometry needs one kernel per stage and one pool per stage transition; got "
                             f"{len(self.kernel)} kernels and {len(self.pool)} pools")

    @property
    def depth(self) -> int:
        return len(self.kernel)

    def pool_zyx(self, stage: int) -> Triple:
        x, y, z = self.pool[stage]
        return z, y, x

    def kernel_zyx(self, stage: int) -> Triple:
        x, y, z = self.kernel[stage]
        return z, y, x

    @property
    def divisor(self) -> Triple:
        """Total down-sampling per axis ``(x, y, z)``: input sizes must be multiples of it."""
        return tuple(math.prod(p[axis] for p in self.pool) for axis in range(3))  # type: ignore[return-value]

    def bottleneck_size(self, patch_size: Sequence[int]) -> Triple:
        """The bottleneck's size ``(x, y, z)`` for a patch ``(x, y, z)``."""
        return tuple(int(p) // d for p, d in zip(patch_size, self.divisor))  # type: ignore[return-value]

    @property
    def is_isotropic(self) -> bool:
        return all(p == (2, 2, 2) for p in self.pool) and all(k == (3, 3, 3) for k in self.kernel)

    def to_dict(self) -> dict[str, Any]:
        return {"pool": [list(p) for p in self.pool], "kernel": [list(k) for k in self.kernel]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetworkGeometry":
        return cls(pool=d["pool"], kernel=d["kernel"])

    @classmethod
    def isotropic(cls, depth: int) -> "NetworkGeometry":
        """Every axis pooled at every stage, 3x3x3 kernels: the network without a plan geometry."""
        return cls(pool=((2, 2, 2),) * (depth - 1), kernel=((3, 3, 3),) * depth)

    def describe(self) -> str:
        """One line for ``versemi plan``: pooling and in-plane stages."""
        pools = " ".join("x".join(str(v) for v in p) for p in self.pool)
        kernels = " ".join("x".join(str(v) for v in k) for k in self.kernel)
        return f"pooling {pools}; kernels {kernels}"


def plan_geometry(spacing: Sequence[float], patch_size: Sequence[int], depth: int) -> NetworkGeometry:
    """The geometry of a plan (module docstring): nnU-Net's anisotropy rule per stage.

    Args:
        spacing: Target spacing ``(x, y, z)`` in mm.
        patch_size: Patch ``(x, y, z)`` in voxels (multiples of ``2**(depth - 1)``).
        depth: Stages of the network.
    """
    current = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    pools: list[Triple] = []
    kernels: list[Triple] = []
    for stage in range(depth):
        finest = min(current)
        coarse_axis = [s > ANISOTROPY_THRESHOLD * finest for s in current]
        kernels.append(tuple(1 if c else 3 for c in coarse_axis))  # type: ignore[arg-type]
        if stage == depth - 1:
            break
        pool = tuple(2 if not c and n % 2 == 0 and n // 2 >= MIN_FEATURE_SIZE else 1
                     for c, n in zip(coarse_axis, size))
        pools.append(pool)  # type: ignore[arg-type]
        current = [s * p for s, p in zip(current, pool)]
        size = [n // p for n, p in zip(size, pool)]
    return NetworkGeometry(tuple(pools), tuple(kernels))


__all__ = ["ANISOTROPY_THRESHOLD", "MIN_FEATURE_SIZE", "NetworkGeometry", "plan_geometry"]
