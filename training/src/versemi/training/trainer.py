"""The trainer: one loop for VerSemi (stage 1 and 2) and the baselines, with checkpoints and resume.

A run folder per stage (``<output_dir>/stage1``, ``<output_dir>/stage2`` for VerSemi;
``<output_dir>/<method>`` for a baseline) holds ``last.pt`` (every ``checkpoint_every`` steps and at
the end), ``best.pt`` (best validation mean Dice), ``train_log.jsonl``, ``validation_log.jsonl`` and
``tensorboard/``; ``<output_dir>/plans.json`` holds the run's plans (:mod:`versemi.data.plans`, also
in every checkpoint). ``resume=True`` continues from ``last.pt`` exactly where it stopped (what is
saved and restored: :mod:`versemi.training.checkpointing`; patch streams are re-seeded from the
step, see :mod:`versemi.training.batches`).

:meth:`Trainer.fit` is a short skeleton of named hooks (nnU-Net's ``run_training`` shape):
``on_train_start``, then per step ``train_step`` and ``on_step_end`` (logging, ``run_validation``,
early stopping, ``save``), then ``on_train_end``. Each step draws one batch per labeled dataset (each
with its plan's patch shape), computes the method's losses batch by batch under autocast and
back-propagates each (their mean is the step's loss; gradients accumulate, so only one batch's graph
is alive at a time), then clips, steps, updates the schedule and the EMA. Under DDP (``torchrun``)
every rank draws its own patches; gradients are averaged by DDP once per step; rank 0 validates,
writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from versemi.checkpoint import Checkpoint, CheckpointError
from versemi.data.augmentation import make_training_augmentation, slice_axis
from versemi.data.config import TrainConfig
from versemi.data.plans import Plans
from versemi.devices import Precision, autocast_dtype
from versemi.fileio import remove_stale_temp_files
from versemi.inference.postprocess import LARGEST_COMPONENT, check_postprocessing
from versemi.labels import LabelSpace
from versemi.network.geometry import NetworkGeometry
from versemi.network.segmenter import build_model
from versemi.training import distributed as dist_utils
from versemi.training.checkpointing import (
    final_checkpoint,
    load_init_weights,
    restore_training_state,
    run_plans,
    stage_folder,
    trainer_checkpoint,
    weights_digest,
    write_plans,
)
from versemi.training.cutmix import prompt_targets
from versemi.training.batches import (
    TrainingCases,
    build_step_stream,
    load_cases,
    make_step_loader,
    validation_cases,
)
from versemi.training.ema import ModelEMA
from versemi.training.methods import StepContext, TrainingBatch, TrainingMethod, build_method
from versemi.training.options import Optimizer, TrainingOptions
from versemi.training.progress import StepTimer, progress_bar
from versemi.training.run_log import RunLog
from versemi.training.schedules import build_lr_scheduler
from versemi.training.validation import postprocessing_from_validation, validate

__all__ = ["StageResult", "Trainer", "TrainingError", "run_training"]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclass
class StageResult:
    """What a finished (or early-stopped) stage left behind."""

    folder: Path
    step: int
    max_steps: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    data_wait_fraction: float
    seconds: float

    @property
    def checkpoint(self) -> Path:
        path = final_checkpoint(self.folder)
        assert path is not None
        return path


def build_optimizer(model: nn.Module, options: TrainingOptions) -> torch.optim.Optimizer:
    """``training.optimizer`` over the model's parameters (SGD: nesterov, as nnU-Net)."""
    params, lr, wd = model.parameters(), options.lr, options.weight_decay
    if options.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=options.momentum, nesterov=True, weight_decay=wd)
    cls = torch.optim.AdamW if options.optimizer is Optimizer.ADAMW else torch.optim.Adam
    return cls(params, lr=lr, betas=options.betas, weight_decay=wd)


