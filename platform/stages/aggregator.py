"""Aggregator stage (paper 3.5, 4.1): the EViT subject aggregator over the frozen detector's
slice embeddings, and the subject scores it gives the held-out test subjects.

Also records two by-products of the same forward passes: each test subject's maximum slice
probability (a score that needs no aggregator) and the saliency overlap (share of the detector's
deep attention inside the lesion on test lesion slices).
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
from salient.platform.stages.base import Output, Stage, StageRun
from salient.platform.stages.detector import detector_input
from salient.platform.stages.slices import SliceSet

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "subject_embeddings", "train_aggregator"]

SALIENCY_SLICES = 128  # test lesion slices the saliency overlap is measured on


def subject_embeddings(
    det: MaskGuidedResNet, cfg: DetectorConfig, data: SliceSet, ids: tuple[str, ...]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per subject: its slice embeddings (n_slices, F) in slice order, and its max slice probability."""
    emb = det.embed(detector_input(cfg, data))
    with torch.no_grad():  # the slice head on the same embeddings: no second pass over the slices
        prob = torch.sigmoid(det.fc(emb).squeeze(1))
    subj = np.asarray(data.subject)
    seqs = [emb[torch.from_numpy(subj == sid)] for sid in ids]
    max_slice = torch.stack([prob[torch.from_numpy(subj == sid)].max() for sid in ids])
    return seqs, max_slice


def train_aggregator(
    cfg: AggregatorConfig,
    det_cfg: DetectorConfig,
    det_state: Mapping[str, torch.Tensor],
    train: SliceSet,
    train_ids: tuple[str, ...],
    train_labels: torch.Tensor,
    test: SliceSet,
    test_ids: tuple[str, ...],
    seed: int,
) -> Output:
    """Train on the training subjects' embeddings, score the test subjects; output ``{"scores",
    "max_slice"}`` (one per test subject, in ``test_ids`` order)."""
    det = MaskGuidedResNet(det_cfg)
    det.load_state_dict(det_state)
    det.eval()
    seqs, _ = subject_embeddings(det, det_cfg, train, train_ids)
    x, pad = pad_sequences(seqs, cfg.max_len)
    trainer = AggregatorTrainer(cfg, x, pad, train_labels, seed=seed)
    history = trainer.train()
    test_seqs, test_max = subject_embeddings(det, det_cfg, test, test_ids)
    xt, padt = pad_sequences(test_seqs, cfg.max_len)
    scores = trainer.predict(xt, padt)
    lesion = test.has_lesion
    overlap = float("nan")
    if lesion.any():
        with torch.no_grad():
            _, att = det(detector_input(det_cfg, test)[lesion][:SALIENCY_SLICES])
        overlap = float(np.mean(attention_overlap(att[-1], test.mask[lesion][:SALIENCY_SLICES])))
    return ({"scores": scores, "max_slice": test_max}, {"loss": history, "attention_overlap": overlap})


def _run(run: StageRun) -> Output:
    plan, subjects, split = run.plan, run.cohort.subjects, run.plan.split
    return train_aggregator(
        plan.stages.aggregator,
        plan.stages.detector,
        run.inputs[DETECTOR]["model"],
        run.data.labeled,
        split.labeled,
        torch.tensor([float(subjects[s].label) for s in split.labeled]),
        run.data.test,
        split.test,
        run.seed,
    )


def _config(plan: TrialPlan) -> Any:
    return {
        "aggregator": dataclasses.asdict(plan.stages.aggregator),
        "evaluation": plan.study.evaluation.model_dump(mode="json"),
    }


STAGE = Stage(
    name=AGGREGATOR,
    config=_config,
    data=lambda plan: {"test": plan.split.test},
    run=_run,
    inputs=(DETECTOR,),
)
