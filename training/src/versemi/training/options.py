"""The ``training:`` section of a training config: :class:`TrainingOptions`, parsed once, with defaults.

:func:`training_options` validates the section (each error names ``<source>: training.<key>``) and
returns a frozen :class:`TrainingOptions`; the trainer reads its attributes. The keys and their
meaning: docs/TRAINING.md.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from versemi.devices import Precision
from versemi.enums import StrEnum
from versemi.training.losses import SegmentationLossConfig
from versemi.training.methods import METHODS
from versemi.training.schedules import LRSchedule

#: The deprecated ``training.amp`` values and the precision each means.
AMP_ALIASES = {"auto": Precision.AUTO, "fp16": Precision.FP16, "bf16": Precision.BF16, "none": Precision.FP32}


class Optimizer(StrEnum):
    """``training.optimizer``."""

    ADAMW = "adamw"
    ADAM = "adam"
    SGD = "sgd"


class TrainingOptionsError(ValueError):
    """An invalid ``training:`` key or value; the message names the key."""


class DeprecatedOptionWarning(UserWarning):
    """A deprecated key or flag (``training.amp``, ``--amp``): still read, under its new name."""


@dataclass(frozen=True)
class TrainingOptions:
    """The validated ``training:`` section (defaults for every key the config leaves out)."""

    method: str = "versemi"
    # Total optimizer steps of a method (the budget every method gets); VerSemi spends
    # stage1_fraction of them in stage 1 and the rest in stage 2 (0: one stage with every term).
    max_steps: int = 10000
    stage1_fraction: float = 0.5
    batch_size: int = 2  # labeled patches per dataset, per step and per process
    unlabeled_batch_size: int = 2  # unlabeled patches per dataset, per step and process (stage 2 / baselines)
    optimizer: Optimizer = Optimizer.ADAMW
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.99  # SGD only (nesterov, as nnU-Net)
    weight_decay: float = 1e-5
    lr_schedule: LRSchedule = LRSchedule.POLY
    warmup_steps: int = 0
    grad_clip: float = 12.0  # max gradient norm (nnU-Net); 0 = off
    # auto = fp16 + GradScaler on CUDA, bf16 on CPUs with native bf16, else fp32 (versemi.devices.autocast_dtype)
    precision: Precision = Precision.AUTO
    num_workers: int = 2
    foreground_oversample: float = 0.33
    augmentation: Mapping[str, Any] = field(default_factory=dict)
    # Dataset name -> augmentation overrides for that dataset's patches (over ``augmentation``).
    dataset_augmentation: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    validate_every: int = 500
    validation_overlap: float = 0.5
    validation_sw_batch_size: int = 2
    nsd_tolerance_mm: float = 2.0
    early_stopping_patience: int = 0  # validations without improvement before stopping; 0 = off
    # Labelmap post-processing stored in the checkpoint and applied by predict: "auto" (keep a prompt's
    # largest connected component where that improves its validation Dice), "none",
    # "largest_component" (every real prompt) or {prompt: "largest_component"}.
    postprocessing: str | Mapping[str, str] = "auto"
    checkpoint_every: int = 250
    log_every: int = 20
    tensorboard: bool = True
    init_checkpoint: str | None = None  # start weights (e.g. a supervised model for mean_teacher)
    loss: SegmentationLossConfig = field(default_factory=SegmentationLossConfig)
    versemi: Mapping[str, Any] = field(default_factory=dict)
    mean_teacher: Mapping[str, Any] = field(default_factory=dict)
    bcp: Mapping[str, Any] = field(default_factory=dict)

    def method_sections(self) -> dict[str, Mapping[str, Any]]:
        """The per-method sections (``versemi``, ``mean_teacher``, ``bcp``) for :func:`build_method`."""
        return {"versemi": self.versemi, "mean_teacher": self.mean_teacher, "bcp": self.bcp}

    def stage_steps(self, stage: int) -> int:
        """Steps of one stage: the whole budget for single-stage methods (and single-stage VerSemi, whose
        one stage is stage 2), the split for two-stage VerSemi."""
        total = self.max_steps
        if self.method != "versemi":
            return total
        if self.stage1_fraction == 0.0:
            return total if stage == 2 else 0
        first = max(1, min(total - 1, int(round(total * self.stage1_fraction)))) if total > 1 else 1
        return first if stage == 1 else max(1, total - first)

    def versemi_stages(self) -> list[int]:
        """The stages a VerSemi run has: ``[1, 2]``, or ``[2]`` when ``stage1_fraction`` is 0."""
        return [2] if self.stage1_fraction == 0.0 else [1, 2]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (enums as their strings): what a checkpoint stores (weights-only safe)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple):
        return list(value)
    return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


_DEFAULTS = TrainingOptions().to_dict()
_POSITIVE = ("max_steps", "batch_size", "validate_every", "checkpoint_every", "log_every")
_NON_NEGATIVE = ("unlabeled_batch_size", "num_workers", "warmup_steps", "early_stopping_patience")
_SECTIONS = ("loss", "versemi", "mean_teacher", "bcp", "augmentation")


def _numbers(opts: dict[str, Any], bad: Any) -> dict[str, Any]:
    """The float and int keys of ``opts`` as their types (``bad(key, why)`` makes the error)."""
    numbers = {}
    for key, default in _DEFAULTS.items():
        if isinstance(default, (float, int)) and not isinstance(default, bool):
            try:
                numbers[key] = type(default)(opts[key])
            except (TypeError, ValueError):
                raise bad(key, "must be a number") from None
    return numbers


def precision_from_amp(value: Any, where: str, instead: str = "training.precision:") -> Precision:
    """The precision of a deprecated ``amp`` value (``none`` = ``fp32``), with a one-line warning.

    Raises:
        TrainingOptionsError: not an ``amp`` value (the message starts with ``where``).
    """
    if value not in AMP_ALIASES:
        raise TrainingOptionsError(f"{where}: must be one of {', '.join(AMP_ALIASES)}, got {value!r}")
    precision = AMP_ALIASES[value]
    warnings.warn(f"{where} is deprecated: use {instead} {precision}", DeprecatedOptionWarning, stacklevel=3)
    return precision


def training_options(section: Mapping[str, Any] | None, source: str = "config") -> TrainingOptions:
    """Defaults overridden by the config's ``training:`` section, validated.

    The deprecated key ``amp`` (``auto|fp16|bf16|none``) is read as ``precision`` (``none`` = ``fp32``).

    Raises:
        TrainingOptionsError: unknown key or invalid value (names ``<source>: training.<key>``).
    """
    section = dict(section or {})
    if "amp" in section:
        if "precision" in section:
            raise TrainingOptionsError(f"{source}: training.amp: deprecated alias of training.precision; "
                                       "give only training.precision")
        section["precision"] = precision_from_amp(section.pop("amp"), f"{source}: training.amp")
    unknown = sorted(set(section) - set(_DEFAULTS))
    if unknown:
        raise TrainingOptionsError(
            f"{source}: training.{unknown[0]}: unknown key; known keys: {', '.join(sorted(_DEFAULTS))}"
        )
    opts = {**_DEFAULTS, **copy.deepcopy(section)}

    def bad(key: str, why: str) -> TrainingOptionsError:
        return TrainingOptionsError(f"{source}: training.{key}: {why}, got {opts[key]!r}")

    def choice(key: str, vocabulary: Any) -> Any:
        if opts[key] not in tuple(vocabulary):
            raise bad(key, f"must be one of {', '.join(vocabulary)}")
        return vocabulary(opts[key]) if isinstance(vocabulary, type) else opts[key]

    choice("method", METHODS)
    for key in _POSITIVE + _NON_NEGATIVE:
        low = 1 if key in _POSITIVE else 0
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < low:
            raise bad(key, "must be a positive integer" if low else "must be a non-negative integer")
    if not 0.0 <= float(opts["stage1_fraction"]) < 1.0:
        raise bad("stage1_fraction", "must be in [0, 1) (0: a single stage with every term)")
    if not float(opts["lr"]) > 0:
        raise bad("lr", "must be positive")
    if not 0.0 <= float(opts["foreground_oversample"]) <= 1.0:
        raise bad("foreground_oversample", "must be in [0, 1]")
    if not isinstance(opts["betas"], (list, tuple)) or len(opts["betas"]) != 2:
        raise bad("betas", "must be two numbers")
    for key in _SECTIONS + ("dataset_augmentation",):
        if not isinstance(opts[key], Mapping):
            raise bad(key, "must be a mapping")
    for name, overrides in opts["dataset_augmentation"].items():
        if not isinstance(overrides, Mapping):
            raise TrainingOptionsError(f"{source}: training.dataset_augmentation.{name}: must be a mapping of "
                                       f"augmentation overrides, got {overrides!r}")
    post = opts["postprocessing"]
    if not (post in ("auto", "none", "largest_component") or isinstance(post, Mapping)):
        raise bad("postprocessing", "must be auto, none, largest_component or a mapping prompt -> largest_component")
    try:
        loss = SegmentationLossConfig(**dict(opts["loss"]))
    except TypeError as exc:
        raise TrainingOptionsError(f"{source}: training.loss: {exc}") from exc
    return TrainingOptions(**{
        **opts, **_numbers(opts, bad), "loss": loss, "betas": (float(opts["betas"][0]), float(opts["betas"][1])),
        "optimizer": choice("optimizer", Optimizer), "lr_schedule": choice("lr_schedule", LRSchedule),
        "precision": choice("precision", Precision), "tensorboard": bool(opts["tensorboard"]),
    })
