"""The trainer: one loop for VerSemi (stage 1 and 2) and the baselines, with checkpoints and resume.

A run folder per stage (``<output_dir>/stage1``, ``<output_dir>/stage2`` for VerSemi;
``<output_dir>/<method>`` for a baseline) holds ``last.pt`` (every ``checkpoint_every`` steps and at
the end), ``best.pt`` (best validation mean Dice), ``train_log.jsonl``, ``validation_log.jsonl`` and
``tensorboard/``; ``<output_dir>/plans.json`` holds the run's plans (:mod:`versemi.data.plans`, also
in every checkpoint). ``resume=True`` continues from ``last.pt`` exactly where it stopped: same step,
weights, optimizer, AMP scaler, EMA teacher, LR schedule, best metric, early-stopping counter, plans
and RNG states (patch streams are re-seeded from the step, see :mod:`versemi.training.data`).

Each step draws one batch per labeled dataset (each with its plan's patch shape), computes the
method's losses batch by batch under autocast and back-propagates each (their mean is the step's
loss; gradients accumulate, so only one batch's graph is alive at a time), then clips, steps, updates
the schedule and the EMA. Under DDP (``torchrun``) every rank draws its own patches; gradients are
averaged by DDP once per step; rank 0 validates, writes logs and checkpoints.

Why one module of about 700 lines: the loop, what a checkpoint saves and what resume restores must
change together (a state saved but not restored, or the reverse, breaks an exact resume).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from versemi.checkpoint import Checkpoint, CheckpointError, TrainingState
from versemi.data.config import TrainConfig
from versemi.data.plans import Plans, plans_for_config
from versemi.devices import cpu_has_native_bf16
from versemi.fileio import atomic_write_json, remove_stale_temp_files
from versemi.inference.sliding import inference_autocast_dtype
from versemi.labels import LabelSpace
from versemi.network.geometry import NetworkGeometry
from versemi.network.segmenter import build_model
from versemi.training import distributed as dist_utils
from versemi.training.cutmix import prompt_targets
from versemi.training.data import (
    TrainingCases,
    build_step_stream,
    load_cases,
    make_step_loader,
    validation_cases,
)
from versemi.training.ema import ModelEMA
from versemi.training.methods import StepContext, TrainingBatch, TrainingMethod, build_method
from versemi.training.options import loss_config, stage_steps, versemi_stages
from versemi.training.run_log import RunLog
from versemi.training.schedules import build_lr_scheduler
from versemi.training.state import capture_rng_state, restore_rng_state
from versemi.inference.postprocess import LARGEST_COMPONENT, check_postprocessing
from versemi.training.validation import postprocessing_from_validation, validate


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``training.amp`` on ``device`` (``None`` = full fp32).

    ``auto``: float16 (with a GradScaler) on CUDA, bfloat16 on a CPU with native bf16 arithmetic
    (:func:`versemi.devices.cpu_has_native_bf16`; ~2x the steps per second of float32 there, same
    Dice, see docs/TRAINING.md), float32 elsewhere.
    """
    if amp == "none":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError(f"training.amp: fp16 needs CUDA (device is {device.type}); use bf16 or none")
        return torch.float16
    return torch.bfloat16


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, bytes): identical weights <=> same digest."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def stage_folder(output_dir: Path, method: str, stage: int) -> Path:
    """Run folder of a stage: ``stage1``/``stage2`` for VerSemi, the method name for baselines."""
    return output_dir / (f"stage{stage}" if method == "versemi" else method)


def final_checkpoint(folder: Path) -> Path | None:
    """``best.pt`` if validation chose one, else ``last.pt``, else ``None``."""
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    return None


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


