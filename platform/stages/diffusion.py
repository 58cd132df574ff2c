"""Diffusion stage (paper 3.2): the mask-conditioned wavelet (or pixel-baseline) diffusion model,
trained on the seed's slices with their masks and 2.5D neighbours."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.configs import DiffusionConfig
from salient.models.diffusion import ConditionalDiffusion, DiffusionBatch, DiffusionTrainer
from salient.platform.stages import DIFFUSION
from salient.platform.stages.base import (
    LOSS_HISTORY,
    Checkpoints,
    Output,
    Stage,
    StageRun,
    loss_curve,
    on_cpu,
    stage_device,
)
from salient.platform.stages.slices import SliceSet

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "diffusion_training_config", "train_diffusion"]


def diffusion_training_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """What a diffusion model's training depends on: everything but guidance, which only affects
    sampling (generators that differ only in guidance share one training)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "guidance"}


def train_diffusion(
    cfg: DiffusionConfig,
    data: SliceSet,
    seed: int,
    checkpoints: Checkpoints | None = None,
    device: torch.device | None = None,
) -> Output:
    """Train on (image, mask, neighbours) slices (on ``device``, default the CPU); output
    ``{"ema": state_dict}`` on the CPU."""
    torch.manual_seed(seed)  # weight init: never depend on what ran before in this process
    model = ConditionalDiffusion(cfg)
    batch = DiffusionBatch(data.image, data.mask, data.neighbours)
    trainer = DiffusionTrainer(model, batch, seed=seed, device=device or torch.device("cpu"))
    losses = trainer.train(on_step=checkpoints.attach(trainer, cfg.train_steps) if checkpoints else None)
    first = float(np.mean(losses[: max(1, len(losses) // 10)])) if losses else None
    last = float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else None
    return {"ema": on_cpu(trainer.ema.module.state_dict())}, {
        "n_slices": len(data),
        "loss_first": first,
        "loss_last": last,
        LOSS_HISTORY: loss_curve(losses),
    }


def _run(run: StageRun) -> Output:
    return train_diffusion(run.plan.stages.diffusion, run.data.seed, run.seed, run.checkpoints, stage_device())


def _config(plan: TrialPlan) -> Any:
    return diffusion_training_config(plan.stages.diffusion)


STAGE = Stage(
    name=DIFFUSION,
    config=_config,
    data=lambda plan: {"data": plan.split.seed_positive},
    run=_run,
    active=lambda plan: plan.uses_generator,
)
