"""Learning-rate schedules and the consistency-weight ramp-up."""

from __future__ import annotations

import math

import torch

from versemi.enums import StrEnum


class LRSchedule(StrEnum):
    """``training.lr_schedule``: nnU-Net's polynomial decay, cosine, or constant (all after any warm-up)."""

    POLY = "poly"
    COSINE = "cosine"
    CONSTANT = "constant"


LR_SCHEDULES = tuple(str(s) for s in LRSchedule)


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = step / length`` clipped to [0, 1] (Laine & Aila, 2017); 1 if ``length <= 0``."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


class _LrFactor:
    """Picklable-free LR factor (a plain object, so LambdaLR's state dict stays weights-only safe)."""

    def __init__(
        self, schedule: str, max_steps: int, warmup_steps: int, poly_exponent: float, start_step: int = 0
    ) -> None:
        self.schedule = LRSchedule(schedule).value  # a plain str: the state dict stays weights-only safe
        self.max_steps = max(1, int(max_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.poly_exponent = float(poly_exponent)
        self.start_step = max(0, int(start_step))

    def __call__(self, step: int) -> float:
        step += self.start_step
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min(1.0, max(0, step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        if self.schedule == "poly":  # nnU-Net's polynomial decay
            return (1.0 - t) ** self.poly_exponent
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    max_steps: int,
    warmup_steps: int = 0,
    poly_exponent: float = 0.9,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LR scheduler: ``poly`` (nnU-Net, exponent 0.9), ``cosine`` or ``constant``, with linear warm-up.

    ``max_steps`` is the length of the whole schedule; ``start_step`` starts it part-way (a second
    stage that continues the first stage's schedule instead of restarting it).

    Raises:
        ValueError: unknown schedule name.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _LrFactor(schedule, max_steps, warmup_steps, poly_exponent, start_step)
    )
