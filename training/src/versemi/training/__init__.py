"""Training: losses, cross-dataset CutMix, VerSemi stage 1/2 and baselines, the trainer, DDP.

Public API::

    from versemi.training import Trainer, run_training, training_options, build_method
    from versemi.training import segmentation_loss, prompt_targets, mix_annotations, ModelEMA

See docs/TRAINING.md for the methods, the ``training:`` config keys and their defaults.
"""

from versemi.training.cutmix import Annotation, mix_annotations, paste, prompt_targets, random_cube_masks
from versemi.training.ema import ModelEMA
from versemi.training.losses import SegmentationLossConfig, dice_agreement_loss, segmentation_loss
from versemi.training.methods import METHODS, TrainingBatch, build_method
from versemi.training.options import TrainingOptions, training_options
from versemi.training.schedules import build_lr_scheduler, sigmoid_rampup
from versemi.training.trainer import StageResult, Trainer, TrainingError, run_training

__all__ = [
    "Annotation",
    "METHODS",
    "ModelEMA",
    "SegmentationLossConfig",
    "StageResult",
    "Trainer",
    "TrainingBatch",
    "TrainingError",
    "TrainingOptions",
    "build_lr_scheduler",
    "build_method",
    "dice_agreement_loss",
    "mix_annotations",
    "paste",
    "prompt_targets",
    "random_cube_masks",
    "run_training",
    "segmentation_loss",
    "sigmoid_rampup",
    "training_options",
]