def dataset_augmentations(options: TrainingOptions, plans: Plans) -> dict[str, Any]:
    """Each dataset's training augmentation: ``augmentation`` with the dataset's ``dataset_augmentation``
    overrides, spatial transforms in-plane where its plan is anisotropic.

    Raises:
        ValueError: ``dataset_augmentation`` names a dataset that is not in ``plans``.
    """
    per_dataset = options.dataset_augmentation
    unknown = sorted(set(per_dataset) - set(plans.sources))
    if unknown:
        raise ValueError(f"training.dataset_augmentation names {', '.join(unknown)}, not a dataset of this run "
                         f"({', '.join(plans.sources)})")
    return {
        source: make_training_augmentation({**options.augmentation, **per_dataset.get(source, {})},
                                           slice_axis(plans.plan_for(source).target_spacing))
        for source in plans.sources
    }


class Trainer:
    """Runs one stage of one method.

    Args:
        config: The validated training config.
        options: The validated ``training`` options (:func:`versemi.training.options.training_options`).
        stage: 1 or 2 (VerSemi); 1 for baselines.
        output_dir: Root output folder; the stage writes to :func:`stage_folder`.
        device: Training device (per rank).
        dist: The distributed context.
        init_checkpoint: Weights to start from (stage 2: the stage-1 checkpoint), unless resuming.
        resume: Continue from ``last.pt`` in the stage folder if it exists.
        cases: Preprocessed cases (loaded if ``None``).
        progress: Show a tqdm bar (rank 0).
        plans: The run's plans (see :func:`run_plans`; made from the config if ``None``). A resumed
            stage always uses the plans of its ``last.pt``.
    """

    def __init__(
        self, config: TrainConfig, options: TrainingOptions, stage: int, output_dir: Path, device: torch.device, *,
        dist: dist_utils.DistributedContext | None = None, init_checkpoint: Path | None = None,
        resume: bool = False, cases: TrainingCases | None = None, progress: bool = True, plans: Plans | None = None,
    ) -> None:
        self.config, self.options, self.stage, self.device = config, options, stage, device
        self.method_name = options.method
        self.dist = dist or dist_utils.DistributedContext()
        self.folder = stage_folder(Path(output_dir), self.method_name, stage)
        self.max_steps = options.stage_steps(stage)
        if self.max_steps < 1:
            raise ValueError(f"method {self.method_name!r} has no stage {stage} with training.stage1_fraction "
                             f"{options.stage1_fraction} (0 = a single stage: stage 2)")
        self.progress = progress and self.dist.is_main
        self.label_space: LabelSpace = config.label_space()
        self.method: TrainingMethod = build_method(
            self.method_name, stage, self.label_space, options.loss, options.method_sections()
        )
        self.labeled_method: TrainingMethod = self.method.labeled_only()
        self.postprocessing = self._configured_postprocessing()
        resume_file = self.folder / "last.pt" if resume and (self.folder / "last.pt").is_file() else None
        self.plans = run_plans(config, resume_file, init_checkpoint) if plans is None or resume_file else plans
        self.amp_dtype = autocast_dtype(options.precision, device, "training")
        self.model = self._build_model()
        self._build_optimization()
        self.step, self.stale_validations = 0, 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.resumed_from: int | None = None
        self.init_checkpoint: Path | None = None
        if resume_file is not None:
            restore_training_state(self, resume_file)
        elif init_checkpoint is not None:
            load_init_weights(self, init_checkpoint)
        if self.resumed_from is None or not self.dist.is_main:
            self._seed_generators()
        self._open_run(cases)

    # --- setup --------------------------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        """The model for this label space, checked against every dataset's plan."""
        model_cfg = dict(self.config.model)
        if model_cfg.get("num_prompts") not in (None, len(self.label_space)):
            raise ValueError(
                f"model.num_prompts is {model_cfg['num_prompts']} but the label space has "
                f"{len(self.label_space)} prompts ({', '.join(self.label_space.names)}); remove the key"
            )
        model_cfg["num_prompts"] = len(self.label_space)
        if model_cfg.get("synthetic_head") == "own":
            if self.label_space.synthetic_id is None:
                raise ValueError("model.synthetic_head is 'own' but the label space has no synthetic prompt "
                                 "(VerSemi adds one); remove the key")
            model_cfg["synthetic_prompt"] = self.label_space.synthetic_id
        # Same seed on every rank: identical initial weights (and EMA teacher copies) everywhere.
        torch.manual_seed(self.config.seed)
        model = build_model(model_cfg).to(self.device)
        for plan in self.plans.datasets.values():
            if any(s % model.size_divisor for s in plan.patch_size):
                raise ValueError(
                    f"{plan.dataset}: patch size {list(plan.patch_size)} (x, y, z) must be a multiple of the "
                    f"model's size divisor {model.size_divisor} along every axis (set plans.overrides or "
                    "remove the top-level patch_size to let the plans choose one)"
                )
            if plan.network is not None and plan.network.depth != model.backbone.depth:
                raise ValueError(f"{plan.dataset}: the plan's network geometry has {plan.network.depth} stages "
                                 f"but model.depth is {model.backbone.depth}; re-plan with this model")
        return model

    def _build_optimization(self) -> None:
        """Optimizer, LR schedule, gradient scaler (fp16 only), EMA teacher and the CutMix generator."""
        options = self.options
        self.optimizer = build_optimizer(self.model, options)
        schedule_steps, schedule_start = self.max_steps, 0
        if self.method_name == "versemi" and self.stage == 2 and 1 in options.versemi_stages() \
                and not getattr(self.method, "options").lr_restart:
            schedule_start = options.stage_steps(1)  # continue stage 1's schedule over both stages
            schedule_steps = schedule_start + self.max_steps
        self.scheduler = build_lr_scheduler(
            self.optimizer, options.lr_schedule, schedule_steps, options.warmup_steps, start_step=schedule_start
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema: ModelEMA | None = ModelEMA(self.model, self.method.ema_decay) if self.method.uses_teacher else None
        self.generator = torch.Generator()

    def _open_run(self, cases: TrainingCases | None) -> None:
        """Cases, validation set, logs and the DDP wrapper; the loop's state starts empty."""
        self.cases = cases if cases is not None else self._load_cases()
        self.validation = validation_cases(self.cases.validation, self.plans)
        self.log = RunLog(self.folder, enabled=self.dist.is_main, tensorboard=self.options.tensorboard,
                          resume_step=self.resumed_from)
        if self.dist.is_main:
            remove_stale_temp_files(self.folder)  # e.g. .last.pt.<pid>-*.tmp of a SIGKILLed run
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.stopped_early = False
        self.timer = StepTimer()
        self.next_batches: Callable[[], list[TrainingBatch]] | None = None
        self.bar: Any = None
        self.started = time.perf_counter()

    def _configured_postprocessing(self) -> dict[str, str]:
        """``training.postprocessing`` as ``{prompt: kind}`` (``auto`` starts empty, validation decides)."""
        setting = self.options.postprocessing
        real = [p.name for p in self.label_space.prompts if not p.synthetic]
        if setting in ("auto", "none"):
            return {}
        if setting == LARGEST_COMPONENT:
            return {name: LARGEST_COMPONENT for name in real}
        return check_postprocessing(setting, real, f"{self.config.source or 'config'}: training.postprocessing")

    def _load_cases(self) -> TrainingCases:
        # Rank 0 preprocesses into the shared cache first; the other ranks then read it.
        if self.dist.enabled and not self.dist.is_main:
            dist_utils.barrier(self.dist)
        cases = load_cases(self.config, self.plans, with_unlabeled=self.method.uses_unlabeled,
                           progress=self.progress, workers=self.options.num_workers)
        if self.dist.enabled and self.dist.is_main:
            dist_utils.barrier(self.dist)
        return cases

    # --- state --------------------------------------------------------------------------------------
    def _seed_generators(self) -> None:
        """Per-rank generators (CutMix boxes, partners, noise) and global RNGs from (seed, rank, step)."""
        seq = np.random.SeedSequence([self.config.seed, self.dist.rank, self.stage, self.step])
        s = seq.generate_state(2)
        self.generator.manual_seed(int(s[0]))
        torch.manual_seed(int(s[1]))
        np.random.seed(int(s[1]) % 2**32)
        random.seed(int(s[1]))

    def to_checkpoint(self) -> Checkpoint:
        """See :func:`versemi.training.checkpointing.trainer_checkpoint`."""
        return trainer_checkpoint(self)

    def save(self, name: str) -> Path | None:
        """Write ``<folder>/<name>`` on rank 0 (``last.pt``, ``best.pt``)."""
        if not self.dist.is_main:
            return None
        return self.to_checkpoint().save(self.folder / name)

    # --- data ---------------------------------------------------------------------------------------
    def _batches(self) -> Callable[[], list[TrainingBatch]]:
        """This rank's step stream: a callable returning the next step's batches (one per dataset), on the device."""
        transforms = dataset_augmentations(self.options, self.plans)
        stream = build_step_stream(
            self.cases, self.config, self.plans, self.options, rank=self.dist.rank, stage=self.stage,
            start_step=self.step, with_unlabeled=self.method.uses_unlabeled, with_donors=self.method.uses_donors,
            transforms=transforms,
        )
        steps = make_step_loader(stream, self.options.num_workers, pin_memory=self.device.type == "cuda")

        def to_batch(group: dict[str, Any]) -> TrainingBatch:
            def on_device(key: str) -> Any:
                return None if group[key] is None else group[key].to(self.device, non_blocking=True)

            images, donors = on_device("image"), on_device("donor_image")
            datasets = [group["dataset"]] * images.shape[0]
            return TrainingBatch(
                images=images,
                annotation=prompt_targets(on_device("label"), datasets, self.label_space),
                datasets=datasets,
                unlabeled=on_device("unlabeled"),
                donor_images=donors,
                donor_annotation=None if donors is None else prompt_targets(
                    on_device("donor_label"), group["donor_dataset"], self.label_space),
                donor_datasets=group["donor_dataset"],
            )

        return lambda: [to_batch(g) for g in next(steps)]

    # --- one step ---------------------------------------------------------------------------------------
    def _forward(self, images: torch.Tensor, geometry: NetworkGeometry | None = None) -> torch.Tensor:
        ids = torch.arange(len(self.label_space), device=self.device)
        return self.ddp_model(images, ids, geometry)

    def _teacher(self, images: torch.Tensor, geometry: NetworkGeometry | None = None) -> torch.Tensor:
        assert self.ema is not None
        ids = torch.arange(len(self.label_space), device=self.device)
        return self.ema.module(images, ids, geometry)

    def _step_context(self, batch: TrainingBatch) -> StepContext:
        """The forward passes of one batch: its dataset's network geometry (every image of a batch,
        CutMix partners included, is on the host dataset's patch)."""
        geometry = self.plans.plan_for(batch.datasets[0]).network
        return StepContext(
            forward=functools.partial(self._forward, geometry=geometry),
            teacher=functools.partial(self._teacher, geometry=geometry) if self.ema is not None else None,
            step=self.step,
            max_steps=self.max_steps,
            generator=self.generator,
        )

    def train_step(self, batches: list[TrainingBatch]) -> dict[str, float]:
        """One optimisation step over one batch per dataset; returns the mean loss terms (and total)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: list[float] = []
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for index, batch in enumerate(batches):
            # A dataset without unlabeled scans of its own trains only the labeled terms; the unlabeled
            # terms come from the datasets that have some.
            terms_method = self.method if batch.unlabeled is not None else self.labeled_method
            last = index == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.ddp_model.no_sync()  # type: ignore[operator]
            with sync:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    losses = terms_method.losses(batch, self._step_context(batch))
                if not dist_utils.all_ranks_true(self.dist, bool(torch.isfinite(losses.total.detach())), self.device):
                    self.optimizer.zero_grad(set_to_none=True)
                    raise TrainingError(
                        f"non-finite loss at step {self.step + 1} ({batch.datasets[0]}) on rank {self.dist.rank} or "
                        f"another rank ({losses.terms}); lower training.lr or use precision: fp32"
                    )
                self.scaler.scale(losses.total / len(batches)).backward()
            totals.append(float(losses.total.detach()))
            for k, v in losses.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        clip = self.options.grad_clip
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        # Each term is the mean over the batches that have it (the unlabeled terms: those with unlabeled scans).
        return {"total": sum(totals) / len(totals), **{k: v / counts[k] for k, v in sums.items()}}

    def run_validation(self) -> dict[str, Any] | None:
        """Validate on rank 0 (others wait); update best.pt; returns the record (rank 0)."""
        record = None
        if self.dist.is_main and self.validation:
            result = validate(
                self.model,
                self.validation,
                self.label_space,
                self.device,
                overlap=self.options.validation_overlap,
                sw_batch_size=self.options.validation_sw_batch_size,
                nsd_tolerance_mm=self.options.nsd_tolerance_mm,
                autocast_dtype=autocast_dtype(Precision.AUTO, self.device),  # exactly as predict will
            )
            metric = result["mean_dice"]
            if self.options.postprocessing == "auto":
                self.postprocessing = postprocessing_from_validation(result["metrics"])
            improved = math.isfinite(metric) and (self.best_metric is None or metric > self.best_metric)
            if improved:
                self.best_metric, self.best_step, self.stale_validations = metric, self.step, 0
            else:
                self.stale_validations += 1
            record = {
                "step": self.step,
                "mean_dice": metric,
                "best": improved,
                "best_metric": self.best_metric,
                "metrics": result["metrics"],
                "cases": result["cases"],
                "postprocessing": dict(self.postprocessing),
            }
            self.log.validation_record(record)
            self.log.scalars("val", {"mean_dice": metric}, self.step)
            for prompt, m in result["metrics"].items():
                self.log.scalars(f"val/{prompt}", {k: m[k] for k in ("dice", "hd95", "nsd")}, self.step)
            if improved:
                self.save("best.pt")
        return record

    # --- the loop: fit and its hooks ----------------------------------------------------------------
    def fit(self) -> StageResult:
        """Train until ``max_steps`` (or early stopping); returns where the stage ended."""
        self.started = time.perf_counter()
        if self.step >= self.max_steps:  # resumed a finished stage: nothing to do, the logs stay as they are
            self.log.close()
            return self._result()
        self.on_train_start()
        try:
            while self.step < self.max_steps and not self.stopped_early:
                started = time.perf_counter()
                assert self.next_batches is not None
                batches = self.next_batches()
                fetched = time.perf_counter()
                terms = self.train_step(batches)
                self.timer.add(fetched - started, time.perf_counter() - started)
                self.on_step_end(terms)
        finally:
            self.on_loop_exit()
        return self.on_train_end()

    def on_train_start(self) -> None:
        """Log the start (or resume) record; open the batch stream and the progress bar."""
        self.log.event({
            "event": "resume" if self.resumed_from is not None else "start",
            "method": self.method_name,
            "stage": self.stage,
            "step": self.step,
            "max_steps": self.max_steps,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "amp": str(self.amp_dtype) if self.amp_dtype else "none",
            "weights_sha256": weights_digest(self.model.state_dict()),
            "init_checkpoint": str(self.init_checkpoint) if self.init_checkpoint else None,
            "cases": self.cases.listing(),
            "label_space": self.label_space.names,
        })
        self.next_batches = self._batches()
        desc = self.method_name + (f" stage {self.stage}" if self.method_name == "versemi" else "")
        self.bar = progress_bar(self.progress, self.max_steps, self.step, desc)

    def on_step_end(self, terms: dict[str, float]) -> None:
        """After each step: progress, then logging, validation and checkpoint when they are due."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms['total']:.4f}", refresh=False)
        if self._due(self.options.log_every):
            self.on_log_interval(terms)
        if self._due(self.options.validate_every):
            self.run_validation()
            self.check_early_stopping()
        if self._due(self.options.checkpoint_every) or self.stopped_early:
            self.save("last.pt")

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.max_steps

    def on_log_interval(self, terms: dict[str, float]) -> None:
        """Log the step's loss terms (mean over ranks), the LR and the window's timing."""
        terms = dist_utils.mean_across_ranks(self.dist, terms, self.device)
        wait_fraction, seconds_per_step = self.timer.flush()
        lr = self.optimizer.param_groups[0]["lr"]
        self.log.event({"event": "train", "step": self.step, "losses": terms, "lr": lr,
                        "data_wait_fraction": wait_fraction, "seconds_per_step": seconds_per_step})
        self.log.scalars("train", {**terms, "lr": lr, "data_wait_fraction": wait_fraction}, self.step)

    def check_early_stopping(self) -> None:
        """Stop (every rank alike) after ``early_stopping_patience`` validations without improvement."""
        patience = self.options.early_stopping_patience
        stop = patience > 0 and self.stale_validations >= patience
        self.stopped_early = dist_utils.broadcast_flag(self.dist, stop, self.device)

    def on_loop_exit(self) -> None:
        """Close the bar; drop the DataLoader iterators (their worker processes exit)."""
        if self.bar is not None:
            self.bar.close()
        self.next_batches = None

    def on_train_end(self) -> StageResult:
        """Log the end record (with every rank's weight digest, a DDP sanity check) and close the logs."""
        self.timer.flush()
        result = self._result()
        digest = weights_digest(self.model.state_dict())
        if self.ema is not None:
            digest += "/ema:" + weights_digest(self.ema.module.state_dict())
        self.log.event({
            "event": "end",
            "rank_weights_sha256": dist_utils.gather_strings(self.dist, digest),
            "step": self.step,
            "stopped_early": self.stopped_early,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "data_wait_fraction": result.data_wait_fraction,
            "seconds": result.seconds,
        })
        self.log.close()
        dist_utils.barrier(self.dist)
        return result

    def _result(self) -> StageResult:
        return StageResult(
            folder=self.folder, step=self.step, max_steps=self.max_steps, best_metric=self.best_metric,
            best_step=self.best_step, stopped_early=self.stopped_early,
            data_wait_fraction=self.timer.wait_fraction, seconds=time.perf_counter() - self.started,
        )


