"""Self-describing checkpoints: one file that carries everything needed to resume or to predict.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no pickled code). Keys:

- ``format`` ("versemi-checkpoint"), ``format_version`` (int), ``versemi_version`` (str)
- ``model_config``: the architecture (``versemi.model.build_model`` input)
- ``label_space``: ``LabelSpace.to_dict()``
- ``plans``: ``Plans.to_dict()`` (:mod:`versemi.data.plans`): each training dataset's preprocessing
  and patch/window, and which dataset's plan the extra (unlabeled, review) folders used
- ``model``: the weights to predict with (state dict)
- training state, present in training checkpoints: ``config``, ``optimizer``, ``scaler``, ``ema``,
  ``schedule``, ``rng``, ``step``, ``stage``, ``best_metric``...

Files are written to a temporary file in the same folder, flushed to disk and renamed over the
target, so a crash leaves either the old or the new checkpoint, never a truncated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from versemi import __version__
from versemi.fileio import atomic_write

FORMAT = "versemi-checkpoint"
# 2: per-dataset plans (``plans``) replace the single ``preprocessing`` spec and its ``patch_size``.
FORMAT_VERSION = 2
REQUIRED_FOR_INFERENCE = ("model_config", "label_space", "plans", "model")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically to ``path`` (temp file + fsync + rename)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "versemi_version": __version__, **payload}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", for_inference: bool = False
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that it is a usable VerSemi checkpoint.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file; not a VerSemi checkpoint; a format
            version this release cannot read; keys missing for inference.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated, corrupt, or not a safe weights-only file): {exc}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a VerSemi checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is incompatible with this versemi "
            f"{__version__} (reads format version {FORMAT_VERSION}); it was written by versemi "
            f"{payload.get('versemi_version', '?')}"
        )
    if for_inference:
        missing = [k for k in REQUIRED_FOR_INFERENCE if k not in payload]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} needed for prediction")
    return payload
