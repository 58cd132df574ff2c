"""Count a study's plan before building it, and refuse plans above the study's caps.

Why: expanding the plan materialises one object per trial, so ``repeats: 1000000000`` or a grid
product in the billions made ``platform validate`` allocate gigabytes and never return
(issue #15 item 6). The count is a product of list lengths - plain integers, no expansion - so it
is exact and instant for any input; only then is the plan built. Every command that builds a plan
(``validate``, ``run``, ``plan``, ``tune-guidance``) goes through :func:`plan_size_issues` (the
loader, with file and key path) and :func:`check_plan_size` (``build_plan``'s own guard).

Conditional entries (``when``) can collapse grid cells, so with them the count is an upper
bound; a study that trips the cap only through that bound can raise ``limits.max_trials``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from salient.platform.errors import Issue, StudyError
from salient.platform.study.params import AXES
from salient.platform.study.schema import LimitsSpec, ParamSpec, Study

__all__ = ["PlanSize", "check_plan_size", "control_arms", "count_plan", "is_training_grid", "plan_size_issues"]


def is_training_grid(name: str, spec: ParamSpec) -> bool:
    """Whether entry ``name`` is a grid axis that multiplies training (``prevalence`` does not)."""
    return spec.is_grid and (name not in AXES or AXES[name].trains)


@dataclass(frozen=True)
class PlanSize:
    """How many detector trainings a plan holds, and the factors that make the number."""

    trials: int
    #: ``(what, how many)`` per factor: each training grid entry, ``repeats``, ``sampler.n_trials``
    factors: tuple[tuple[str, int], ...]
    #: False when conditional grid entries may collapse cells (``trials`` is then an upper bound)
    exact: bool

    def describe(self) -> str:
        """``"dose 4 x seed_size 2 x repeats 3 = 24"`` (``up to`` when the count is a bound)."""
        product = " x ".join(f"{what} {n}" for what, n in self.factors) or "1"
        return f"{product} = {'up to ' if not self.exact else ''}{self.trials}"


def control_arms(study: Study) -> int:
    """Control arms the study runs beside its dose curve (``protocol.controls``: each repeats every
    dose > 0); 0 for a study model without a protocol section."""
    protocol = getattr(study, "protocol", None)  # the protocol section arrives with the protocol rework
    return len(getattr(protocol, "controls", ()) or ())


def count_plan(
    space: Mapping[str, ParamSpec],
    repeats: int,
    sampler_trials: int,
    controls: int = 0,
    control_doses: Collection[float] = (),
) -> PlanSize:
    """The number of trials ``build_plan`` would make, without making them.

    Args:
        space: the search space by entry name (grid entries multiply, sampled ones draw).
        repeats: the study's ``repeats`` (>= 1).
        sampler_trials: the study's ``sampler.n_trials``; counts only when an entry is sampled.
        controls: control arms; each adds one trial per grid cell whose dose is > 0 (and one of
            ``control_doses`` when that is given).
        control_doses: the study's ``protocol.control_doses`` (empty: every dose > 0).
    """
    if repeats < 1 or sampler_trials < 1 or controls < 0:
        raise ValueError(
            f"repeats and sampler_trials must be >= 1 and controls >= 0, got {repeats!r}, {sampler_trials!r} "
            f"and {controls!r}"
        )
    factors = []
    for name, spec in space.items():
        if not is_training_grid(name, spec):
            continue
        values = spec.grid or ()
        positive = (
            sum(1 for v in values if isinstance(v, int | float) and v > 0 and (not control_doses or v in control_doses))
            if name == "dose"
            else 0
        )
        if positive and controls:
            factors.append(
                (
                    f"dose (with {controls} control arm(s) at its {positive} dose(s) > 0)",
                    len(values) + controls * positive,
                )
            )
        else:
            factors.append((name, len(values)))
    factors.append(("repeats", repeats))
    if any(not spec.is_grid for spec in space.values()):
        factors.append(("sampler.n_trials", sampler_trials))
    exact = not any(spec.when for name, spec in space.items() if is_training_grid(name, spec))
    return PlanSize(math.prod(n for _, n in factors), tuple(factors), exact)


def plan_size_issues(
    entries: Mapping[str, tuple[ParamSpec, str, str]],
    repeats: int,
    sampler_trials: int,
    limits: LimitsSpec,
    file: str,
    n_prevalences: int = 0,
    controls: int = 0,
    control_doses: Collection[float] = (),
) -> list[Issue]:
    """Every list longer than ``limits.max_values`` and a plan larger than ``limits.max_trials``.

    Args:
        entries: ``{name: (spec, file it came from, key path in that file)}`` as the loader has them.
        repeats: the study's ``repeats``.
        sampler_trials: the study's ``sampler.n_trials``.
        limits: the study's caps.
        file: the study file (where ``limits`` and ``evaluation`` are set).
        n_prevalences: length of ``evaluation.prevalences`` when set there (not as a search-space
            entry, which the entry check covers).
        controls: the study's control arms (:func:`control_arms`).
        control_doses: the study's ``protocol.control_doses``.
    """
    issues = []
    if n_prevalences > limits.max_values:
        issues.append(
            Issue(
                file,
                "evaluation.prevalences",
                f"{n_prevalences} values",
                f"holds {n_prevalences} values, more than limits.max_values ({limits.max_values})",
            )
        )
    for spec, where_file, base in entries.values():
        if spec.kind in ("grid", "choice") and len(spec.candidate_values()) > limits.max_values:
            issues.append(
                Issue(
                    where_file,
                    f"{base}.{spec.kind}",
                    f"{len(spec.candidate_values())} values",
                    f"holds {len(spec.candidate_values())} values, more than limits.max_values "
                    f"({limits.max_values}); use fewer values, a sampled range, or raise limits.max_values",
                )
            )
    space = {name: spec for name, (spec, _, _) in entries.items()}
    size = count_plan(space, repeats, sampler_trials, controls, control_doses)
    if size.trials > limits.max_trials:
        issues.append(
            Issue(
                file,
                "limits.max_trials",
                limits.max_trials,
                f"the plan has {size.describe()} trials, more than limits.max_trials ({limits.max_trials}); "
                "shrink the grid, repeats or sampler.n_trials, or raise limits.max_trials",
            )
        )
    return issues


def check_plan_size(study: Study) -> None:
    """Raise :class:`StudyError` when ``study``'s plan is over its caps (``build_plan``'s guard,
    for studies that did not come through the loader)."""
    file = str(study.source_file or "study")
    entries = {name: (spec, file, f"search_space.{name}") for name, spec in study.search_space.items()}
    n_prevalences = 0 if "prevalence" in study.search_space else len(study.evaluation.prevalences)
    issues = plan_size_issues(
        entries,
        study.repeats,
        study.sampler.n_trials,
        study.limits,
        file,
        n_prevalences,
        control_arms(study),
        study.protocol.control_doses,
    )
    if issues:
        raise StudyError(issues)