def run_training(
    config: TrainConfig,
    options: TrainingOptions,
    stages: list[int],
    output_dir: Path,
    device: torch.device,
    dist: dist_utils.DistributedContext | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[StageResult]:
    """Run the given stages in order; stage 2 starts from stage 1's final checkpoint.

    ``training.init_checkpoint`` (``--resume-from``), if set, gives the start weights of the FIRST
    stage run here (e.g. retraining a model after reviewing pseudo-labels). Stage 2 otherwise starts
    from ``<output_dir>/stage1`` (``best.pt``, else ``last.pt``). A single-stage VerSemi run
    (``stage1_fraction: 0``) runs stage 2 only, from scratch. The plans are made once
    (:func:`run_plans`), written to ``<output_dir>/plans.json`` and shared by the stages.

    Raises:
        CheckpointError: stage 2 without a stage-1 checkpoint, or an unusable checkpoint.
        ValueError: a stage the method does not have.
    """
    results: list[StageResult] = []
    first_init = Path(options.init_checkpoint).expanduser() if options.init_checkpoint else None
    if options.method == "versemi":
        available = options.versemi_stages()
        missing = [s for s in stages if s not in available]
        if missing and stages != [1, 2]:
            raise ValueError(f"VerSemi has no stage {missing[0]} with training.stage1_fraction 0 (one stage: 2)")
        stages = [s for s in stages if s in available]
    dist = dist or dist_utils.DistributedContext()
    plans: Plans | None = None
    for index, stage in enumerate(stages):
        # init_checkpoint starts the FIRST stage of this invocation; stage 2 after stage 1 always
        # continues from stage 1's result.
        init = first_init if index == 0 else None
        if options.method == "versemi" and stage == 2 and init is None and 1 in options.versemi_stages():
            init = final_checkpoint(stage_folder(output_dir, "versemi", 1))
            if init is None:
                raise CheckpointError(
                    f"{stage_folder(output_dir, 'versemi', 1)}: no stage-1 checkpoint (best.pt or last.pt) "
                    "to start stage 2 from; run --stage 1 first or set training.init_checkpoint"
                )
        if plans is None:
            resume_file = stage_folder(output_dir, options.method, stage) / "last.pt"
            plans = run_plans(config, resume_file if resume and resume_file.is_file() else None, init)
            if dist.is_main:
                write_plans(plans, output_dir)
        trainer = Trainer(config, options, stage, output_dir, device, dist=dist, init_checkpoint=init, resume=resume,
                          progress=progress, plans=plans)
        results.append(trainer.fit())
    return results