def build_optimizer(model: nn.Module, options: dict[str, Any]) -> torch.optim.Optimizer:
    lr, wd = float(options["lr"]), float(options["weight_decay"])
    if options["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(options["momentum"]), nesterov=True, weight_decay=wd)
    betas = (float(options["betas"][0]), float(options["betas"][1]))
    cls = torch.optim.AdamW if options["optimizer"] == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=lr, betas=betas, weight_decay=wd)


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
        self,
        config: TrainConfig,
        options: dict[str, Any],
        stage: int,
        output_dir: Path,
        device: torch.device,
        dist: dist_utils.DistributedContext | None = None,
        init_checkpoint: Path | None = None,
        resume: bool = False,
        cases: TrainingCases | None = None,
        progress: bool = True,
        plans: Plans | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.method_name = str(options["method"])
        self.stage = stage
        self.device = device
        self.dist = dist or dist_utils.DistributedContext()
        self.folder = stage_folder(Path(output_dir), self.method_name, stage)
        self.max_steps = stage_steps(options, stage)
        if self.max_steps < 1:
            raise ValueError(f"method {self.method_name!r} has no stage {stage} with training.stage1_fraction "
                             f"{options['stage1_fraction']} (0 = a single stage: stage 2)")
        self.progress = progress and self.dist.is_main
        self.label_space: LabelSpace = config.label_space()
        self.method: TrainingMethod = build_method(
            self.method_name,
            stage,
            self.label_space,
            loss_config(options),
            {k: options[k] for k in ("versemi", "mean_teacher", "bcp")},
        )
        self.labeled_method: TrainingMethod = self.method.labeled_only()
        self.postprocessing = self._configured_postprocessing()
        resume_file = self.folder / "last.pt"
        self.plans = run_plans(config, resume_file if resume and resume_file.is_file() else None, init_checkpoint) \
            if plans is None or (resume and resume_file.is_file()) else plans
        self.amp_dtype = autocast_dtype(str(options["amp"]), device)

        model_cfg = dict(config.model)
        if model_cfg.get("num_prompts") not in (None, len(self.label_space)):
            raise ValueError(
                f"model.num_prompts is {model_cfg['num_prompts']} but the label space has "
                f"{len(self.label_space)} prompts ({', '.join(self.label_space.names)}); remove the key"
            )
        model_cfg["num_prompts"] = len(self.label_space)
        # Same seed on every rank: identical initial weights (and EMA teacher copies) everywhere.
        torch.manual_seed(config.seed)
        self.model = build_model(model_cfg).to(device)
        for plan in self.plans.datasets.values():
            if any(s % self.model.size_divisor for s in plan.patch_size):
                raise ValueError(
                    f"{plan.dataset}: patch size {list(plan.patch_size)} (x, y, z) must be a multiple of the "
                    f"model's size divisor {self.model.size_divisor} along every axis (set plans.overrides or "
                    "remove the top-level patch_size to let the plans choose one)"
                )
            if plan.network is not None and plan.network.depth != self.model.backbone.depth:
                raise ValueError(f"{plan.dataset}: the plan's network geometry has {plan.network.depth} stages "
                                 f"but model.depth is {self.model.backbone.depth}; re-plan with this model")
        self.optimizer = build_optimizer(self.model, options)
        schedule_steps, schedule_start = self.max_steps, 0
        if self.method_name == "versemi" and stage == 2 and 1 in versemi_stages(options) \
                and not getattr(self.method, "options").lr_restart:
            schedule_start = stage_steps(options, 1)  # continue stage 1's schedule over both stages
            schedule_steps = schedule_start + self.max_steps
        self.scheduler = build_lr_scheduler(
            self.optimizer, str(options["lr_schedule"]), schedule_steps, int(options["warmup_steps"]),
            start_step=schedule_start,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ema: ModelEMA | None = ModelEMA(self.model, self.method.ema_decay) if self.method.uses_teacher else None
        self.generator = torch.Generator()
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.stale_validations = 0
        self.resumed_from: int | None = None
        self.init_checkpoint: Path | None = None

        if resume and (self.folder / "last.pt").is_file():
            self._load_resume_state(self.folder / "last.pt")
        elif init_checkpoint is not None:
            self._load_init_weights(init_checkpoint)
            self.init_checkpoint = Path(init_checkpoint)
        if self.resumed_from is None or not self.dist.is_main:
            self._seed_generators()

        self.cases = cases if cases is not None else self._load_cases()
        self.validation = validation_cases(self.cases.validation, self.plans)
        self.log = RunLog(self.folder, enabled=self.dist.is_main, tensorboard=bool(options["tensorboard"]),
                          resume_step=self.resumed_from)
        if self.dist.is_main:
            remove_stale_temp_files(self.folder)  # e.g. .last.pt.<pid>-*.tmp of a SIGKILLed run
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )

    def _configured_postprocessing(self) -> dict[str, str]:
        """``training.postprocessing`` as ``{prompt: kind}`` (``auto`` starts empty, validation decides)."""
        setting = self.options["postprocessing"]
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
        cases = load_cases(
            self.config, self.plans, self.method.uses_unlabeled, self.progress,
            workers=int(self.options["num_workers"]),
        )
        if self.dist.enabled and self.dist.is_main:
            dist_utils.barrier(self.dist)
        return cases

    # --- state ------------------------------------------------------------------------------------
    def _seed_generators(self) -> None:
        """Per-rank generators (CutMix boxes, partners, noise) and global RNGs from (seed, rank, step)."""
        seq = np.random.SeedSequence([self.config.seed, self.dist.rank, self.stage, self.step])
        s = seq.generate_state(2)
        self.generator.manual_seed(int(s[0]))
        torch.manual_seed(int(s[1]))
        np.random.seed(int(s[1]) % 2**32)
        import random

        random.seed(int(s[1]))

    def _load_init_weights(self, path: Path) -> None:
        ckpt = Checkpoint.load(path)
        # Prompt ids are indices into the label space: the names and their order must match (the
        # sources may differ, e.g. a new dataset that annotates an existing structure).
        names = ckpt.label_space.names
        if names != self.label_space.names:
            raise CheckpointError(
                f"{path}: its prompts ({', '.join(names)}) differ from this config's label space "
                f"({', '.join(self.label_space.names)}); the weights cannot be reused"
            )
        try:
            self.model.load_state_dict(ckpt.weights)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: weights do not fit this model config: {exc}") from exc
        if self.ema is not None:
            self.ema = ModelEMA(self.model, self.method.ema_decay)

    def _load_resume_state(self, path: Path) -> None:
        ckpt = Checkpoint.load(path)
        state = ckpt.require_training()
        if state.method != self.method_name or state.stage != self.stage:
            raise CheckpointError(
                f"{path}: was written by method {state.method!r} stage {state.stage}, not "
                f"{self.method_name!r} stage {self.stage}"
            )
        self.model.load_state_dict(ckpt.weights)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.schedule)
        if state.scaler:
            self.scaler.load_state_dict(state.scaler)
        if self.ema is not None:
            if not state.ema:
                raise CheckpointError(f"{path}: has no EMA teacher state but the method needs one")
            self.ema.load_state_dict(state.ema)
        self.step = state.step
        self.best_metric = state.best_metric
        self.best_step = state.best_step
        self.stale_validations = state.stale_validations
        self.postprocessing = dict(ckpt.postprocessing or self.postprocessing)
        self.resumed_from = self.step
        if self.dist.is_main:
            restore_rng_state(state.rng, {"cutmix": self.generator})

    def to_checkpoint(self) -> Checkpoint:
        """Everything needed to predict and to resume (``torch.load(weights_only=True)`` safe)."""
        return Checkpoint(
            model_config=self.model.config,
            label_space=self.label_space,
            plans=self.plans,
            weights={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            postprocessing=dict(self.postprocessing),
            training=TrainingState(
                config=self.config.to_dict(),
                options=dict(self.options),
                method=self.method_name,
                stage=self.stage,
                step=self.step,
                max_steps=self.max_steps,
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else {},
                ema=self.ema.state_dict() if self.ema is not None else {},
                schedule=self.scheduler.state_dict(),
                rng=capture_rng_state({"cutmix": self.generator}),
                best_metric=self.best_metric,
                best_step=self.best_step,
                stale_validations=self.stale_validations,
            ),
        )

    def save(self, name: str) -> Path | None:
        if not self.dist.is_main:
            return None
        return self.to_checkpoint().save(self.folder / name)

    # --- data ---------------------------------------------------------------------------------------
    def _batches(self) -> Callable[[], list[TrainingBatch]]:
        from versemi.data.augmentation import make_training_augmentation, slice_axis

        transforms = {
            source: make_training_augmentation(
                self.options["augmentation"], slice_axis(self.plans.plan_for(source).target_spacing)
            )
            for source in self.plans.sources
        }
        stream = build_step_stream(
            self.cases, self.config, self.plans, self.options, self.dist.rank, self.stage, self.step,
            self.method.uses_unlabeled, self.method.uses_donors, transforms,
        )
        steps = make_step_loader(stream, int(self.options["num_workers"]), self.device.type == "cuda")

        def to_batch(group: dict[str, Any]) -> TrainingBatch:
            device = self.device
            images = group["image"].to(device, non_blocking=True)
            datasets = [group["dataset"]] * images.shape[0]
            annotation = prompt_targets(group["label"].to(device, non_blocking=True), datasets, self.label_space)
            donor_images = donor_annotation = None
            if group["donor_image"] is not None:
                donor_images = group["donor_image"].to(device, non_blocking=True)
                donor_annotation = prompt_targets(
                    group["donor_label"].to(device, non_blocking=True), group["donor_dataset"], self.label_space
                )
            unlabeled = group["unlabeled"].to(device, non_blocking=True) if group["unlabeled"] is not None else None
            return TrainingBatch(images, annotation, datasets, unlabeled, donor_images, donor_annotation,
                                 group["donor_dataset"])

        def next_batches() -> list[TrainingBatch]:
            return [to_batch(g) for g in next(steps)]

        return next_batches

    # --- loop ---------------------------------------------------------------------------------------
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
                        f"another rank ({losses.terms}); lower training.lr or use amp: none"
                    )
                self.scaler.scale(losses.total / len(batches)).backward()
            totals.append(float(losses.total.detach()))
            for k, v in losses.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
        clip = float(self.options["grad_clip"])
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
                overlap=float(self.options["validation_overlap"]),
                sw_batch_size=int(self.options["validation_sw_batch_size"]),
                nsd_tolerance_mm=float(self.options["nsd_tolerance_mm"]),
                autocast_dtype=inference_autocast_dtype(self.device),  # exactly as predict will
            )
            metric = result["mean_dice"]
            if self.options["postprocessing"] == "auto":
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

    def fit(self) -> StageResult:
        """Train until ``max_steps`` (or early stopping); returns where the stage ended."""
        opts = self.options
        start = time.perf_counter()
        if self.step >= self.max_steps:  # resumed a finished stage: nothing to do, the logs stay as they are
            self.log.close()
            return self._result(False, 0.0, time.perf_counter() - start)
        self.log.event(
            {
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
            }
        )
        stopped_early = False
        wait_total = step_total = 0.0
        wait_window = step_window = 0.0
        steps_in_window = 0
        next_batch: Callable[[], list[TrainingBatch]] | None = self._batches()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=self.max_steps,
                initial=self.step,
                desc=f"{self.method_name}" + (f" stage {self.stage}" if self.method_name == "versemi" else ""),
                unit="step",
                dynamic_ncols=True,
            )
        try:
            while self.step < self.max_steps:
                t0 = time.perf_counter()
                assert next_batch is not None
                batch = next_batch()
                t1 = time.perf_counter()
                terms = self.train_step(batch)
                t2 = time.perf_counter()
                wait_window += t1 - t0
                step_window += t2 - t0
                steps_in_window += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['total']:.4f}", refresh=False)
                if self.step % int(opts["log_every"]) == 0 or self.step == self.max_steps:
                    terms = dist_utils.mean_across_ranks(self.dist, terms, self.device)
                    wait_fraction = wait_window / step_window if step_window > 0 else 0.0
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.log.event(
                        {
                            "event": "train",
                            "step": self.step,
                            "losses": terms,
                            "lr": lr,
                            "data_wait_fraction": wait_fraction,
                            "seconds_per_step": step_window / max(1, steps_in_window),
                        }
                    )
                    self.log.scalars("train", {**terms, "lr": lr, "data_wait_fraction": wait_fraction}, self.step)
                    wait_total += wait_window
                    step_total += step_window
                    wait_window = step_window = 0.0
                    steps_in_window = 0
                if self.step % int(opts["validate_every"]) == 0 or self.step == self.max_steps:
                    self.run_validation()
                    patience = int(opts["early_stopping_patience"])
                    stop = patience > 0 and self.stale_validations >= patience
                    stopped_early = dist_utils.broadcast_flag(self.dist, stop, self.device)
                if self.step % int(opts["checkpoint_every"]) == 0 or self.step == self.max_steps or stopped_early:
                    self.save("last.pt")
                if stopped_early:
                    break
        finally:
            if bar is not None:
                bar.close()
            next_batch = None  # drops the DataLoader iterators: their worker processes exit
        wait_total += wait_window
        step_total += step_window
        fraction = wait_total / step_total if step_total > 0 else 0.0
        result = self._result(stopped_early, fraction, time.perf_counter() - start)
        # DDP sanity record: every rank must end with the same weights.
        digest = weights_digest(self.model.state_dict())
        if self.ema is not None:
            digest += "/ema:" + weights_digest(self.ema.module.state_dict())
        rank_digests = dist_utils.gather_strings(self.dist, digest)
        self.log.event(
            {
                "event": "end",
                "rank_weights_sha256": rank_digests,
                "step": self.step,
                "stopped_early": stopped_early,
                "best_metric": self.best_metric,
                "best_step": self.best_step,
                "data_wait_fraction": fraction,
                "seconds": result.seconds,
            }
        )
        self.log.close()
        dist_utils.barrier(self.dist)
        return result

    def _result(self, stopped_early: bool, wait_fraction: float, seconds: float) -> StageResult:
        return StageResult(
            self.folder, self.step, self.max_steps, self.best_metric, self.best_step, stopped_early, wait_fraction, seconds
        )


