"""Detector stage (paper 3.5): the mask-guided ResNet slice detector at one dose of one arm.

Its training slices are the labeled seed and training negatives plus ``n_synthetic`` added
positive slices, which depend on the trial's arm:

* ``synthetic`` - the first ``n_synthetic`` pairs of the generator's pool (doses are nested
  subsets of one pool), each with its UCMT pseudo-label;
* ``shuffled`` (negative control) - the same pairs with their pseudo-labels permuted among
  them (a derangement, seeded): the same images, masks that no longer belong to them;
* ``real`` (positive control) - real lesion slices of training positives outside the seed, with
  their real masks, drawn in a seeded order.

With the default ``matched`` schedule every dose takes the same optimiser steps and sees the same
negatives (see :class:`~salient.models.configs.DetectorConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from salient.models.configs import DetectorConfig
from salient.models.detector import DetectorTrainer
from salient.platform.stages import DETECTOR, POOL
from salient.platform.stages.base import (
    LOSS_HISTORY,
    Checkpoints,
    Output,
    Stage,
    StageRun,
    derive_seed,
    loss_curve,
    on_cpu,
    stage_device,
)
from salient.platform.stages.slices import SliceSet, slice_set
from salient.platform.study.schema import REAL_ARM, SHUFFLED_ARM

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "added_positives", "derangement", "detector_input", "train_detector"]


def detector_input(cfg: DetectorConfig, s: SliceSet) -> torch.Tensor:
    """The detector's view of slices: the slice alone or its (z-1, z, z+1) triplet."""
    return s.triplet if cfg.input_mode == "triplet" else s.image


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``range(n)`` that moves every element (n >= 2), uniformly among such."""
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2, got {n}")
    while True:  # rejection: about e tries on average
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def added_positives(run: StageRun) -> dict[str, torch.Tensor] | None:
    """The positive slices the trial's arm adds: ``image``, ``triplet``, ``mask`` and ``block``
    (the lesion block each synthetic slice came from; -1 for real slices), or None at dose 0."""
    plan = run.plan
    n = plan.n_synthetic
    if n == 0:
        return None
    if plan.arm == REAL_ARM:
        extra = slice_set(run.cohort.subjects, plan.extra_real, plan.stages.diffusion.neighbour_offsets)
        lesion = torch.nonzero(extra.has_lesion).flatten()
        order = torch.randperm(len(lesion), generator=torch.Generator().manual_seed(run.seed))
        chosen = extra.select(lesion[order][:n])
        return {
            "image": chosen.image,
            "triplet": chosen.triplet,
            "mask": chosen.mask,
            "block": -torch.ones(len(chosen)),
        }
    pool = run.inputs[POOL]
    added = {"image": pool["image"][:n], "triplet": pool["triplet"][:n], "mask": pool["pseudo_mask"][:n]}
    added["block"] = pool["block"][:n] if "block" in pool else torch.full((len(added["image"]),), -1)
    if plan.arm == SHUFFLED_ARM and len(added["mask"]) >= 2:
        perm = derangement(len(added["mask"]), torch.Generator().manual_seed(derive_seed(run.seed, "shuffle")))
        added["mask"] = added["mask"][perm]
    return added


def train_detector(
    cfg: DetectorConfig,
    real: SliceSet,
    added: Mapping[str, torch.Tensor] | None,
    seed: int,
    checkpoints: Checkpoints | None = None,
) -> Output:
    """Train on the real slices (label = has a lesion) plus the added positives with their masks;
    output ``{"model": state_dict}``, meta with the steps and the slices seen by kind."""
    x, y, m = detector_input(cfg, real), real.has_lesion.float(), real.mask
    n_added = 0
    if added is not None and len(added["image"]):
        xs = added["triplet"] if cfg.input_mode == "triplet" else added["image"]
        n_added = len(xs)
        x, y, m = torch.cat([x, xs]), torch.cat([y, torch.ones(n_added)]), torch.cat([m, added["mask"]])
    is_added = torch.cat([torch.zeros(len(real), dtype=torch.bool), torch.ones(n_added, dtype=torch.bool)])
    trainer = DetectorTrainer(cfg, x, y, m, seed=seed, synthetic=is_added, device=stage_device())
    history = trainer.train(on_epoch=checkpoints.attach(trainer, trainer.total) if checkpoints else None)
    n_neg = int((y <= 0.5).sum())
    return {"model": on_cpu(trainer.model.state_dict())}, {
        "n_slices": len(x),
        "n_added": n_added,
        "n_added_blocks": len({int(b) for b in added["block"].tolist() if b >= 0}) if added is not None else 0,
        "steps": trainer.step,
        "seed_positive_seen": trainer.seen["real_positive"],
        "added_positive_seen": trainer.seen["synthetic_positive"],
        "negative_seen": trainer.seen["negative"],
        "negative_available": n_neg,
        LOSS_HISTORY: loss_curve(history),
    }


def _run(run: StageRun) -> Output:
    return train_detector(run.plan.stages.detector, run.data.labeled, added_positives(run), run.seed, run.checkpoints)


def _config(plan: TrialPlan) -> Any:
    return dataclasses.asdict(plan.stages.detector)


def _data(plan: TrialPlan) -> dict[str, Any]:
    data: dict[str, Any] = {"data": plan.split.labeled, "n_synthetic": plan.n_synthetic, "arm": plan.arm}
    if plan.arm == REAL_ARM and plan.n_synthetic:
        data["extra_real"] = plan.extra_real
    return data


STAGE = Stage(name=DETECTOR, config=_config, data=_data, run=_run, inputs=(POOL,))
