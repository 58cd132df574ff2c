"""Detector stage (paper 3.5): the mask-guided ResNet slice detector at one synthetic dose.

Its training slices are the labeled seed and training negatives plus the first ``n_synthetic``
pairs of the generator's pool (doses are nested subsets of one pool).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from salient.models.configs import DetectorConfig
from salient.models.detector import DetectorTrainer
from salient.platform.stages import DETECTOR, POOL
from salient.platform.stages.base import Checkpoints, Output, Stage, StageRun
from salient.platform.stages.slices import SliceSet

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "detector_input", "train_detector", "trial_pool"]


def detector_input(cfg: DetectorConfig, s: SliceSet) -> torch.Tensor:
    """The detector's view of slices: the slice alone or its (z-1, z, z+1) triplet."""
    return s.triplet if cfg.input_mode == "triplet" else s.image


def trial_pool(plan: TrialPlan, pool: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """The synthetic pairs a trial trains on: the first ``n_synthetic`` of its generator's pool
    (fewer if the pool fell short because the MaskVAE3D drew empty masks)."""
    return None if pool is None else {k: v[: plan.n_synthetic] for k, v in pool.items()}


def train_detector(
    cfg: DetectorConfig,
    real: SliceSet,
    synthetic: Mapping[str, torch.Tensor] | None,
    seed: int,
    checkpoints: Checkpoints | None = None,
) -> Output:
    """Train on real slices (label = has a lesion) plus synthetic positives with their UCMT
    pseudo-labels; output ``{"model": state_dict}``."""
    x, y, m = detector_input(cfg, real), real.has_lesion.float(), real.mask
    n_syn = 0
    if synthetic is not None and len(synthetic["image"]):
        xs = synthetic["triplet"] if cfg.input_mode == "triplet" else synthetic["image"]
        n_syn = len(xs)
        x, y, m = torch.cat([x, xs]), torch.cat([y, torch.ones(n_syn)]), torch.cat([m, synthetic["pseudo_mask"]])
    trainer = DetectorTrainer(cfg, x, y, m, seed=seed)
    history = trainer.train(on_epoch=checkpoints.attach(trainer, cfg.epochs) if checkpoints else None)
    return {"model": trainer.model.state_dict()}, {"n_slices": len(x), "n_synthetic": n_syn, "loss": history}


def _run(run: StageRun) -> Output:
    pool = trial_pool(run.plan, run.inputs.get(POOL))
    return train_detector(run.plan.stages.detector, run.data.labeled, pool, run.seed, run.checkpoints)


def _config(plan: TrialPlan) -> Any:
    return dataclasses.asdict(plan.stages.detector)


STAGE = Stage(
    name=DETECTOR,
    config=_config,
    data=lambda plan: {"data": plan.split.labeled, "n_synthetic": plan.n_synthetic},
    run=_run,
    inputs=(POOL,),
)
