"""Aggregator stage (paper 3.5, 4.1): the EViT subject aggregator over the frozen detector's
slice embeddings, and the subject scores of every validation and test subject.

The aggregator must learn from features like those it will score: embeddings of subjects the
detector did *not* train on (a detector's own training subjects look cleaner than new ones). So it
is fit on the validation subjects, by K-fold cross-fitting (stratified folds, seeded): each fold's
model is fit on the other folds and scores its own fold, so every validation score comes from a
model that never saw that subject (the selection on validation stays honest), and a test subject's
score is the mean of the K models' probabilities. The folds hold the same subjects at every dose,
so every dose's aggregator takes the same optimiser steps.

Also records, from the same forward passes, each subject's maximum slice probability (a score
that needs no aggregator) and the saliency overlap (share of the detector's deep attention inside
the lesion on test lesion slices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.aggregator import AggregatorTrainer, pad_sequences
from salient.models.configs import AggregatorConfig, DetectorConfig
from salient.models.detector import MaskGuidedResNet
from salient.models.metrics import attention_overlap
from salient.platform.stages import AGGREGATOR, DETECTOR
from salient.platform.stages.base import LOSS_HISTORY, Output, Stage, StageRun, loss_curve, stage_device
from salient.platform.stages.detector import detector_input
from salient.platform.stages.slices import SliceSet

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "stratified_folds", "subject_embeddings", "train_aggregator"]

SALIENCY_SLICES = 128  # test lesion slices the saliency overlap is measured on


def subject_embeddings(
    det: MaskGuidedResNet, cfg: DetectorConfig, data: SliceSet, ids: tuple[str, ...]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per subject: its slice embeddings (n_slices, F) in slice order, and its max slice probability."""
    emb = det.embed(detector_input(cfg, data))
    with torch.no_grad():  # the slice head on the same embeddings: no second pass over the slices
        prob = torch.sigmoid(det.fc(emb.to(det.fc.weight.device)).squeeze(1)).cpu()
    subj = np.asarray(data.subject)
    seqs = [emb[torch.from_numpy(subj == sid)] for sid in ids]
    max_slice = torch.stack([prob[torch.from_numpy(subj == sid)].max() for sid in ids])
    return seqs, max_slice


def stratified_folds(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Fold index (0..k-1) per subject, each label spread evenly over the folds (seeded)."""
    fold = torch.empty(len(labels), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for value in (0, 1):
        members = torch.nonzero(labels == value).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        fold[members] = torch.arange(len(members)) % k
    return fold


def train_aggregator(
    cfg: AggregatorConfig,
    det_cfg: DetectorConfig,
    det_state: Mapping[str, torch.Tensor],
    validation: SliceSet,
    validation_ids: tuple[str, ...],
    validation_labels: torch.Tensor,
    test: SliceSet,
    test_ids: tuple[str, ...],
    folds: int,
    seed: int,
) -> Output:
    """Cross-fit the aggregator on the validation subjects (see the module docstring).

    Output: ``{"validation": {"scores", "max_slice"}, "test": {"scores", "max_slice"}}``, one value
    per subject in ``validation_ids`` / ``test_ids`` order."""
    det = MaskGuidedResNet(det_cfg)
    det.load_state_dict(det_state)
    det = det.to(stage_device()).eval()  # embeddings come back on the CPU, where the aggregator trains
    labels = validation_labels.long()
    k = min(folds, int((labels == 1).sum()), int((labels == 0).sum()))
    if k < 2:
        raise ValueError(
            f"cross-fitting needs >= 2 validation positives and negatives, got {int((labels == 1).sum())} and "
            f"{int((labels == 0).sum())}; raise evaluation.validation_fraction"
        )
    val_seqs, val_max = subject_embeddings(det, det_cfg, validation, validation_ids)
    test_seqs, test_max = subject_embeddings(det, det_cfg, test, test_ids)
    xv, padv = pad_sequences(val_seqs, cfg.max_len)
    xt, padt = pad_sequences(test_seqs, cfg.max_len)
    fold = stratified_folds(labels, k, seed)
    val_scores, test_scores = torch.empty(len(labels)), torch.zeros(len(test_ids))
    history, steps = [], 0
    for f in range(k):
        fit, held = fold != f, fold == f
        trainer = AggregatorTrainer(cfg, xv[fit], padv[fit], validation_labels[fit], seed=seed + f)
        history.append(trainer.train())
        steps += trainer.steps
        val_scores[held] = trainer.predict(xv[held], padv[held])
        test_scores += trainer.predict(xt, padt) / k
    lesion = test.has_lesion
    overlap = float("nan")
    if lesion.any():
        with torch.no_grad():
            _, att = det(detector_input(det_cfg, test)[lesion][:SALIENCY_SLICES].to(det.fc.weight.device))
        overlap = float(np.mean(attention_overlap(att[-1].cpu(), test.mask[lesion][:SALIENCY_SLICES])))
    outputs = {
        "validation": {"scores": val_scores, "max_slice": val_max},
        "test": {"scores": test_scores, "max_slice": test_max},
    }
    # the folds' curves, averaged epoch by epoch
    curve = loss_curve([float(np.mean(epoch)) for epoch in zip(*history, strict=True)])
    return outputs, {LOSS_HISTORY: curve, "folds": k, "steps": steps, "attention_overlap": overlap}


def _run(run: StageRun) -> Output:
    plan, subjects, split = run.plan, run.cohort.subjects, run.plan.split
    return train_aggregator(
        plan.stages.aggregator,
        plan.stages.detector,
        run.inputs[DETECTOR]["model"],
        run.data.validation,
        split.validation,
        torch.tensor([float(subjects[s].label) for s in split.validation]),
        run.data.test,
        split.test,
        plan.study.evaluation.aggregator_folds,
        run.seed,
    )


def _config(plan: TrialPlan) -> Any:
    return {"aggregator": dataclasses.asdict(plan.stages.aggregator), "folds": plan.study.evaluation.aggregator_folds}


STAGE = Stage(
    name=AGGREGATOR,
    config=_config,
    data=lambda plan: {"validation": plan.split.validation, "test": plan.split.test},
    run=_run,
    inputs=(DETECTOR,),
)
