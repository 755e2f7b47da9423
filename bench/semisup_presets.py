"""Presets of the semi-supervised benchmark (``bench/semisup.py --preset NAME``).

A preset fixes everything a comparison depends on: datasets, grid, patch, backbone, step budget,
batch sizes, the methods ("variants") and seeds, and how the held-out evaluation cases are chosen
and predicted. Every variant of a preset shares the backbone, the patch, the batch sizes and the
seeds; they differ only in the method, its options and (for the equal-compute baselines) the number
of steps.

Presets:

- ``cpu-quick``: a smoke check of the whole pipeline in a few minutes (a handful of steps, a few
  evaluation cases per dataset); its numbers mean nothing.
- ``cpu-2ds``: the semi-supervised comparison on 2 CPU cores at the CPU recipe (per-dataset plans,
  a 4-level U-Net, bf16, 800 steps where supervised-only has plateaued) over hippocampus + left
  atrium, 10 % and 5 % labels, 2 seeds; also the accuracy issue's reference budget (its first target)
  and the bf16-vs-fp32 check.
- ``cpu3``: supervised-only at the same recipe over hippocampus + left atrium + ACDC (the accuracy
  issue's three-dataset targets).
- ``gpu-la``: the published left-atrium protocol (8 of 80 scans labeled, 0.625 mm, 96^3 patches,
  reference V-Net with 16 base filters, Adam lr 1e-3 betas (0.5, 0.999), 8 labeled + 8 unlabeled
  patches per step, 6000 steps per VerSemi stage) for checking published numbers on a GPU.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Datasets of ../shared/data the presets use. Dataset004_SpleenCT (one case) is left out: one
# labeled CT case cannot be split into training and held-out data, and as a labeled-only extra task
# it would change the label space and the compute of every method without being evaluated.
SHARED_DATASETS = ("Dataset001_Hippocampus", "Dataset002_LeftAtrium", "Dataset003_ACDC")


@dataclass(frozen=True)
class Variant:
    """One method configuration compared in the benchmark.

    Attributes:
        name: Name in tables and run folders (e.g. ``supervised_equal_compute``).
        method: The trainer's ``--method`` (``versemi``, ``supervised``, ``mean_teacher``).
        training: Extra keys merged into the config's ``training:`` section (e.g. the consistency
            weight of an ablation).
        steps: Step budget; ``None`` = the preset's ``steps``; ``"equal_compute"`` = as many steps
            as make this variant push the same number of images through the network as VerSemi
            (see :func:`images_per_step`).
        all_labels: Every training case is labeled (the upper bound); the protocol setting is
            ignored and the run is shared by all settings.
        settings: Protocol settings this variant runs in; ``None`` = all of the preset's settings.
        description: One line for the report.
    """

    name: str
    method: str
    training: dict[str, Any] = field(default_factory=dict)
    steps: int | str | None = None
    all_labels: bool = False
    settings: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class Preset:
    """Everything one benchmark run depends on (see the module docstring).

    Attributes:
        name: Preset name.
        description: One paragraph for the report.
        datasets: Dataset folder names under the data folder.
        settings: Protocol settings (keys of protocol.json entries), e.g. ``labeled_10pct``.
        seeds: Training seeds; every variant runs with every seed (paired comparisons).
        target_spacing: One resampling grid in mm, (x, y, z), for every dataset; ``None`` = each
            dataset's plan (:mod:`versemi.data.plans`).
        patch_size: One training patch in voxels, (x, y, z), for every dataset (also the inference
            window); ``None`` = each dataset's plan.
        model: ``model:`` section of the training config.
        training: ``training:`` section shared by every variant (batch sizes, optimizer, ...).
        steps: Step budget of a method (VerSemi: both stages together).
        variants: The compared method configurations.
        baseline: Variant the gap to the upper bound is measured from (same steps as VerSemi).
        reference: The variant compared against every other one in the paired differences.
        upper_bound: The all-labels variant.
        heldout_fraction: Share of each dataset's cases (patients for ACDC) held out for evaluation.
        max_eval_cases: At most this many held-out cases evaluated per dataset (``None`` = all).
        eval_overlap: Sliding-window overlap at evaluation.
        eval_batch_size: Windows per forward pass at evaluation.
        threads: Torch threads of training and evaluation on CPU.
        device: Training and evaluation device (``cpu``, ``cuda``, ``auto``).
        expected_minutes: Rough wall time of the whole preset, for ``--dry-run``.
        plans: The configs' ``plans:`` section (patch budget, per-dataset overrides); ``None`` = the
            plans' defaults.
    """

    name: str
    description: str
    datasets: tuple[str, ...]
    settings: tuple[str, ...]
    seeds: tuple[int, ...]
    target_spacing: tuple[float, float, float] | None
    patch_size: tuple[int, int, int] | None
    model: dict[str, Any]
    training: dict[str, Any]
    steps: int
    variants: tuple[Variant, ...]
    plans: dict[str, Any] | None = None
    baseline: str = "supervised"
    reference: str = "versemi"
    upper_bound: str = "supervised_all_labels"
    heldout_fraction: float = 0.2
    max_eval_cases: int | None = None
    eval_overlap: float = 0.5
    eval_batch_size: int = 1
    threads: int = 2
    device: str = "cpu"
    expected_minutes: float | None = None

    def variant(self, name: str) -> Variant:
        """The variant called ``name``.

        Raises:
            KeyError: no such variant in this preset.
        """
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"preset {self.name!r} has no variant {name!r}; it has {[v.name for v in self.variants]}")


def images_per_step(method: str, training: dict[str, Any]) -> float:
    """Images a method pushes through the network (with gradients) per step, on average.

    VerSemi stage 1 forwards each labeled patch and its cross-dataset CutMix (2B); stage 2 adds the
    unlabeled patches with a pasted cube (2B + U); averaged over the stage split. Supervised-only
    forwards B; mean teacher B + U with gradients (plus U through the EMA teacher without).

    Args:
        method: Trainer method name.
        training: The ``training:`` section (``batch_size``, ``unlabeled_batch_size``,
            ``stage1_fraction``; trainer defaults 2, 2, 0.5 when absent).
    """
    b = float(training.get("batch_size", 2))
    u = float(training.get("unlabeled_batch_size", 2))
    if method == "versemi":
        f1 = float(training.get("stage1_fraction", 0.5))
        return f1 * 2 * b + (1 - f1) * (2 * b + u)
    if method == "supervised":
        return b
    if method in ("mean_teacher", "bcp"):
        return b + u if method == "mean_teacher" else 2 * u
    raise ValueError(f"unknown method {method!r}")


def variant_steps(preset: Preset, variant: Variant) -> int:
    """The step budget of a variant in a preset (resolves ``"equal_compute"``)."""
    if variant.steps is None:
        return preset.steps
    if variant.steps == "equal_compute":
        reference = preset.variant(preset.reference)
        ratio = images_per_step(reference.method, {**preset.training, **reference.training}) / images_per_step(
            variant.method, {**preset.training, **variant.training}
        )
        return max(1, int(round(preset.steps * ratio)))
    if isinstance(variant.steps, int) and variant.steps > 0:
        return variant.steps
    raise ValueError(f"variant {variant.name!r}: steps must be a positive integer, 'equal_compute' or None")


def _standard_variants(
    mean_teacher_weight: float, extra_settings: tuple[str, ...] | None = None
) -> tuple[Variant, ...]:
    """VerSemi, the baselines, the ablation and the upper bound (the same list in every preset).

    Args:
        mean_teacher_weight: Final consistency weight of the mean teacher.
        extra_settings: Settings the equal-compute baseline and the ablation run in (``None`` = all).
    """
    return (
        Variant("versemi", "versemi", description="VerSemi, stage 1 (labeled) then stage 2 (semi-supervised)"),
        Variant("supervised", "supervised", description="supervised-only, same steps as VerSemi"),
        Variant(
            "supervised_equal_compute",
            "supervised",
            steps="equal_compute",
            settings=extra_settings,
            description="supervised-only with as many images through the network as VerSemi (more steps)",
        ),
        Variant(
            "mean_teacher",
            "mean_teacher",
            training={"mean_teacher": {"consistency_weight": mean_teacher_weight}},
            description=f"mean teacher (EMA 0.99, input noise), consistency weight {mean_teacher_weight}",
        ),
        Variant(
            "versemi_no_consistency",
            "versemi",
            training={"versemi": {"consistency_weight": 0.0}},
            settings=extra_settings,
            description="ablation: VerSemi without the max-vs-synthetic consistency term (weight 0)",
        ),
        Variant(
            "supervised_all_labels",
            "supervised",
            steps="equal_compute",
            all_labels=True,
            description="upper bound: every training case labeled, supervised, VerSemi's image budget",
        ),
    )


_CPU_MODEL = {"backbone": "vnet", "base_filters": 8, "depth": 5, "norm": "instance"}
_CPU_TRAINING = {
    "batch_size": 2,
    "unlabeled_batch_size": 2,
    "stage1_fraction": 0.5,
    "optimizer": "adamw",
    "lr": 1e-3,
    "precision": "fp32",  # bf16 autocast: only ~1.1x the it/s on this CPU (bench/train_speed.py); fp32 is safer
    "num_workers": 1,
    "foreground_oversample": 0.5,
    "log_every": 10,
    "checkpoint_every": 100,
    "tensorboard": False,
}

# The CPU recipe (docs/TRAINING.md, "A recipe that converges on CPU"): per-dataset plans with a
# 48 x 64 x 48-voxel patch budget, a U-Net with 16 base filters and 4 levels, one labeled (and one
# unlabeled) patch per dataset per step, AdamW with weight decay and poly decay, bf16 autocast,
# intensity scale/shift as the only augmentation, 1 torch thread + 1 DataLoader worker.
_RECIPE_MODEL = {"backbone": "unet", "base_filters": 16, "depth": 4, "norm": "instance"}
_RECIPE_TRAINING = {
    "batch_size": 1,
    "unlabeled_batch_size": 1,
    "stage1_fraction": 0.5,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "lr_schedule": "poly",
    "precision": "bf16",
    "num_workers": 1,
    "foreground_oversample": 0.5,
    "augmentation": {"flip_prob": 0.0, "affine_prob": 0.0, "noise_prob": 0.0,
                     "intensity_scale_prob": 0.5, "intensity_shift_prob": 0.5},
    # No validation split in the benchmark (no labeled case is taken away), so "auto" could not decide:
    # keeping each dataset's largest component was chosen on the development split (ACDC 43 -> 48 %).
    "postprocessing": "largest_component",
    "log_every": 20,
    "checkpoint_every": 200,
    "tensorboard": False,
}
HIPPOCAMPUS_LA = ("Dataset001_Hippocampus", "Dataset002_LeftAtrium")
# The prototype's VerSemi recipe (the VerSemi issue): one stage with every term from step 0, CutMix
# supervising the synthetic prompt only (no auxiliary term), unlabeled cubes of side 2/3, and the
# consistency pulling the synthetic prompt towards the detached max over the real prompts.
_PROTOTYPE_VERSEMI = {
    "stage1_fraction": 0.0,
    "versemi": {"auxiliary_weight": 0.0, "consistency_target": "aggregate",
                "stage2_cutmix_ratio": [2.0 / 3.0, 2.0 / 3.0], "consistency_rampup": 0.4},
}

# The compared methods of the CPU presets (the VerSemi issue's comparison).
# cpu3's CutMix weights, chosen on the development split (README, "development-split ablations"): at
# weight 1 the synthetic and cube terms cost the hippocampus ~3 points and ACDC ~11 against
# supervised-only; at 0.25 VerSemi is level or ahead (3 seeds).
CPU3_CUTMIX_WEIGHTS = {"synthetic_weight": 0.25, "cube_weight": 0.25}
# ACDC's augmentation in cpu3 (README, "ACDC at 10 %: in-plane augmentation"): in-plane rotation
# +-30 degrees and scaling +-30 % (p 0.5) on top of the recipe's intensity scale/shift. Chosen on the wide
# development split (supervised-only, ACDC alone, 2 labeled patients, 28 volumes of 14 other patients,
# 3 seeds at 1600 steps): 63.5 against 47.9 for intensity-only (800 steps); gamma added nothing (62.7).
CPU3_ACDC_AUGMENTATION = {"affine_prob": 0.5, "rotate_deg": 30.0, "scale": 0.3}


def _cpu3_variant(v: Variant) -> Variant:
    """A comparison variant as cpu3 runs it: every setting for the equal-compute baseline, and VerSemi's
    CutMix weights (a variant's own values, e.g. an ablation's 0, win)."""
    if v.name == "supervised_equal_compute":
        return dataclasses.replace(v, settings=None)
    if v.method != "versemi":
        return v
    training = dict(v.training or {})
    training["versemi"] = {**CPU3_CUTMIX_WEIGHTS, **training.get("versemi", {})}
    return dataclasses.replace(v, training=training,
                               description=f"{v.description}; CutMix weights 0.25 (chosen on the development split)")


_COMPARISON_VARIANTS = (
    Variant("versemi", "versemi", training=_PROTOTYPE_VERSEMI,
            description="VerSemi, the prototype's recipe: every term from step 0, no auxiliary term, "
                        "cube 2/3 on the synthetic prompt, consistency to the detached max over real prompts"),
    Variant("supervised", "supervised", description="supervised-only, same steps"),
    Variant("supervised_equal_compute", "supervised", steps="equal_compute", settings=("labeled_10pct",),
            description="supervised-only with as many images through the network as VerSemi (3x the steps)"),
    Variant("mean_teacher", "mean_teacher", training={"mean_teacher": {"consistency_weight": 10.0}},
            description="mean teacher (EMA 0.99, input noise), consistency weight 10"),
    Variant("bcp", "bcp", description="bidirectional copy-paste (Bai et al. 2023), EMA teacher"),
    Variant("versemi_no_consistency", "versemi", settings=("labeled_10pct",),
            training={**_PROTOTYPE_VERSEMI,
                      "versemi": {**_PROTOTYPE_VERSEMI["versemi"], "consistency_weight": 0.0}},
            description="ablation: VerSemi without the max-vs-synthetic consistency"),
    Variant("versemi_no_synthetic", "versemi", settings=("labeled_10pct",),
            training={**_PROTOTYPE_VERSEMI,
                      "versemi": {**_PROTOTYPE_VERSEMI["versemi"], "synthetic_weight": 0.0}},
            description="ablation: VerSemi without the synthetic task on labeled CutMix images "
                        "(the unlabeled cube and consistency kept)"),
    Variant("supervised_all_labels", "supervised", steps="equal_compute", all_labels=True,
            description="upper bound: every training case labeled, supervised, VerSemi's image budget"),
    Variant("supervised_fp32", "supervised", training={"precision": "fp32"}, settings=("labeled_10pct",),
            description="supervised-only in float32 (the bf16 check)"),
)

PRESETS: dict[str, Preset] = {
    "cpu3": Preset(
        name="cpu3",
        description=(
            "The semi-supervised comparison where the headroom is: one prompted model over hippocampus + left "
            "atrium + ACDC, per-dataset plans with their network geometry (ACDC pools in-plane first and "
            "keeps 4 slices at the bottleneck), 48x64x48-voxel patch budget, U-Net 16 filters 4 levels, one "
            "labeled (+ one unlabeled) patch per dataset per step, AdamW wd 1e-4 poly, bf16, each dataset's "
            "largest component kept; ACDC alone augmented in-plane (rotation, scaling); 1600 steps. "
            "VerSemi against supervised-only (same steps and equal "
            "compute), mean teacher, two ablations (10 % only) and the all-labels upper bound, at 10 % and "
            "5 % labels."
        ),
        datasets=SHARED_DATASETS,
        settings=("labeled_10pct", "labeled_5pct"),
        seeds=(0, 1),
        target_spacing=None,
        patch_size=None,
        model=_RECIPE_MODEL,
        # ACDC's planned patch, 104 x 104 x 8, leaves 41 % of the voxel budget unused (the median 8.5 slices
        # round up to 16, then shrink back to 8 after the in-plane axes were cut for 16): 128 x 136 x 8 uses
        # it. Wide development split, in-plane augmentation, 1600 steps, seed 0 / 1: 66.0 / 62.8 against
        # 39.6 / 58.3 with 104 x 104 (README, "ACDC at 10 %").
        plans={"overrides": {"Dataset003_ACDC": {"patch_size": [128, 136, 8]}}},
        training={**_RECIPE_TRAINING, "dataset_augmentation": {"Dataset003_ACDC": CPU3_ACDC_AUGMENTATION}},
        # With ACDC's augmentation, 1600 steps gained ~8 points on ACDC over 800 (wide development split).
        steps=1600,
        variants=tuple(
            _cpu3_variant(v) for v in _COMPARISON_VARIANTS if v.name not in ("bcp", "supervised_fp32")
        ),
        eval_overlap=0.5,
        threads=1,
        expected_minutes=60 * 60,
    ),
    "cpu-2ds": Preset(
        name="cpu-2ds",
        description=(
            "The accuracy issue's reference budget, and the semi-supervised comparison: one prompted model "
            "over hippocampus + left atrium, 800 steps (where supervised-only has plateaued: doubling the "
            "steps gained < 1 point on the development split), per-dataset plans (48x64x48-voxel patch "
            "budget), U-Net 16 filters 4 levels, one labeled (+ one unlabeled) patch per dataset per step, "
            "AdamW wd 1e-4 poly, bf16, each dataset's largest component kept. The ablations and the "
            "equal-compute baseline run at 10 % labels only, the fp32 check at seed 0 (--only)."
        ),
        datasets=HIPPOCAMPUS_LA,
        settings=("labeled_10pct", "labeled_5pct"),
        seeds=(0, 1),
        target_spacing=None,
        patch_size=None,
        model=_RECIPE_MODEL,
        training=_RECIPE_TRAINING,
        steps=800,
        variants=_COMPARISON_VARIANTS,

        eval_overlap=0.5,
        threads=1,
        expected_minutes=700,
    ),

    "cpu-quick": Preset(
        name="cpu-quick",
        description=(
            "Smoke check of the harness end to end (configs, training, prediction, evaluation, report) with "
            "the cpu-2ds variants: a few steps per method, two evaluation cases per dataset. The numbers "
            "mean nothing."
        ),
        datasets=HIPPOCAMPUS_LA,
        settings=("labeled_10pct",),
        seeds=(0, 1),
        target_spacing=None,
        patch_size=None,
        model=_RECIPE_MODEL,
        training={**_RECIPE_TRAINING, "log_every": 2, "checkpoint_every": 10},
        steps=6,
        variants=_COMPARISON_VARIANTS,
        max_eval_cases=2,
        threads=1,
        expected_minutes=8,
    ),



    "gpu-la": Preset(
        name="gpu-la",
        description=(
            "The published left-atrium protocol on a GPU: 8 of the 80 training scans labeled (the UA-MT "
            "split, protocol 'labeled_10pct'), 0.625 mm isotropic (the data's own grid), 96^3 patches "
            "(LA crops have 88 slices: patches are padded in z), reference V-Net (16 base filters, 5 "
            "levels, instance norm), Adam lr 1e-3 betas (0.5, 0.999), 8 labeled + 8 unlabeled patches "
            "per step, 6000 steps per VerSemi stage (12000 in all, the same for every method). The 20 "
            "official LA test scans are NOT in ../shared: results are on 16 held-out training scans, "
            "so they approximate, not reproduce, the published test numbers."
        ),
        datasets=("Dataset002_LeftAtrium",),
        settings=("labeled_10pct",),
        seeds=(0, 1),
        target_spacing=(0.625, 0.625, 0.625),
        patch_size=(96, 96, 96),
        model={"backbone": "vnet", "base_filters": 16, "depth": 5, "norm": "instance"},
        training={
            "batch_size": 8,
            "unlabeled_batch_size": 8,
            "stage1_fraction": 0.5,
            "optimizer": "adam",
            "lr": 1e-3,
            "betas": [0.5, 0.999],
            "weight_decay": 0.0,
            "precision": "auto",  # fp16 + GradScaler on CUDA (nnU-Net practice); bf16 is unverified here
            "num_workers": 8,
            "foreground_oversample": 0.5,
            "log_every": 50,
            "checkpoint_every": 500,
            "tensorboard": True,
        },
        steps=12000,
        variants=_standard_variants(mean_teacher_weight=1.0),
        eval_overlap=0.5,
        eval_batch_size=4,
        threads=8,
        device="cuda",
        expected_minutes=None,
    ),
}


def get_preset(name: str) -> Preset:
    """A deep copy of a preset (callers may adjust it).

    Raises:
        KeyError: unknown preset name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


__all__ = ["PRESETS", "Preset", "SHARED_DATASETS", "Variant", "get_preset", "images_per_step", "variant_steps"]
