"""A trainer's checkpoints: what ``last.pt``/``best.pt`` save and what a resume restores, side by side.

Save and restore live together because they must change together: a state saved but not restored
(or the reverse) breaks an exact resume. Also here: where a stage's files go and which plans a run
uses (every checkpoint carries them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from versemi.checkpoint import Checkpoint, CheckpointError, TrainingState
from versemi.data.config import TrainConfig
from versemi.data.plans import Plans, plans_for_config
from versemi.fileio import atomic_write_json
from versemi.training.ema import ModelEMA
from versemi.training.state import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from versemi.training.trainer import Trainer


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


def trainer_checkpoint(trainer: Trainer) -> Checkpoint:
    """Everything needed to predict and to resume (``torch.load(weights_only=True)`` safe)."""
    return Checkpoint(
        model_config=trainer.model.config,
        label_space=trainer.label_space,
        plans=trainer.plans,
        weights={k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        postprocessing=dict(trainer.postprocessing),
        training=TrainingState(
            config=trainer.config.to_dict(),
            options=trainer.options.to_dict(),
            method=trainer.method_name,
            stage=trainer.stage,
            step=trainer.step,
            max_steps=trainer.max_steps,
            optimizer=trainer.optimizer.state_dict(),
            scaler=trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
            ema=trainer.ema.state_dict() if trainer.ema is not None else {},
            schedule=trainer.scheduler.state_dict(),
            rng=capture_rng_state({"cutmix": trainer.generator}),
            best_metric=trainer.best_metric,
            best_step=trainer.best_step,
            stale_validations=trainer.stale_validations,
        ),
    )


def restore_training_state(trainer: Trainer, path: Path) -> None:
    """Resume ``trainer`` from the ``last.pt`` at ``path``: the inverse of :func:`trainer_checkpoint`.

    Raises:
        CheckpointError: the checkpoint is of another method or stage, or lacks a state the run needs.
    """
    ckpt = Checkpoint.load(path)
    state = ckpt.require_training()
    if state.method != trainer.method_name or state.stage != trainer.stage:
        raise CheckpointError(
            f"{path}: was written by method {state.method!r} stage {state.stage}, not "
            f"{trainer.method_name!r} stage {trainer.stage}"
        )
    trainer.model.load_state_dict(ckpt.weights)
    trainer.optimizer.load_state_dict(state.optimizer)
    trainer.scheduler.load_state_dict(state.schedule)
    if state.scaler:
        trainer.scaler.load_state_dict(state.scaler)
    if trainer.ema is not None:
        if not state.ema:
            raise CheckpointError(f"{path}: has no EMA teacher state but the method needs one")
        trainer.ema.load_state_dict(state.ema)
    trainer.step = state.step
    trainer.best_metric = state.best_metric
    trainer.best_step = state.best_step
    trainer.stale_validations = state.stale_validations
    trainer.postprocessing = dict(ckpt.postprocessing or trainer.postprocessing)
    trainer.resumed_from = trainer.step
    if trainer.dist.is_main:
        restore_rng_state(state.rng, {"cutmix": trainer.generator})


def load_init_weights(trainer: Trainer, path: Path) -> None:
    """Start ``trainer`` from the weights at ``path`` (optimizer and step start fresh).

    Raises:
        CheckpointError: the checkpoint's prompts differ from the label space, or its weights do not fit.
    """
    ckpt = Checkpoint.load(path)
    # Prompt ids are indices into the label space: the names and their order must match (the
    # sources may differ, e.g. a new dataset that annotates an existing structure).
    names = ckpt.label_space.names
    if names != trainer.label_space.names:
        raise CheckpointError(
            f"{path}: its prompts ({', '.join(names)}) differ from this config's label space "
            f"({', '.join(trainer.label_space.names)}); the weights cannot be reused"
        )
    try:
        trainer.model.load_state_dict(ckpt.weights)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: weights do not fit this model config: {exc}") from exc
    if trainer.ema is not None:
        trainer.ema = ModelEMA(trainer.model, trainer.method.ema_decay)
    trainer.init_checkpoint = Path(path)
