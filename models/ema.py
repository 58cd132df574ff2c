"""Exponential moving average of a model's weights (used by diffusion, MaskVAE3D and UCMT)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights``; buffers are copied as they are.

    Args:
        model: the model to track; a frozen copy is made.
        decay: in [0, 1); 0 copies the weights every update.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.module.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1.0 - self.decay)
        for sb, b in zip(self.module.buffers(), model.buffers(), strict=True):
            sb.copy_(b)