def run_plans(
    config: TrainConfig, resume_checkpoint: Path | None = None, init_checkpoint: Path | None = None
) -> Plans:
    """The plans of a run.

    A resumed stage keeps the plans of its ``last.pt``. A run that starts from another checkpoint
    (stage 2 after stage 1, ``--resume-from``) keeps that checkpoint's dataset plans when it was
    trained on the same datasets (fine-tuning must not change the grids its weights learned), with
    this config's extra folders mapped as usual. Otherwise the plans come from the config's datasets'
    fingerprints (:func:`versemi.data.plans.plans_for_config`).

    Raises:
        CheckpointError: an unreadable checkpoint, or one without plans.
        PlansError: the config's datasets cannot be planned.
    """
    for path, keep_always in ((resume_checkpoint, True), (init_checkpoint, False)):
        if path is None:
            continue
        stored = Checkpoint.load(path).plans
        if keep_always:
            return stored
        if list(stored.datasets) == [d.name for d in config.datasets]:
            aliases = {source: config.plan_source(source) for source in config.extra_sources()}
            return Plans(stored.datasets, aliases, stored.size_divisor, stored.patch_voxels)
    return plans_for_config(config)


def write_plans(plans: Plans, output_dir: Path) -> Path:
    """``<output_dir>/plans.json``: the run's plans, for people and tools (checkpoints carry them too)."""
    return atomic_write_json(Path(output_dir) / "plans.json", plans.to_dict())


def run_training(
    config: TrainConfig,
    options: dict[str, Any],
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
    first_init = Path(options["init_checkpoint"]).expanduser() if options.get("init_checkpoint") else None
    if options["method"] == "versemi":
        available = versemi_stages(options)
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
        if options["method"] == "versemi" and stage == 2 and init is None and 1 in versemi_stages(options):
            init = final_checkpoint(stage_folder(output_dir, "versemi", 1))
            if init is None:
                raise CheckpointError(
                    f"{stage_folder(output_dir, 'versemi', 1)}: no stage-1 checkpoint (best.pt or last.pt) "
                    "to start stage 2 from; run --stage 1 first or set training.init_checkpoint"
                )
        if plans is None:
            resume_file = stage_folder(output_dir, options["method"], stage) / "last.pt"
            plans = run_plans(config, resume_file if resume and resume_file.is_file() else None, init)
            if dist.is_main:
                write_plans(plans, output_dir)
        trainer = Trainer(config, options, stage, output_dir, device, dist, init, resume, None, progress, plans)
        results.append(trainer.fit())
    return results
