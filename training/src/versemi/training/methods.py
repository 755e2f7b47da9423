"""The training methods: VerSemi and the baselines, as loss functions of one step.

All methods share the backbone, the data and the step budget; they differ only in the losses below.
A step holds one batch per labeled dataset (:mod:`versemi.training.batches`; datasets have their own
patch shapes); :meth:`TrainingMethod.losses` scores one such batch and the trainer averages over them.
Every forward pass asks the model for ALL prompts of the label space at once (one backbone pass per
image) and the losses pick channels through :class:`~versemi.training.cutmix.Annotation` weights, so
a prompt a dataset does not annotate gets exactly zero gradient from that dataset's images.

VerSemi, per labeled image ``x_i`` of dataset B and a donor patch ``x_j`` of the same shape from
another dataset A (cube side ``ratio * patch``, ``stage1_cutmix_ratio``, 2/3)::

    supervised  = DiceCE(model(x_i)[own prompts of B], y_i)
    synthetic   = DiceCE(model(mix)[synthetic], union of the foregrounds in mix)
    auxiliary   = DiceCE(model(mix)[real prompts], per-voxel targets where known)   # cutmix.py

and, in the semi-supervised stage, on an unlabeled scan ``u`` (of a dataset's plan) with a cube of a
random labeled patch of the step pasted in (``stage2_cutmix_ratio``)::

    cube        = Dice(model(u_mix)[synthetic], union of the pasted cube's labels, inside the cube only)
    consistency = w(t) * (1 - Dice(max_k sigmoid(real_k), sigmoid(synthetic)))

The cube supervises the synthetic prompt ONLY (as the method note and the reference): no real prompt
gets a gradient from it. ``w(t) = consistency_weight * sigmoid_rampup(t, rampup_steps)``;
``consistency_target`` says which side is the (detached) target and ``ema_teacher`` whether the target
comes from the EMA model. Stage 1 (labeled only: supervised, synthetic, auxiliary) runs the first
``training.stage1_fraction`` of the steps; ``stage1_fraction: 0`` runs every term from step 0 in a
single stage. The methods live side by side: a baseline differs from VerSemi only in its losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from versemi.enums import Method
from versemi.labels import LabelSpace
from versemi.training.cutmix import (
    Annotation,
    cross_dataset_partners,
    mix_annotations,
    paste,
    random_cube_masks,
    unlabeled_annotation,
)
from versemi.training.losses import (
    SegmentationLossConfig,
    dice_agreement_loss,
    masked_dice_loss,
    probability_mse_loss,
    segmentation_loss,
)
from versemi.training.schedules import sigmoid_rampup

METHODS = tuple(str(m) for m in Method)
CONSISTENCY_TARGETS = ("synthetic", "aggregate", "none")
CONSISTENCY_PROMPTS = ("all", "dataset")
CUBE_LOSSES = ("dice_ce", "dice")


@dataclass
class TrainingBatch:
    """What one optimisation step sees (on the training device).

    Attributes:
        images: Labeled patches ``(B, C, D, H, W)`` (one dataset's, of one shape).
        annotation: Their targets and weights over every prompt (see ``cutmix.prompt_targets``).
        datasets: The dataset of each labeled patch.
        unlabeled: Unlabeled patches ``(Bu, C, D, H, W)`` or ``None``.
        donor_images: CutMix partners of the same shape from other datasets ``(B, C, D, H, W)``, or
            ``None`` (then partners are drawn among ``images``, see ``cross_dataset_partners``).
        donor_annotation: The donors' targets and weights.
        donor_datasets: The dataset of each donor.
    """

    images: torch.Tensor
    annotation: Annotation
    datasets: list[str]
    unlabeled: torch.Tensor | None = None
    donor_images: torch.Tensor | None = None
    donor_annotation: Annotation | None = None
    donor_datasets: list[str] | None = None

    def partners(self, generator: torch.Generator) -> tuple[torch.Tensor, Annotation]:
        """One CutMix partner per labeled image: its donor, else another dataset's image of the batch."""
        if self.donor_images is not None and self.donor_annotation is not None:
            return self.donor_images, self.donor_annotation
        index = torch.as_tensor(cross_dataset_partners(self.datasets, generator), device=self.images.device)
        return self.images[index], Annotation(self.annotation.target[index], self.annotation.weight[index])

    def labeled_pool(self) -> tuple[torch.Tensor, Annotation]:
        """Every labeled patch of the batch (the images, then the donors): where pasted cubes come from."""
        if self.donor_images is None or self.donor_annotation is None:
            return self.images, self.annotation
        return (
            torch.cat([self.images, self.donor_images]),
            Annotation(
                torch.cat([self.annotation.target, self.donor_annotation.target]),
                torch.cat([self.annotation.weight, self.donor_annotation.weight]),
            ),
        )


@dataclass
class VerSemiOptions:
    """Options of the VerSemi method (config ``training.versemi``), with the defaults used.

    Attributes:
        supervised_weight: Weight of the labeled images' own-prompt Dice+CE.
        synthetic_weight: Weight of the synthetic prompt on cross-dataset CutMix images.
        auxiliary_weight: Weight of the real prompts on CutMix images (per-voxel known targets).
        cube_weight: Stage 2: weight of the pasted-cube supervision of the synthetic prompt on
            unlabeled scans.
        consistency_weight: Stage 2: final weight of the max-vs-synthetic Dice consistency.
        consistency_rampup: Stage 2: sigmoid ramp-up length as a fraction of the stage's steps.
        consistency_target: Which side is the detached target: ``"synthetic"`` (default: the
            synthetic prompt teaches the aggregate of the real prompts, which are what users predict
            with), ``"aggregate"`` (the max over real prompts teaches the synthetic prompt) or
            ``"none"`` (gradients through both, as the reference implementation).
        consistency_prompts: Which real prompts the consistency's max runs over: ``"all"`` (default,
            the reference: every real prompt of the label space) or ``"dataset"`` (only the prompts of
            the batch's own dataset, whose structures its unlabeled scans can hold: other datasets'
            prompts are never trained to stay silent on foreign anatomy).
        ema_teacher: Stage 2: take the target side from the EMA teacher's prediction.
        ema_decay: Decay of the EMA teacher.
        stage1_cutmix_ratio: Cube side ratio in stage 1 (2/3).
        stage2_cutmix_ratio: ``(low, high)`` cube side ratio range for unlabeled scans in stage 2.
        cube_loss: Loss of the pasted cube: ``"dice"`` (Dice only, as the method note and the
            reference implementation; default) or ``"dice_ce"`` (Dice + cross-entropy).
        lr_restart: With two stages, stage 2 restarts the learning-rate schedule (as two separate
            trainings, the method note's); ``False`` continues stage 1's schedule over the whole budget.
    """

    supervised_weight: float = 1.0
    synthetic_weight: float = 1.0
    auxiliary_weight: float = 1.0
    cube_weight: float = 1.0
    consistency_weight: float = 1.0
    consistency_rampup: float = 0.4
    consistency_target: str = "synthetic"
    consistency_prompts: str = "all"
    ema_teacher: bool = False
    ema_decay: float = 0.99
    stage1_cutmix_ratio: float = 2.0 / 3.0
    stage2_cutmix_ratio: tuple[float, float] = (0.3, 0.6)
    cube_loss: str = "dice"
    lr_restart: bool = True

    def __post_init__(self) -> None:
        if self.cube_loss not in CUBE_LOSSES:
            raise ValueError(
                f"training.versemi.cube_loss must be one of {', '.join(CUBE_LOSSES)}, got {self.cube_loss!r}"
            )
        if self.consistency_target not in CONSISTENCY_TARGETS:
            raise ValueError(
                f"training.versemi.consistency_target must be one of {', '.join(CONSISTENCY_TARGETS)}, "
                f"got {self.consistency_target!r}"
            )
        if self.consistency_prompts not in CONSISTENCY_PROMPTS:
            raise ValueError(
                f"training.versemi.consistency_prompts must be one of {', '.join(CONSISTENCY_PROMPTS)}, "
                f"got {self.consistency_prompts!r}"
            )
        if self.ema_teacher and self.consistency_target == "none":
            raise ValueError(
                "training.versemi.ema_teacher needs a target side: set consistency_target to "
                "'synthetic' or 'aggregate'"
            )
        self.stage2_cutmix_ratio = tuple(float(r) for r in self.stage2_cutmix_ratio)  # type: ignore[assignment]


@dataclass
class MeanTeacherOptions:
    """Options of the mean-teacher baseline (config ``training.mean_teacher``).

    Attributes:
        consistency_weight: Final weight of the probability MSE (UA-MT uses 0.1).
        consistency_rampup: Sigmoid ramp-up length as a fraction of the run's steps.
        consistency_prompts: Which prompts the consistency covers on a dataset's unlabeled scans:
            ``"all"`` (default: every real prompt) or ``"dataset"`` (only that dataset's own prompts).
        ema_decay: Teacher EMA decay.
        noise_std: Std of the Gaussian input noise, clipped to ``+-noise_clip`` (UA-MT: 0.1, 0.2),
            drawn independently for student and teacher.
        noise_clip: See ``noise_std``.
    """

    consistency_weight: float = 0.1
    consistency_rampup: float = 0.4
    consistency_prompts: str = "all"
    ema_decay: float = 0.99
    noise_std: float = 0.1
    noise_clip: float = 0.2

    def __post_init__(self) -> None:
        if self.consistency_prompts not in CONSISTENCY_PROMPTS:
            raise ValueError(
                f"training.mean_teacher.consistency_prompts must be one of {', '.join(CONSISTENCY_PROMPTS)}, "
                f"got {self.consistency_prompts!r}"
            )


@dataclass
class BcpOptions:
    """Options of the bidirectional copy-paste baseline (Bai et al., CVPR 2023; ``training.bcp``).

    Attributes:
        unlabeled_weight: Weight alpha of the teacher pseudo-labeled region (0.5 in BCP).
        cutmix_ratio: Side ratio of the exchanged cube (2/3 in BCP).
        rampup: Ramp-up of the pseudo-label weight as a fraction of the run's steps.
        ema_decay: Teacher EMA decay.
    """

    unlabeled_weight: float = 0.5
    cutmix_ratio: float = 2.0 / 3.0
    rampup: float = 0.2
    ema_decay: float = 0.99


Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StepContext:
    """Everything a method needs besides the batch.

    Attributes:
        forward: Student forward ``images -> logits (B, P_all, ...)`` over every prompt (DDP-wrapped).
        teacher: EMA teacher forward (no grad) or ``None``.
        step: Step within the current stage (0-based).
        max_steps: Steps of the current stage (for ramp-ups).
        generator: CPU generator for CutMix boxes, partners and noise (checkpointed).
    """

    forward: Forward
    teacher: Forward | None
    step: int
    max_steps: int
    generator: torch.Generator


@dataclass
class StepLosses:
    """The total loss and the unweighted value of every term (for logs)."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


class TrainingMethod:
    """Base class: ``losses(batch, ctx) -> StepLosses``."""

    name = "base"
    uses_unlabeled = False
    uses_teacher = False
    uses_donors = False  # CutMix partners from other datasets at each batch's shape
    ema_decay = 0.99

    def __init__(self, label_space: LabelSpace, loss: SegmentationLossConfig) -> None:
        self.label_space = label_space
        self.loss_config = loss
        self.real_ids = label_space.real_prompt_ids
        self.synthetic_id = label_space.synthetic_id

    def seg(self, logits: torch.Tensor, annotation: Annotation) -> torch.Tensor:
        return segmentation_loss(logits, annotation.target, annotation.weight, self.loss_config)

    def supervised(self, logits: torch.Tensor, annotation: Annotation) -> torch.Tensor:
        """Dice+CE of the labeled images' OWN real prompts (weights are 0 for the others)."""
        return self.seg(logits[:, self.real_ids], annotation.select(self.real_ids))

    def losses(self, batch: TrainingBatch, ctx: StepContext) -> StepLosses:
        raise NotImplementedError

    def labeled_only(self) -> "TrainingMethod":
        """The method's terms that need no unlabeled image (for a batch of a dataset that has none)."""
        if not self.uses_unlabeled:
            return self
        return SupervisedMethod(self.label_space, self.loss_config)


class SupervisedMethod(TrainingMethod):
    """Baseline: labeled images only, each with its own prompts (Dice + CE)."""

    name = "supervised"

    def losses(self, batch: TrainingBatch, ctx: StepContext) -> StepLosses:
        sup = self.supervised(ctx.forward(batch.images), batch.annotation)
        return StepLosses(sup, {"supervised": float(sup.detach())})


class VerSemiMethod(TrainingMethod):
    """VerSemi stage 1 (``stage=1``) or stage 2 (``stage=2``), see the module docstring."""

    name = "versemi"

    def __init__(
        self, label_space: LabelSpace, loss: SegmentationLossConfig, options: VerSemiOptions, stage: int
    ) -> None:
        super().__init__(label_space, loss)
        if self.synthetic_id is None:
            raise ValueError("the VerSemi method needs the synthetic prompt in the label space")
        if stage not in (1, 2):
            raise ValueError(f"VerSemi stage must be 1 or 2, got {stage}")
        self.options = options
        self.stage = stage
        self.uses_unlabeled = stage == 2
        self.uses_teacher = stage == 2 and options.ema_teacher
        self.uses_donors = True
        self.ema_decay = options.ema_decay

    def labeled_only(self) -> "TrainingMethod":
        """Stage 1's terms (supervised, synthetic, auxiliary)."""
        if self.stage == 1:
            return self
        return VerSemiMethod(self.label_space, self.loss_config, self.options, 1)

    def losses(self, batch: TrainingBatch, ctx: StepContext) -> StepLosses:
        opt = self.options
        images, ann = batch.images, batch.annotation
        n = images.shape[0]
        spatial = tuple(images.shape[2:])
        device = images.device
        syn = [self.synthetic_id]

        # Cross-dataset CutMix: a cube of a partner (another dataset, same shape) pasted into image i.
        inputs = [images]
        with_mix = bool(opt.synthetic_weight or opt.auxiliary_weight)  # ablations without both skip it
        if with_mix:
            partner_images, partner_ann = batch.partners(ctx.generator)
            cube = random_cube_masks(n, spatial, opt.stage1_cutmix_ratio, ctx.generator, device)
            inputs.append(paste(cube, partner_images, images))
            mixed_ann = mix_annotations(cube, partner_ann, ann)
        unlabeled_mix = u_ann = None
        if self.stage == 2:
            if batch.unlabeled is None or batch.unlabeled.shape[0] == 0:
                raise ValueError("VerSemi stage 2 needs unlabeled images (none in this batch)")
            u = batch.unlabeled
            nu = u.shape[0]
            pool_images, pool_ann = batch.labeled_pool()
            donors = torch.randint(0, pool_images.shape[0], (nu,), generator=ctx.generator).to(device)
            u_cube = random_cube_masks(nu, spatial, opt.stage2_cutmix_ratio, ctx.generator, device)
            unlabeled_mix = paste(u_cube, pool_images[donors], u)
            # The synthetic prompt is known inside the cube (the donor's union of foregrounds), nowhere
            # else; no real prompt is supervised by the cube.
            donor_syn = Annotation(pool_ann.target[donors], pool_ann.weight[donors]).select(syn)
            u_ann = mix_annotations(u_cube, donor_syn, unlabeled_annotation(nu, 1, spatial, device))
            inputs.append(unlabeled_mix)

        logits = ctx.forward(torch.cat(inputs))
        logits_l = logits[:n]
        logits_m = logits[n : 2 * n] if with_mix else logits[:0]
        offset = 2 * n if with_mix else n

        sup = self.supervised(logits_l, ann)
        total = opt.supervised_weight * sup
        terms = {"supervised": float(sup.detach())}
        if opt.synthetic_weight:
            synthetic = self.seg(logits_m[:, syn], mixed_ann.select(syn))
            total = total + opt.synthetic_weight * synthetic
            terms["synthetic"] = float(synthetic.detach())
        if opt.auxiliary_weight:
            auxiliary = self.seg(logits_m[:, self.real_ids], mixed_ann.select(self.real_ids))
            total = total + opt.auxiliary_weight * auxiliary
            terms["auxiliary"] = float(auxiliary.detach())
        if self.stage == 2:
            assert unlabeled_mix is not None and u_ann is not None
            logits_u = logits[offset:]
            cube_loss = self.cube_loss(logits_u, u_ann)
            consistency = self._consistency(logits_u, unlabeled_mix, ctx, batch.datasets)
            ramp = sigmoid_rampup(ctx.step, int(round(opt.consistency_rampup * ctx.max_steps)))
            weight = opt.consistency_weight * ramp
            total = total + opt.cube_weight * cube_loss + weight * consistency
            terms.update(
                cube=float(cube_loss.detach()),
                consistency=float(consistency.detach()),
                consistency_weight=weight,
            )
        return StepLosses(total, terms)

    def cube_loss(self, logits_u: torch.Tensor, synthetic_ann: Annotation) -> torch.Tensor:
        """The pasted-cube term: the synthetic prompt's logits of the unlabeled mixes against the
        union label inside the cube (``synthetic_ann`` has the one synthetic channel)."""
        logits = logits_u[:, [self.synthetic_id]]
        if self.options.cube_loss == "dice":
            cfg = self.loss_config
            return masked_dice_loss(
                logits, synthetic_ann.target, synthetic_ann.weight, cfg.dice_smooth, cfg.dice_squared,
                cfg.batch_dice, cfg.dice_on_empty,
            )
        return self.seg(logits, synthetic_ann)

    def consistency_prompt_ids(self, datasets: Sequence[str]) -> list[int]:
        """The real prompts the consistency's max runs over (``VerSemiOptions.consistency_prompts``)."""
        return consistency_prompt_ids(self, self.options.consistency_prompts, datasets)

    def _consistency(
        self, logits_u: torch.Tensor, images_u: torch.Tensor, ctx: StepContext, datasets: Sequence[str]
    ) -> torch.Tensor:
        """Dice between max over real prompts and the synthetic prompt, both ``(Bu, D, H, W)``."""
        real_ids = self.consistency_prompt_ids(datasets)
        probs = torch.sigmoid(logits_u)
        aggregate = probs[:, real_ids].amax(dim=1)
        synthetic = probs[:, self.synthetic_id]
        assert aggregate.shape == synthetic.shape == (logits_u.shape[0], *logits_u.shape[2:])
        target_side = self.options.consistency_target
        if target_side == "none":
            return dice_agreement_loss(aggregate, synthetic, self.loss_config.dice_smooth, self.loss_config.dice_squared)
        if self.options.ema_teacher:
            if ctx.teacher is None:
                raise RuntimeError("ema_teacher is set but no teacher was given")
            with torch.no_grad():
                t_probs = torch.sigmoid(ctx.teacher(images_u))
            t_aggregate = t_probs[:, real_ids].amax(dim=1)
            t_synthetic = t_probs[:, self.synthetic_id]
        else:
            t_aggregate, t_synthetic = aggregate, synthetic
        if target_side == "synthetic":
            prediction, target = aggregate, t_synthetic.detach()
        else:
            prediction, target = synthetic, t_aggregate.detach()
        return dice_agreement_loss(prediction, target, self.loss_config.dice_smooth, self.loss_config.dice_squared)


def _noise(images: torch.Tensor, std: float, clip: float, generator: torch.Generator) -> torch.Tensor:
    """``images + clip(N(0, std^2), -clip, clip)`` (UA-MT's input perturbation)."""
    if std <= 0:
        return images
    noise = (torch.randn(images.shape, generator=generator) * std).clamp_(-clip, clip)
    return images + noise.to(images.device, images.dtype)


def consistency_prompt_ids(method: TrainingMethod, which: str, datasets: Sequence[str]) -> list[int]:
    """The real prompts a consistency term covers: every one (``which="all"``) or those the batch's
    datasets annotate (``"dataset"``).

    Raises:
        ValueError: ``"dataset"`` and none of ``datasets`` annotates a prompt of the label space.
    """
    if which == "all":
        return list(method.real_ids)
    ids = sorted({i for d in set(datasets) for i, _ in method.label_space.prompts_for_dataset(d)})
    if not ids:
        raise ValueError(f"consistency_prompts 'dataset': no prompt annotated by {sorted(set(datasets))}")
    return ids


class TeacherMethod(TrainingMethod):
    """Base of the baselines that train the student on unlabeled images against an EMA teacher.

    Subclasses set ``name`` and ``options`` (a dataclass with ``ema_decay``) and call
    ``unlabeled_and_teacher`` at the start of ``losses``.
    """

    uses_unlabeled = True
    uses_teacher = True

    def __init__(
        self, label_space: LabelSpace, loss: SegmentationLossConfig, options: MeanTeacherOptions | BcpOptions
    ) -> None:
        super().__init__(label_space, loss)
        self.options = options
        self.ema_decay = options.ema_decay

    def unlabeled_and_teacher(self, batch: TrainingBatch, ctx: StepContext) -> tuple[torch.Tensor, Forward]:
        """The batch's unlabeled images and the teacher; ``ValueError`` when either is missing."""
        if batch.unlabeled is None or ctx.teacher is None:
            raise ValueError(f"{self.name} needs unlabeled images and a teacher")
        return batch.unlabeled, ctx.teacher


class MeanTeacherMethod(TeacherMethod):
    """Baseline: mean teacher (Tarvainen & Valpola 2017) on every real prompt.

    Student and EMA teacher see the unlabeled patch under independent clipped Gaussian noise (on top of
    the sampler's augmentation); the consistency is the MSE between their sigmoid probabilities of
    every real prompt (or the batch's dataset's own, ``consistency_prompts``), weighted by
    ``consistency_weight * sigmoid_rampup``.
    """

    name = "mean_teacher"
    options: MeanTeacherOptions

    def losses(self, batch: TrainingBatch, ctx: StepContext) -> StepLosses:
        opt = self.options
        unlabeled, teacher = self.unlabeled_and_teacher(batch, ctx)
        n = batch.images.shape[0]
        noisy_student = _noise(unlabeled, opt.noise_std, opt.noise_clip, ctx.generator)
        noisy_teacher = _noise(unlabeled, opt.noise_std, opt.noise_clip, ctx.generator)
        logits = ctx.forward(torch.cat([batch.images, noisy_student]))
        sup = self.supervised(logits[:n], batch.annotation)
        ids = consistency_prompt_ids(self, opt.consistency_prompts, batch.datasets)
        with torch.no_grad():
            teacher_probs = torch.sigmoid(teacher(noisy_teacher)[:, ids])
        consistency = probability_mse_loss(logits[n:, ids], teacher_probs)
        weight = opt.consistency_weight * sigmoid_rampup(ctx.step, int(round(opt.consistency_rampup * ctx.max_steps)))
        total = sup + weight * consistency
        return StepLosses(
            total,
            {"supervised": float(sup.detach()), "consistency": float(consistency.detach()), "consistency_weight": weight},
        )


class BcpMethod(TeacherMethod):
    """Baseline: bidirectional copy-paste (Bai et al., CVPR 2023) on every real prompt.

    With one cube mask per pair: a labeled cube pasted into an unlabeled patch and the unlabeled cube
    pasted into the labeled patch; labeled voxels carry their own prompts' labels (weight 1), unlabeled
    voxels carry the EMA teacher's thresholded pseudo-labels for every real prompt (weight alpha).
    """

    name = "bcp"
    options: BcpOptions

    def losses(self, batch: TrainingBatch, ctx: StepContext) -> StepLosses:
        opt = self.options
        u, teacher = self.unlabeled_and_teacher(batch, ctx)
        images = batch.images
        n, nu = images.shape[0], u.shape[0]
        spatial = tuple(images.shape[2:])
        device = images.device
        pairs = torch.arange(nu, device=device) % n
        lab = images[pairs]
        lab_ann = Annotation(batch.annotation.target[pairs], batch.annotation.weight[pairs]).select(self.real_ids)
        with torch.no_grad():
            pseudo = (torch.sigmoid(teacher(u)[:, self.real_ids]) > 0.5).float()
        alpha = opt.unlabeled_weight * sigmoid_rampup(ctx.step, int(round(opt.rampup * ctx.max_steps)))
        pseudo_ann = Annotation(pseudo, torch.full((nu, len(self.real_ids), 1, 1, 1), alpha, device=device))
        cube = random_cube_masks(nu, spatial, opt.cutmix_ratio, ctx.generator, device)
        into_unlabeled = paste(cube, lab, u)
        into_labeled = paste(cube, u, lab)
        logits = ctx.forward(torch.cat([into_unlabeled, into_labeled]))[:, self.real_ids]
        loss_u = self.seg(logits[:nu], mix_annotations(cube, lab_ann, pseudo_ann))
        loss_l = self.seg(logits[nu:], mix_annotations(cube, pseudo_ann, lab_ann))
        total = loss_u + loss_l
        return StepLosses(
            total, {"mix_into_unlabeled": float(loss_u.detach()), "mix_into_labeled": float(loss_l.detach()), "pseudo_weight": alpha}
        )


def _options(cls: type, values: Mapping[str, Any] | None, section: str) -> Any:
    values = dict(values or {})
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in training.{section}; known: {sorted(known)}")
    return cls(**values)


def build_method(
    name: str,
    stage: int,
    label_space: LabelSpace,
    loss: SegmentationLossConfig,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainingMethod:
    """The method ``name`` (``versemi``, ``supervised``, ``mean_teacher``, ``bcp``) for ``stage``.

    Args:
        name: Method name (config ``training.method`` / ``--method``).
        stage: 1 or 2 (VerSemi only; baselines are single-stage).
        label_space: The label space.
        loss: Dice/CE configuration.
        options: Per-method option sections, e.g. ``{"versemi": {...}, "mean_teacher": {...}}``.
    """
    options = dict(options or {})
    if name == "versemi":
        return VerSemiMethod(label_space, loss, _options(VerSemiOptions, options.get("versemi"), "versemi"), stage)
    if name == "supervised":
        return SupervisedMethod(label_space, loss)
    if name == "mean_teacher":
        return MeanTeacherMethod(label_space, loss, _options(MeanTeacherOptions, options.get("mean_teacher"), "mean_teacher"))
    if name == "bcp":
        return BcpMethod(label_space, loss, _options(BcpOptions, options.get("bcp"), "bcp"))
    raise ValueError(f"unknown training method {name!r}; expected one of {', '.join(METHODS)}")
