"""The ``validation`` section: the model-selection split of each dataset's labeled cases."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from versemi.data.config.datasets import DatasetConfig
from versemi.data.config.folders import ReviewDirConfig
from versemi.data.config.readers import Context, check_keys, read_int
from versemi.data.dataset import Case

VALIDATION_KEYS = ("fraction", "seed")
DEFAULT_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class ValidationConfig:
    """Model-selection split of each dataset's labeled training cases."""

    fraction: float = DEFAULT_VALIDATION_FRACTION
    seed: int = 0


def parse_validation(ctx: Context, raw: dict[str, Any], default_seed: int) -> ValidationConfig:
    """The ``validation`` section; its seed defaults to the config's ``seed``."""
    check_keys(ctx, "validation", raw, VALIDATION_KEYS)
    fraction = raw.get("fraction", DEFAULT_VALIDATION_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ctx.error("validation.fraction", f"must be a number in [0, 1), got {fraction!r}")
    return ValidationConfig(float(fraction), read_int(ctx, "validation.seed", raw.get("seed", default_seed)))


def split_validation(
    datasets: Sequence[DatasetConfig], review_dirs: Sequence[ReviewDirConfig], validation: ValidationConfig
) -> tuple[list[Case], list[Case]]:
    """Split each dataset's labeled cases into (training, validation); see :meth:`TrainConfig.split_validation`."""
    train: list[Case] = []
    val: list[Case] = []
    fraction = validation.fraction
    for d in datasets:
        cases = d.labeled_cases()
        n = len(cases)
        n_val = 0
        if fraction > 0 and n >= 2:
            n_val = min(max(1, int(math.floor(fraction * n + 0.5))), n - 1)
        rng = np.random.default_rng([validation.seed, zlib.crc32(d.name.encode("utf-8"))])
        order = rng.permutation(n)
        val_idx = set(int(i) for i in order[:n_val])
        train.extend(c for i, c in enumerate(cases) if i not in val_idx)
        val.extend(c for i, c in enumerate(cases) if i in val_idx)
    for r in review_dirs:
        train.extend(r.labeled)
    return train, val
