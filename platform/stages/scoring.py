"""A finished trial's numbers: every held-out subject's scores, and the metrics computed from them.

The per-subject scores are kept (artifact ``scores.csv``) because the question a study answers -
is this dose better than none? - is a *paired* comparison of two detectors on the same subjects
(:mod:`salient.dashboards.significance`); the metrics are the per-trial summary: validation
metrics (``val_`` prefix: what selection uses) and test metrics (unprefixed: what is reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.dashboards import names
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.evaluation import evaluate_subjects
from salient.platform.finite import require_finite
from salient.platform.stage_cache import StageCache
from salient.platform.stages import AGGREGATOR, DETECTOR, POOL
from salient.platform.stages.base import derive_seed

if TYPE_CHECKING:
    from salient.platform.cohort.prepare import LoadedCohort
    from salient.platform.stages.trial import TrialPlan

__all__ = ["SubjectScores", "subject_scores", "subject_tvr", "trial_metrics"]

#: Body voxels for a target-to-volume ratio computed from the images: above this HU (air and lung
#: are below), or above the preprocessing window's floor when that is higher.
BODY_HU = -500.0


@dataclass(frozen=True)
class SubjectScores:
    """One row per validation and test subject: its role, id, label, target-to-volume ratio, the
    aggregator's score and the maximum slice probability."""

    role: tuple[str, ...]
    subject: tuple[str, ...]
    label: np.ndarray
    tvr: np.ndarray
    score: np.ndarray
    max_slice: np.ndarray

    def of(self, role: str) -> SubjectScores:
        keep = np.array([r == role for r in self.role], dtype=bool)
        pick = lambda xs: tuple(x for x, k in zip(xs, keep, strict=True) if k)  # noqa: E731
        return SubjectScores(
            pick(self.role),
            pick(self.subject),
            self.label[keep],
            self.tvr[keep],
            self.score[keep],
            self.max_slice[keep],
        )

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "role": r,
                "subject": s,
                "label": int(y),
                "tvr": float(t),
                "score": float(sc),
                "max_slice": float(m),
            }
            for r, s, y, t, sc, m in zip(
                self.role, self.subject, self.label, self.tvr, self.score, self.max_slice, strict=True
            )
        ]


def subject_tvr(subject: PreprocessedSubject, hu_window: tuple[float, float]) -> float:
    """The subject's target-to-volume ratio: the manifest's ``tvr`` when given, else lesion voxels
    over body voxels (above :data:`BODY_HU`, or the window floor) of the preprocessed volume."""
    if subject.tvr is not None:
        return float(subject.tvr)
    low, high = hu_window
    floor = (max(BODY_HU, low) - low) / (high - low) * 2 - 1  # that HU in the [-1, 1] image scale
    body = int((subject.image > floor + 1e-6).sum())
    return float(subject.mask.sum()) / max(body, 1)


def subject_scores(
    trial: TrialPlan, cohort: LoadedCohort, aggregated: Mapping[str, Mapping[str, torch.Tensor]]
) -> SubjectScores:
    """The aggregator stage's scores, one row per validation and test subject."""
    window = trial.study.cohort.preprocessing.hu_window
    rows: dict[str, list[Any]] = {k: [] for k in ("role", "subject", "label", "tvr", "score", "max_slice")}
    for role, ids in (("validation", trial.split.validation), ("test", trial.split.test)):
        out = aggregated[role]
        rows["role"] += [role] * len(ids)
        rows["subject"] += list(ids)
        rows["label"] += [cohort.subjects[s].label for s in ids]
        rows["tvr"] += [subject_tvr(cohort.subjects[s], window) for s in ids]
        rows["score"] += out["scores"].tolist()
        rows["max_slice"] += out["max_slice"].tolist()
    return SubjectScores(
        tuple(rows["role"]),
        tuple(rows["subject"]),
        np.asarray(rows["label"], dtype=int),
        np.asarray(rows["tvr"], dtype=float),
        np.asarray(rows["score"], dtype=float),
        np.asarray(rows["max_slice"], dtype=float),
    )


def trial_metrics(trial: TrialPlan, cache: StageCache, scores: SubjectScores) -> dict[str, float]:
    """Validation and test metrics of the aggregator's scores and of the max-slice score, the
    saliency overlap, the pool's realism and the trial's data and compute counts.

    Raises:
        NonFiniteMetricError: a primary metric is NaN or infinite (the trial failed).
    """
    ev = trial.study.evaluation
    eval_seed = derive_seed(trial.study.seed, trial.repeat, "evaluation")
    common = {"draws": ev.prevalence_draws, "ci": ev.ci, "seed": eval_seed}
    metrics: dict[str, float] = {}
    for role in names.ROLES:
        part = scores.of(role)
        if role == "test":
            found = evaluate_subjects(
                part.label,
                part.score,
                ev.prevalences,
                bootstrap=ev.bootstrap,
                tvr=part.tvr,
                tvr_prevalence=ev.tvr_prevalence,
                **common,
            )
        else:
            found = evaluate_subjects(part.label, part.score, ev.prevalences, bootstrap=0, **common)
        max_slice = evaluate_subjects(part.label, part.max_slice, ev.prevalences, bootstrap=0, **common)
        found.update({f"maxslice_{k}": v for k, v in max_slice.items() if k.startswith(names.PREVALENCE_METRICS)})
        prefix = names.VALIDATION_PREFIX if role == "validation" else ""
        metrics.update({prefix + k: v for k, v in found.items()})
    primary = {
        names.metric_name(m, p, role=role): metrics[names.metric_name(m, p, role=role)]
        for m in names.PREVALENCE_METRICS
        for p in (None, *ev.prevalences)
        for role in names.ROLES
    }
    require_finite(primary, f"trial {trial.trial_key} (repeat {trial.repeat}, {trial.params})")
    metrics["attention_overlap"] = cache.meta(trial.keys[AGGREGATOR])["attention_overlap"]
    if POOL in trial.keys:  # the pool's realism (not its bookkeeping: compute time varies run to run)
        pool_meta = cache.meta(trial.keys[POOL])
        metrics.update(
            {
                k if k.startswith(("synthetic_", "real_")) else f"pool_{k}": v
                for k, v in pool_meta.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "compute_seconds"
            }
        )
    det = cache.meta(trial.keys[DETECTOR])
    metrics.update(
        {
            names.N_REAL_POSITIVE: float(trial.n_real_positive),
            names.N_ADDED: float(det["n_added"]),
            names.N_ADDED_REQUESTED: float(trial.n_synthetic),
            names.N_ADDED_BLOCKS: float(det["n_added_blocks"]),
            names.ADDED_RATIO: det["n_added"] / max(trial.n_real_positive, 1),
            names.DETECTOR_STEPS: float(det["steps"]),
            names.SEEN_SEED_POSITIVE: float(det["seed_positive_seen"]),
            names.SEEN_ADDED_POSITIVE: float(det["added_positive_seen"]),
            names.SEEN_NEGATIVE: float(det["negative_seen"]),
            names.AGGREGATOR_STEPS: float(cache.meta(trial.keys[AGGREGATOR])["steps"]),
        }
    )
    return metrics
