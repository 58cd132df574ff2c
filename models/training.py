"""Checkpointing shared by the trainers (diffusion, MaskVAE3D, UCMT, detector)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ResumableTrainer"]


class ResumableTrainer:
    """``state_dict``/``load_state_dict`` over everything a trainer needs to continue exactly.

    A subclass names its modules in :meth:`_checkpoint_modules` (e.g. ``{"model": ..., "ema":
    ...}``) and its progress counter in ``_progress`` (``"step"`` or ``"epoch"``); the optimizer,
    learning-rate scheduler and the seeded generator that draws batches and noise are saved too.
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    _progress: str

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: m.state_dict() for name, m in self._checkpoint_modules().items()}
        state.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            generator=self.generator.get_state(),
        )
        state[self._progress] = getattr(self, self._progress)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self._checkpoint_modules().items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        setattr(self, self._progress, int(state[self._progress]))
