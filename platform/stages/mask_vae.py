"""MaskVAE3D stage (paper 3.3): a generative model of the seed's lesion-mask volumes."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.configs import MaskVAEConfig
from salient.models.mask_vae import MaskVAE3D, MaskVAETrainer, mask_to_volume
from salient.platform.stages import MASK_VAE
from salient.platform.stages.base import LOSS_HISTORY, Checkpoints, Output, Stage, StageRun, loss_curve

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "train_mask_vae"]


def train_mask_vae(
    cfg: MaskVAEConfig, masks: list[np.ndarray], seed: int, checkpoints: Checkpoints | None = None
) -> Output:
    """Train on the seed subjects' (Z, H, W) lesion masks; output ``{"ema": state_dict}``."""
    vols = [v for v in (mask_to_volume(m, cfg.volume_size) for m in masks) if v is not None]
    if not vols:
        raise ValueError("MaskVAE3D needs at least one seed subject with a non-empty mask")
    torch.manual_seed(seed)  # weight init: never depend on what ran before in this process
    trainer = MaskVAETrainer(MaskVAE3D(cfg), torch.from_numpy(np.stack(vols)), seed=seed)
    losses = trainer.train(on_epoch=checkpoints.attach(trainer, cfg.epochs) if checkpoints else None)
    return {"ema": trainer.ema.module.state_dict()}, {
        "n_volumes": len(vols),
        "final_loss": losses[-1] if losses else None,
        LOSS_HISTORY: loss_curve(losses),
    }


def _run(run: StageRun) -> Output:
    subjects = run.cohort.subjects
    return train_mask_vae(
        run.plan.stages.mask_vae, [subjects[s].mask for s in run.plan.split.seed_positive], run.seed, run.checkpoints
    )


def _config(plan: TrialPlan) -> Any:
    return dataclasses.asdict(plan.stages.mask_vae)


STAGE = Stage(
    name=MASK_VAE,
    config=_config,
    data=lambda plan: {"data": plan.split.seed_positive},
    run=_run,
    active=lambda plan: plan.uses_generator,
)
