"""UCMT stage (paper 3.4): the semi-supervised segmentation teacher that labels synthetic slices.

Labeled: the seed's lesion slices plus as many lesion-free seed slices (so empty masks are learned
too). Unlabeled: slices of the unlabeled training positives and the training negatives, never
test slices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.configs import UCMTConfig
from salient.models.ucmt import UCMTTrainer
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.stages import UCMT
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
from salient.platform.stages.slices import SliceSet

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "train_ucmt", "ucmt_labeled_slices", "ucmt_unlabeled_slices"]

#: Unlabeled slices drawn per seed lesion slice (at least UNLABELED_MIN in all).
UNLABELED_PER_LESION_SLICE, UNLABELED_MIN = 8, 128


def ucmt_labeled_slices(seed_set: SliceSet, seed: int) -> SliceSet:
    """Lesion slices of the seed plus as many lesion-free slices (so empty masks are learned too)."""
    lesion = torch.nonzero(seed_set.has_lesion).flatten()
    clear = torch.nonzero(~seed_set.has_lesion).flatten()
    g = torch.Generator().manual_seed(seed)
    chosen = torch.cat([lesion, clear[torch.randperm(len(clear), generator=g)[: max(len(lesion), 1)]]])
    return seed_set.select(chosen)


def ucmt_unlabeled_slices(
    subjects: Mapping[str, PreprocessedSubject], ids: Sequence[str], seed: int, cap: int
) -> torch.Tensor:
    """At most ``cap`` slices of the given subjects, drawn without replacement: UCMT's unlabeled set."""
    if ids:
        images = np.concatenate([subjects[s].image for s in ids])[:, None]
    else:
        images = np.zeros((0, 1, *next(iter(subjects.values())).image.shape[1:]), np.float32)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(images[rng.permutation(len(images))[:cap]]).float()


def unlabeled_cap(n_lesion_slices: int) -> int:
    return UNLABELED_PER_LESION_SLICE * max(n_lesion_slices, UNLABELED_MIN // UNLABELED_PER_LESION_SLICE)


def train_ucmt(
    cfg: UCMTConfig,
    labeled: SliceSet,
    unlabeled: torch.Tensor,
    seed: int,
    checkpoints: Checkpoints | None = None,
    device: torch.device | None = None,
) -> Output:
    """Train the students and EMA teacher (on ``device``, default the CPU); output
    ``{"teacher": state_dict}`` on the CPU."""
    trainer = UCMTTrainer(cfg, (labeled.image, labeled.mask), unlabeled, seed=seed, device=device or "cpu")
    losses = trainer.train(on_step=checkpoints.attach(trainer, cfg.train_steps) if checkpoints else None)
    return {"teacher": on_cpu(trainer.teacher.module.state_dict())}, {
        "n_labeled": len(labeled),
        "n_unlabeled": int(unlabeled.shape[0]),
        "final_loss": losses[-1] if losses else None,
        LOSS_HISTORY: loss_curve(losses),
    }


def _run(run: StageRun) -> Output:
    plan, study_seed, repeat = run.plan, run.plan.study.seed, run.plan.repeat
    unlabeled = ucmt_unlabeled_slices(
        run.cohort.subjects,
        plan.split.unlabeled + plan.split.train_negative,
        derive_seed(study_seed, repeat, "ucmt-unlabeled"),
        unlabeled_cap(plan.n_real_positive),
    )
    labeled = ucmt_labeled_slices(run.data.seed, derive_seed(study_seed, repeat, "ucmt-labeled"))
    return train_ucmt(plan.stages.ucmt, labeled, unlabeled, run.seed, run.checkpoints, stage_device())


def _config(plan: TrialPlan) -> Any:
    return dataclasses.asdict(plan.stages.ucmt)


STAGE = Stage(
    name=UCMT,
    config=_config,
    data=lambda plan: {"data": (plan.split.seed_positive, plan.split.unlabeled, plan.split.train_negative)},
    run=_run,
    active=lambda plan: plan.uses_generator,
)
