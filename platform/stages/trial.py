"""Plan a trial (configs, split, stage keys - nothing trains), then run it stage by stage.

Both are loops over :data:`~salient.platform.stages.registry.STAGES`: planning asks each active
stage for its cache key, running computes (or reuses) each output in order and hands it to the
stages that take it as input. The metrics come last (:mod:`~salient.platform.stages.scoring`).

A trial is one detector: a seed size, a repeat, a dose and an *arm* - ``synthetic`` (the dose
curve: pairs from the study's generator) or a control (``real``: extra real lesion slices;
``shuffled``: the synthetic pairs with their masks shuffled), see
:class:`~salient.platform.study.schema.ProtocolSpec`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from salient.dashboards import names
from salient.models.configs import STAGE_CONFIGS
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.splits import Split, make_split
from salient.platform.stage_cache import EVALUATION_VERSION, StageCache, StageKey, stage_key
from salient.platform.stages import AGGREGATOR, POOL
from salient.platform.stages.base import StageEvent, StageRun, TrialData, lesion_slice_count
from salient.platform.stages.registry import STAGE_BY_NAME, STAGES
from salient.platform.stages.scoring import SubjectScores, subject_scores, trial_metrics
from salient.platform.study.params import apply_params, flatten_settings
from salient.platform.study.schema import SYNTHETIC_ARM, StagesSpec, Study

__all__ = ["PREVIEW_PAIRS", "TrialPlan", "TrialResult", "plan_trial", "run_stage", "run_trial"]

PREVIEW_PAIRS = 8  # synthetic pairs returned with a trial's result for its sample grid


@dataclass(frozen=True)
class TrialPlan:
    """Everything that determines a trial, resolved before anything trains (plan, then execute)."""

    study: Study
    params: dict[str, Any]
    repeat: int
    stages: StagesSpec
    split: Split
    n_real_positive: int  # lesion slices of the labeled seed
    n_synthetic: int  # slices added at this dose (synthetic pairs, or real ones for the real control)
    n_pool: int  # pool size: the largest dose of the study, in slices
    arm: str = SYNTHETIC_ARM
    #: the real control's candidates: training positives outside the seed (with their masks)
    extra_real: tuple[str, ...] = ()
    keys: dict[str, StageKey] = dataclasses.field(default_factory=dict)

    @property
    def uses_generator(self) -> bool:
        return self.n_synthetic > 0 and self.arm != "real"

    @property
    def dose(self) -> float:
        return float(self.params.get("dose", 0.0))

    @property
    def trial_key(self) -> str:
        """Identity of the trial's result, to find it again in the trial store and MLflow: the last
        stage's key, the trial's values, and how its metrics are computed (the evaluation settings
        and the evaluation code), so a rerun after changing only those re-scores the trial instead
        of reusing metrics computed the old way."""
        evaluation = self.study.evaluation.model_dump(mode="json")
        text = (
            self.keys[AGGREGATOR].key
            + repr(sorted((k, repr(v)) for k, v in self.params.items()))
            + repr(sorted(evaluation.items()))
            + EVALUATION_VERSION
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def settings(self) -> dict[str, Any]:
        """Every resolved stage setting by its parameter path (``detector.lr``, ...), so fixed
        overrides are visible next to the searched values."""
        return {
            path: value
            for name in STAGE_CONFIGS
            for path, value in flatten_settings(dataclasses.asdict(getattr(self.stages, name)), name)
        }

    def to_json(self) -> dict[str, Any]:
        """The resolved plan as saved with the trial (subject ids only as split sizes and a fingerprint)."""
        return {
            "params": self.params,
            "repeat": self.repeat,
            "arm": self.arm,
            "preset": self.stages.preset,
            "stages": self.stages.model_dump(mode="json", exclude={"preset"}),
            "split": {
                "fingerprint": self.split.fingerprint(),
                **{role: len(getattr(self.split, role)) for role in Split.ROLES},
            },
            "dose_unit": self.study.protocol.dose_unit,
            "n_real_positive_slices": self.n_real_positive,
            "n_synthetic": self.n_synthetic,
            "n_pool": self.n_pool,
            "stage_keys": {name: str(key) for name, key in self.keys.items()},
            "trial_key": self.trial_key,
        }


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, float]
    stage_keys: dict[str, str]
    split_fingerprint: str
    n_real_positive_slices: int
    n_synthetic: int
    #: every validation and test subject's scores (see :class:`SubjectScores`)
    scores: SubjectScores | None = None
    #: the first synthetic pairs this trial trained on (pool tensors, at most PREVIEW_PAIRS), or None
    preview: dict[str, torch.Tensor] | None = None
    #: real lesion slices of the labeled seed (``image``, ``mask``; at most PREVIEW_PAIRS), to
    #: show next to the synthetic ones
    real_preview: dict[str, torch.Tensor] | None = None


def slices_at(dose: float, n_real_positive: int, unit: str) -> int:
    """Slices a dose adds: ``round(dose x real lesion slices)`` (``ratio``) or the dose itself (``slices``)."""
    return round(dose * n_real_positive) if unit == "ratio" else round(dose)


def plan_trial(
    study: Study, params: Mapping[str, Any], repeat: int, pool_dose: float, cohort: LoadedCohort
) -> TrialPlan:
    """Resolve a trial's configs, split and stage cache keys without training anything.

    Args:
        params: the trial's values (``dose``, ``seed_size``, ``STAGE.FIELD`` ..., and ``arm`` for a
            control trial).
        pool_dose: the largest dose of the study: the synthetic pool is sized for it.
        cohort: the manifest records and every preprocessed subject (see :class:`LoadedCohort`).
    """
    stages = apply_params(study.stages, params)
    dose = float(params.get("dose", 0.0))
    if dose < 0 or dose > pool_dose:
        raise ValueError(f"dose {dose} must be within [0, pool_dose={pool_dose}]")
    ev = study.evaluation
    seed_size = int(params["seed_size"]) if "seed_size" in params else _all_train_positives(cohort, repeat, study)
    split = make_split(cohort.records, seed_size, repeat, study.seed, ev.test_fraction, ev.validation_fraction)
    n_real_pos = lesion_slice_count(cohort.subjects, split.seed_positive)
    unit = study.protocol.dose_unit
    marked_unlabeled = {r.subject for r in cohort.records if r.split == "unlabeled"}
    plan = TrialPlan(
        study,
        dict(params),
        repeat,
        stages,
        split,
        n_real_pos,
        slices_at(dose, n_real_pos, unit),
        slices_at(pool_dose, n_real_pos, unit),
        arm=str(params.get(names.PARAM_ARM, SYNTHETIC_ARM)),
        extra_real=tuple(s for s in split.unlabeled if cohort.subjects[s].label == 1 and s not in marked_unlabeled),
    )
    base = {"cohort": cohort.fingerprint, "repeat": repeat, "seed": study.seed}
    for stage in STAGES:
        if stage.active(plan):
            upstream = tuple(plan.keys[name] for name in stage.inputs if name in plan.keys)
            plan.keys[stage.name] = stage_key(stage.name, stage.config(plan), upstream, **stage.data(plan), **base)
    return plan


def run_stage(
    trial: TrialPlan,
    name: str,
    cohort: LoadedCohort,
    cache: StageCache,
    data: TrialData | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> tuple[Any, bool]:
    """Compute (or reuse) one stage of a planned trial; returns ``(output, reused)``.

    ``inputs`` are the outputs of the stage's input stages; those not given are loaded from the
    cache (so a stage can run on its own, e.g. as a separate task, once its inputs are cached).
    """
    if name not in trial.keys:
        raise ValueError(f"trial {trial.trial_key} has no {name!r} stage; it has {list(trial.keys)}")
    trial.split.assert_disjoint()
    stage = STAGE_BY_NAME[name]
    given = dict(inputs or {})
    for upstream in stage.inputs:
        if upstream in trial.keys and upstream not in given:
            given[upstream] = cache.load(trial.keys[upstream])
    run = StageRun(name, trial, cohort, cache, data or TrialData(cohort, trial), given)
    return cache.get_or_compute(trial.keys[name], functools.partial(stage.run, run))


def run_trial(
    trial: TrialPlan, cohort: LoadedCohort, cache: StageCache, report: Callable[[StageEvent], None] | None = None
) -> TrialResult:
    """Run (or reuse) every stage of a planned trial and return its metrics and subject scores."""
    data = TrialData(cohort, trial)
    outputs: dict[str, Any] = {}
    for stage in STAGES:
        if stage.name not in trial.keys:
            continue
        start = time.perf_counter()
        inputs = {n: outputs[n] for n in stage.inputs if n in outputs}
        outputs[stage.name], reused = run_stage(trial, stage.name, cohort, cache, data, inputs)
        if report is not None:
            report(StageEvent(stage.name, trial.keys[stage.name], reused, time.perf_counter() - start))
    scores = subject_scores(trial, cohort, outputs[AGGREGATOR])
    metrics = trial_metrics(trial, cache, scores)
    pool = outputs.get(POOL)
    preview = {k: v[: min(PREVIEW_PAIRS, trial.n_synthetic)] for k, v in pool.items()} if pool is not None else None
    real_preview = {"image": data.seed_lesions.image[:PREVIEW_PAIRS], "mask": data.seed_lesions.mask[:PREVIEW_PAIRS]}
    stage_keys = {k: str(v) for k, v in trial.keys.items()}
    return TrialResult(
        metrics,
        stage_keys,
        trial.split.fingerprint(),
        trial.n_real_positive,
        int(metrics[names.N_ADDED]),
        scores,
        preview,
        real_preview,
    )


def _all_train_positives(cohort: LoadedCohort, repeat: int, study: Study) -> int:
    """Default seed size when the study does not search it: every positive training subject."""
    ev = study.evaluation
    probe = make_split(cohort.records, 0, repeat, study.seed, ev.test_fraction, ev.validation_fraction)
    marked_unlabeled = {r.subject for r in cohort.records if r.split == "unlabeled"}
    return len([s for s in probe.unlabeled if s not in marked_unlabeled and cohort.subjects[s].label == 1])
