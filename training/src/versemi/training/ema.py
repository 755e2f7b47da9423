"""Exponential moving average (EMA) of a model's weights: the mean-teacher / VerSemi teacher."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of a model whose weights follow ``ema = d * ema + (1 - d) * weights``.

    As in Mean Teacher (Tarvainen & Valpola, 2017) the decay is ``min(decay, (1 + n) / (10 + n))``
    after ``n`` updates, so the teacher tracks the student closely at the start. Buffers (e.g. norm
    statistics) are copied, not averaged.

    Args:
        model: The student (unwrapped, not the DDP wrapper).
        decay: Final decay (0.99 in UA-MT / mean-teacher set-ups).
    """

    def __init__(self, model: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
