"""The ``training:`` section of a training config, with its defaults (see docs/TRAINING.md)."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from versemi.training.losses import SegmentationLossConfig
from versemi.training.methods import METHODS

AMP_MODES = ("auto", "fp16", "bf16", "none")
OPTIMIZERS = ("adamw", "adam", "sgd")

DEFAULT_TRAINING: dict[str, Any] = {
    "method": "versemi",
    # Total optimizer steps of a method (the budget every method gets); VerSemi spends
    # stage1_fraction of them in stage 1 and the rest in stage 2 (0: one stage with every term).
    "max_steps": 10000,
    "stage1_fraction": 0.5,
    "batch_size": 2,  # labeled patches per dataset, per step and per process
    "unlabeled_batch_size": 2,  # unlabeled patches per dataset, per step and process (stage 2 / baselines)
    "optimizer": "adamw",
    "lr": 1e-3,
    "betas": [0.9, 0.999],
    "momentum": 0.99,  # SGD only (nesterov, as nnU-Net)
    "weight_decay": 1e-5,
    "lr_schedule": "poly",
    "warmup_steps": 0,
    "grad_clip": 12.0,  # max gradient norm (nnU-Net); 0 = off
    "amp": "auto",  # auto = fp16 + GradScaler on CUDA, bf16 on CPUs with native bf16, else none
    "num_workers": 2,
    "foreground_oversample": 0.33,
    "augmentation": {},
    "validate_every": 500,
    "validation_overlap": 0.5,
    "validation_sw_batch_size": 2,
    "nsd_tolerance_mm": 2.0,
    "early_stopping_patience": 0,  # validations without improvement before stopping; 0 = off
    # Labelmap post-processing stored in the checkpoint and applied by predict: "auto" (keep a prompt's
    # largest connected component where that improves its validation Dice), "none",
    # "largest_component" (every real prompt) or {prompt: "largest_component"}.
    "postprocessing": "auto",
    "checkpoint_every": 250,
    "log_every": 20,
    "tensorboard": True,
    "init_checkpoint": None,  # start weights (e.g. a supervised model for mean_teacher)
    "loss": {},
    "versemi": {},
    "mean_teacher": {},
    "bcp": {},
}


class TrainingOptionsError(ValueError):
    """An invalid ``training:`` key or value; the message names the key."""


def training_options(section: Mapping[str, Any] | None, source: str = "config") -> dict[str, Any]:
    """Defaults overridden by the config's ``training:`` section, validated.

    Raises:
        TrainingOptionsError: unknown key or invalid value (names ``<source>: training.<key>``).
    """
    section = dict(section or {})
    unknown = sorted(set(section) - set(DEFAULT_TRAINING))
    if unknown:
        raise TrainingOptionsError(
            f"{source}: training.{unknown[0]}: unknown key; known keys: {', '.join(sorted(DEFAULT_TRAINING))}"
        )
    opts = copy.deepcopy(DEFAULT_TRAINING)
    opts.update(copy.deepcopy(section))

    def bad(key: str, why: str) -> TrainingOptionsError:
        return TrainingOptionsError(f"{source}: training.{key}: {why}, got {opts[key]!r}")

    if opts["method"] not in METHODS:
        raise bad("method", f"must be one of {', '.join(METHODS)}")
    for key in ("max_steps", "batch_size", "validate_every", "checkpoint_every", "log_every"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1:
            raise bad(key, "must be a positive integer")
    for key in ("unlabeled_batch_size", "num_workers", "warmup_steps", "early_stopping_patience"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 0:
            raise bad(key, "must be a non-negative integer")
    if not 0.0 <= float(opts["stage1_fraction"]) < 1.0:
        raise bad("stage1_fraction", "must be in [0, 1) (0: a single stage with every term)")
    if opts["optimizer"] not in OPTIMIZERS:
        raise bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
    if opts["amp"] not in AMP_MODES:
        raise bad("amp", f"must be one of {', '.join(AMP_MODES)}")
    if not float(opts["lr"]) > 0:
        raise bad("lr", "must be positive")
    if not 0.0 <= float(opts["foreground_oversample"]) <= 1.0:
        raise bad("foreground_oversample", "must be in [0, 1]")
    if not isinstance(opts["betas"], (list, tuple)) or len(opts["betas"]) != 2:
        raise bad("betas", "must be two numbers")
    for key in ("loss", "versemi", "mean_teacher", "bcp", "augmentation"):
        if not isinstance(opts[key], Mapping):
            raise bad(key, "must be a mapping")
    post = opts["postprocessing"]
    if not (post in ("auto", "none", "largest_component") or isinstance(post, Mapping)):
        raise bad("postprocessing", "must be auto, none, largest_component or a mapping prompt -> largest_component")
    try:
        loss_config(opts)
    except TypeError as exc:
        raise TrainingOptionsError(f"{source}: training.loss: {exc}") from exc
    return opts


def loss_config(options: Mapping[str, Any]) -> SegmentationLossConfig:
    """The Dice/CE settings of ``training.loss``."""
    return SegmentationLossConfig(**dict(options.get("loss") or {}))


def stage_steps(options: Mapping[str, Any], stage: int) -> int:
    """Steps of one stage: the whole budget for single-stage methods (and single-stage VerSemi, whose
    one stage is stage 2), the split for two-stage VerSemi."""
    total = int(options["max_steps"])
    if options["method"] != "versemi":
        return total
    if float(options["stage1_fraction"]) == 0.0:
        return total if stage == 2 else 0
    first = max(1, min(total - 1, int(round(total * float(options["stage1_fraction"]))))) if total > 1 else 1
    return first if stage == 1 else max(1, total - first)


def versemi_stages(options: Mapping[str, Any]) -> list[int]:
    """The stages a VerSemi run has: ``[1, 2]``, or ``[2]`` when ``stage1_fraction`` is 0."""
    return [2] if float(options["stage1_fraction"]) == 0.0 else [1, 2]
