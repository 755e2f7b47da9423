"""``training:`` options: parsed once into a frozen TrainingOptions; the deprecated ``amp`` alias."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from versemi.devices import Precision
from versemi.training.options import (
    DeprecatedOptionWarning,
    Optimizer,
    TrainingOptions,
    TrainingOptionsError,
    training_options,
)
from versemi.training.schedules import LRSchedule


def test_defaults_are_typed_and_frozen() -> None:
    options = training_options(None)
    assert options == TrainingOptions()
    assert options.precision is Precision.AUTO and options.optimizer is Optimizer.ADAMW
    assert options.lr_schedule is LRSchedule.POLY and options.betas == (0.9, 0.999)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lr = 1.0  # type: ignore[misc]
    plain = options.to_dict()  # what a checkpoint stores: plain types only
    assert type(plain["precision"]) is str and plain["precision"] == "auto" and plain["betas"] == [0.9, 0.999]
    assert plain["loss"]["dice_weight"] == 1.0


def test_values_are_converted_and_stages_split() -> None:
    options = training_options({"optimizer": "sgd", "lr_schedule": "cosine", "precision": "bf16", "lr": 1,
                                "max_steps": 10, "stage1_fraction": 0.3, "loss": {"ce_weight": 0.5}})
    assert (options.optimizer, options.lr_schedule, options.precision) == (Optimizer.SGD, LRSchedule.COSINE,
                                                                           Precision.BF16)
    assert isinstance(options.lr, float) and options.loss.ce_weight == 0.5
    assert (options.stage_steps(1), options.stage_steps(2), options.versemi_stages()) == (3, 7, [1, 2])
    single = training_options({"stage1_fraction": 0, "max_steps": 10})
    assert (single.stage_steps(1), single.stage_steps(2), single.versemi_stages()) == (0, 10, [2])
    assert training_options({"method": "supervised", "max_steps": 10}).stage_steps(1) == 10


@pytest.mark.parametrize("amp,precision", [("none", "fp32"), ("bf16", "bf16"), ("auto", "auto"), ("fp16", "fp16")])
def test_amp_is_a_deprecated_alias(amp: str, precision: str) -> None:
    with pytest.warns(DeprecatedOptionWarning, match=f"c.yaml: training.amp is deprecated: use "
                                                     f"training.precision: {precision}"):
        assert training_options({"amp": amp}, "c.yaml").precision == precision
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training_options({"precision": precision}).precision == precision


@pytest.mark.parametrize("section,message", [
    ({"precision": "half"}, "c.yaml: training.precision: must be one of auto, fp32, bf16, fp16, got 'half'"),
    ({"amp": "half"}, "c.yaml: training.amp: must be one of auto, fp16, bf16, none, got 'half'"),
    ({"amp": "none", "precision": "fp32"}, "c.yaml: training.amp: deprecated alias of training.precision"),
    ({"optimizer": "rmsprop"}, "c.yaml: training.optimizer: must be one of adamw, adam, sgd, got 'rmsprop'"),
    ({"lr_schedule": "step"}, "c.yaml: training.lr_schedule: must be one of poly, cosine, constant"),
    ({"momentum": "high"}, "c.yaml: training.momentum: must be a number, got 'high'"),
    ({"max_steps": 0}, "c.yaml: training.max_steps: must be a positive integer, got 0"),
    ({"num_workers": True}, "c.yaml: training.num_workers: must be a non-negative integer, got True"),
    ({"loss": {"dice": 1}}, "c.yaml: training.loss: "),
    ({"dataset_augmentation": {"Dataset003_ACDC": 0.5}}, "c.yaml: training.dataset_augmentation.Dataset003_ACDC: must"),
    ({"dataset_augmentation": []}, "c.yaml: training.dataset_augmentation: must be a mapping"),
    ({"nonsense": 1}, "c.yaml: training.nonsense: unknown key; known keys: augmentation, "),
])
def test_errors_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(TrainingOptionsError) as info:
        training_options(section, "c.yaml")
    assert str(info.value).startswith(message)
