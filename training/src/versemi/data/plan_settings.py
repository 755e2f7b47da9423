"""The plan settings a training config may set, their defaults, and the plans' error type.

Shared by the config parser (:mod:`versemi.data.config`), fingerprints and plans
(:mod:`versemi.data.plans`); it imports nothing, so each of them can import it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

#: Voxels of one training patch by default: 48 x 64 x 48, what two CPU cores train in about one
#: second per step with bf16 autocast (bench/train_speed.py). Raise it on a GPU (e.g. 128**3).
DEFAULT_PATCH_VOXELS = 48 * 64 * 48
#: ``plans.network_geometry``: per-dataset pooling and in-plane kernels from the spacing
#: (versemi.network.geometry), or every axis pooled at every stage (plans made before geometries).
NETWORK_GEOMETRIES = ("spacing", "isotropic")
#: The plan keys a config may set for a dataset instead of having them derived.
OVERRIDE_KEYS = ("target_spacing", "patch_size", "normalization")


class PlansError(ValueError):
    """Plans that cannot be made or read; the message names the dataset and the problem."""


def positive_triple(values: Sequence[Any], kind: type, what: str) -> tuple[Any, Any, Any]:
    """Three positive finite numbers (x, y, z) converted to ``kind``.

    Raises:
        PlansError: not three positive finite numbers; the message starts with ``what``.
    """
    out = tuple(kind(v) for v in values)
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise PlansError(f"{what} must be three positive numbers (x, y, z), got {list(values)!r}")
    return out  # type: ignore[return-value]
