"""Expand a study's search space into the plan of trials, and apply a trial's values to configs.

Grid entries are expanded here, in Python (Ray Tune's OptunaSearch cannot take grid axes);
sampled entries are left to the Optuna sampler, ``sampler.n_trials`` draws per grid cell and
repeat. ``prevalence`` is an evaluation axis: it never multiplies training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from salient.dashboards.names import PARAM_ARM
from salient.platform.stages import GENERATOR_STAGES
from salient.platform.study.params import AXES, pool_dose
from salient.platform.study.plan_size import check_plan_size, is_training_grid
from salient.platform.study.schema import ParamSpec, Study

__all__ = ["Plan", "TrialSpec", "build_plan", "generator_params"]


@dataclass(frozen=True)
class TrialSpec:
    """One detector training: a grid cell and repeat (sampled values are added at run time)."""

    index: int
    repeat: int
    params: dict[str, Any]

    @property
    def trial_id(self) -> str:
        return f"trial_{self.index:04d}"


@dataclass(frozen=True)
class Plan:
    """The expanded plan of a study."""

    trials: tuple[TrialSpec, ...]
    sampled: dict[str, ParamSpec]
    n_samples: int
    prevalences: tuple[float, ...]
    #: the dose every generator's pool is sized for (the largest any trial can take)
    pool_dose: float

    @property
    def n_trials(self) -> int:
        """Detector trainings (each evaluated at every prevalence)."""
        return len(self.trials) * self.n_samples

    @property
    def n_generators(self) -> int:
        """Distinct generator pools when nothing is sampled (a lower bound otherwise)."""
        return len({generator_key(t) for t in self.trials})

    @property
    def n_evaluations(self) -> int:
        return self.n_trials * len(self.prevalences)


def generator_params(params: dict[str, Any]) -> dict[str, Any]:
    """The values that determine a trial's synthetic pool (not the dose, detector or prevalence)."""
    return {k: v for k, v in params.items() if k == "seed_size" or k.split(".", 1)[0] in GENERATOR_STAGES}


def generator_key(trial: TrialSpec) -> tuple[Any, ...]:
    return (trial.repeat, tuple(sorted((k, repr(v)) for k, v in generator_params(trial.params).items())))


def _active(params: dict[str, Any], spec: ParamSpec) -> bool:
    return all(params.get(cond) in allowed for cond, allowed in (spec.when or {}).items())


def build_plan(study: Study) -> Plan:
    """Expand ``study``'s grid into trials; raises StudyError (before expanding) when the plan is
    over the study's ``limits``."""
    check_plan_size(study)
    grid = {n: s for n, s in study.search_space.items() if is_training_grid(n, s)}
    sampled = {n: s for n, s in study.search_space.items() if not s.is_grid}
    names = list(grid)
    cells: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for values in itertools.product(*(grid[n].grid or () for n in names)):
        params = dict(zip(names, values, strict=True))
        # Conditional entries drop out where their condition fails; identical cells collapse.
        params = {n: v for n, v in params.items() if _active(params, grid[n])}
        params.setdefault("dose", AXES["dose"].default)
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in seen:
            seen.add(key)
            cells.append(params)
    # Controls beside the dose curve: each dose > 0 (or each control dose) again per control arm;
    # they share its 0x trial.
    control_doses = set(study.protocol.control_doses)
    cells += [
        {**c, PARAM_ARM: arm}
        for c in list(cells)
        if float(c["dose"]) > 0 and (not control_doses or float(c["dose"]) in control_doses)
        for arm in study.protocol.controls
    ]
    trials = tuple(
        TrialSpec(index=i, repeat=r, params=p)
        for i, (r, p) in enumerate((r, p) for r in range(study.repeats) for p in cells)
    )
    n_samples = study.sampler.n_trials if sampled else 1
    return Plan(trials, sampled, n_samples, study.evaluation.prevalences, pool_dose(study.search_space))
