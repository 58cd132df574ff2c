"""What a stage is: a small description the trial planner and runner loop over.

A :class:`Stage` says what its cache key is made of (its config and data identity, plus the keys of
its inputs) and how to compute its output from a :class:`StageRun`. Planning never trains:
:func:`salient.platform.stages.trial.plan_trial` evaluates ``config``/``data``/``active`` only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.training import ResumableTrainer
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages.slices import SliceSet, slice_set

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = [
    "CHECKPOINTS_PER_STAGE",
    "LOSS_HISTORY",
    "Checkpoints",
    "Stage",
    "StageEvent",
    "StageRun",
    "TrialData",
    "derive_seed",
    "lesion_slice_count",
    "loss_curve",
    "on_cpu",
    "stage_device",
]

CHECKPOINTS_PER_STAGE = 5  # partial-state saves per stage: a retried stage loses at most 1/5

Output = tuple[Any, dict[str, Any]]  # (tensors to cache, JSON-able meta)


#: Stage-meta key of the training loss curve (one value per step or epoch, at most MAX_CURVE_POINTS).
LOSS_HISTORY = "loss_history"
MAX_CURVE_POINTS = 500


def loss_curve(values: Sequence[float]) -> list[float]:
    """A training loss curve small enough to log: at most :data:`MAX_CURVE_POINTS` values, each the
    mean of a run of consecutive steps (so the curve's shape survives, not every 7th step)."""
    values = [float(v) for v in values]
    if len(values) <= MAX_CURVE_POINTS:
        return values
    bins = np.array_split(np.asarray(values), MAX_CURVE_POINTS)
    return [float(b.mean()) for b in bins]


def stage_device() -> torch.device:
    """Where a stage computes: the GPU Ray gave its task (``resources.stages.<stage>.gpus`` > 0 makes
    Ray set CUDA_VISIBLE_DEVICES), else the CPU. Outputs are always cached on the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def on_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every tensor on the CPU (what the stage cache stores)."""
    return {k: v.detach().cpu() for k, v in state.items()}


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any tuple of parts (study seed, repeat, stage name, ...)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class StageEvent:
    """A stage finished (trained, or reused from the cache) after ``seconds``."""

    stage: str
    key: StageKey
    reused: bool
    seconds: float


class TrialData:
    """The slice sets of one trial, built on first use and shared by its stages."""

    def __init__(self, cohort: LoadedCohort, plan: TrialPlan):
        self.subjects, self.split, self.offsets = cohort.subjects, plan.split, plan.stages.diffusion.neighbour_offsets

    @cached_property
    def seed(self) -> SliceSet:
        """Every slice of the labeled seed (positive subjects with masks)."""
        return slice_set(self.subjects, self.split.seed_positive, self.offsets)

    @cached_property
    def seed_lesions(self) -> SliceSet:
        """The seed's lesion slices."""
        return self.seed.select(torch.nonzero(self.seed.has_lesion).flatten())

    @cached_property
    def labeled(self) -> SliceSet:
        """Detector training slices: the seed and the labeled training negatives."""
        return slice_set(self.subjects, self.split.labeled, self.offsets)

    @cached_property
    def validation(self) -> SliceSet:
        return slice_set(self.subjects, self.split.validation, self.offsets)

    @cached_property
    def test(self) -> SliceSet:
        return slice_set(self.subjects, self.split.test, self.offsets)


def lesion_slice_count(subjects: Mapping[str, Any], ids: Sequence[str]) -> int:
    """Axial slices with lesion voxels, summed over ``ids``: what a ``ratio`` dose multiplies."""
    return sum(int(subjects[s].mask.reshape(subjects[s].mask.shape[0], -1).any(axis=1).sum()) for s in ids)


@dataclass
class StageRun:
    """Everything a stage's ``run`` may use."""

    name: str
    plan: TrialPlan
    cohort: LoadedCohort
    cache: StageCache
    data: TrialData
    #: outputs of the stages this one takes as inputs, by stage name
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> StageKey:
        return self.plan.keys[self.name]

    @property
    def seed(self) -> int:
        """This stage's seed: the study seed, the repeat and the stage name."""
        return derive_seed(self.plan.study.seed, self.plan.repeat, self.name)

    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.cache, self.key)


@dataclass(frozen=True)
class Checkpoints:
    """Partial training state of one stage output, so a retried stage continues where it stopped."""

    cache: StageCache
    key: StageKey

    def attach(self, trainer: ResumableTrainer, total: int) -> Callable[[int, Any], None]:
        """Load the stage's partial checkpoint into ``trainer`` if one exists; return the progress
        callback (step or epoch) that saves a new one ``CHECKPOINTS_PER_STAGE`` times over ``total``."""
        if (state := self.cache.load_checkpoint(self.key)) is not None:
            trainer.load_state_dict(state)
        every = max(1, math.ceil(total / CHECKPOINTS_PER_STAGE))

        def save(progress: int, _: Any) -> None:
            if progress % every == 0:
                self.cache.save_checkpoint(self.key, trainer.state_dict())

        return save


def _always(plan: TrialPlan) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of a trial.

    Args:
        name: the stage name (one of :data:`salient.platform.stages.STAGE_NAMES`).
        config: the settings the output depends on (part of the cache key).
        data: the data identity the output depends on, as keyword parts of the key (subject ids).
        run: computes ``(output, meta)``; ``output`` is tensors/numbers/lists/dicts (cached with
            ``torch.save``, loaded with ``weights_only=True``), ``meta`` JSON.
        inputs: stages whose outputs ``run`` takes; their keys are part of this stage's key.
            Inputs that are not active in a trial are skipped.
        active: whether the trial has this stage (generator stages only when it uses synthetic data).
    """

    name: str
    config: Callable[[TrialPlan], Any]
    data: Callable[[TrialPlan], dict[str, Any]]
    run: Callable[[StageRun], Output]
    inputs: tuple[str, ...] = ()
    active: Callable[[TrialPlan], bool] = _always
