"""Search-space names: one parameter-path type for stage settings, one registry of study axes.

A search-space entry names either

* a **stage setting**, always spelled ``STAGE.FIELD[.SUBFIELD...]``, a number indexing a list
  (``diffusion.guidance.s_mask``, ``diffusion.loss.band_weights.3``): :class:`ParamPath` parses,
  validates and sets it. This is the only spelling: search spaces, guidance profiles, MLflow
  params and the CLI all use it; or
* a **study axis** (``dose``, ``seed_size``, ``prevalence``): :data:`AXES` says what values it
  takes, its default, whether it trains anything, and how it sizes the plan.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from salient.dashboards.names import PARAM_ARM
from salient.models.configs import STAGE_CONFIGS

if TYPE_CHECKING:
    from salient.platform.study.schema import ParamSpec, StagesSpec

__all__ = ["AXES", "Axis", "ParamPath", "apply_params", "flatten_settings", "pool_dose"]

_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ParamPath:
    """A stage setting by path: ``diffusion.loss.band_weights.3`` is stage ``diffusion`` and
    segments ``("loss", "band_weights", 3)`` - a number indexes the list before it.

    Dots only (no ``[3]``), so the same spelling is a valid YAML key, search-space name and MLflow
    param name."""

    stage: str
    segments: tuple[str | int, ...]

    @classmethod
    def parse(cls, name: str) -> ParamPath:
        """Parse a dotted path; raises ValueError naming the rule it breaks."""
        stage, _, rest = str(name).partition(".")
        if stage not in STAGE_CONFIGS or not rest:
            raise ValueError(
                f"unknown parameter {name!r}; use one of {list(AXES)} or STAGE.FIELD with STAGE in "
                f"{sorted(STAGE_CONFIGS)}"
            )
        segments: list[str | int] = []
        for seg in rest.split("."):
            if seg.isdigit() and segments and isinstance(segments[-1], str):
                segments.append(int(seg))
            elif _FIELD_RE.match(seg):
                segments.append(seg)
            else:
                hint = f" (write {seg.replace('[', '.').rstrip(']')})" if "[" in seg else ""
                raise ValueError(f"bad path segment {seg!r} in {name!r}: use FIELD or FIELD.INDEX{hint}")
        return cls(stage, tuple(segments))

    def __str__(self) -> str:
        return ".".join([self.stage, *map(str, self.segments)])

    def set(self, stage_settings: Mapping[str, Any], value: Any) -> dict[str, Any]:
        """A copy of one stage's settings (a plain dict) with this path set to ``value``.

        Raises KeyError naming the first segment that does not exist."""
        out = copy.deepcopy(dict(stage_settings))
        parent: Any = None
        node: Any = out
        for i, seg in enumerate(self.segments):
            last = i == len(self.segments) - 1
            if isinstance(seg, int):
                if not isinstance(node, list | tuple) or not 0 <= seg < len(node):
                    raise KeyError(f"{self.segments[i - 1]}.{seg}")
                if not last:
                    raise KeyError(f"{self.segments[i - 1]}.{seg} is not a mapping")
                items = list(node)
                items[seg] = value
                parent[self.segments[i - 1]] = items
                break
            if not isinstance(node, dict) or seg not in node:
                raise KeyError(seg)
            if last:
                node[seg] = value
            else:
                parent, node = node, node[seg]
        return out

    def validate(self, stage_settings: Mapping[str, Any], value: Any) -> None:
        """Raise ValueError (rule and value) if the stage config rejects ``value`` at this path."""
        try:
            candidate = self.set(stage_settings, value)
        except KeyError as exc:
            raise ValueError(f"{self.stage} has no setting {exc.args[0]!r}") from None
        try:
            TypeAdapter(STAGE_CONFIGS[self.stage]).validate_python(candidate)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None


def apply_params(stages: StagesSpec, params: Mapping[str, Any]) -> StagesSpec:
    """The stage configs with a trial's stage settings applied (study axes and the arm are ignored)."""
    per_stage: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        if name in AXES or name == PARAM_ARM:
            continue
        path = ParamPath.parse(name)
        current = per_stage.get(path.stage) or dataclasses.asdict(getattr(stages, path.stage))
        per_stage[path.stage] = path.set(current, value)
    changes = {s: TypeAdapter(STAGE_CONFIGS[s]).validate_python(d) for s, d in per_stage.items()}
    return stages.model_copy(update=changes)


def flatten_settings(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(path, value)`` for every leaf of a config, paths spelled like :class:`ParamPath`
    (``diffusion.loss.band_weights.3``): what a trial logs as its resolved settings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten_settings(item, f"{prefix}.{key}")
    elif isinstance(value, list | tuple) and value and all(not isinstance(v, Mapping | list | tuple) for v in value):
        for i, item in enumerate(value):
            yield f"{prefix}.{i}", item
    else:
        yield prefix, value


# -- study axes -----------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_dose(value: Any) -> str | None:
    return None if _number(value) and value >= 0 else "dose (synthetic-to-real ratio) must be a number >= 0"


def _check_seed_size(value: Any) -> str | None:
    return (
        None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else ("seed_size must be a whole number >= 1")
    )


def _check_prevalence(value: Any) -> str | None:
    return None if _number(value) and 0 < value < 1 else "prevalence must be in (0, 1)"


@dataclass(frozen=True)
class Axis:
    """A study axis: what it means for planning.

    Args:
        name: the search-space name.
        check: returns why a value is not allowed, or None.
        default: the value of a trial whose study does not search this axis (None: derived).
        trains: False for an evaluation-only axis (``prevalence``): it never multiplies training
            and must be a grid.
        sizes_pool: the synthetic pool of a generator is drawn once, for the largest value of
            this axis that any trial can take (grid maximum or the upper bound of a range).
    """

    name: str
    check: Callable[[Any], str | None]
    default: Any
    trains: bool = True
    sizes_pool: bool = False

    def largest(self, spec: ParamSpec) -> float:
        """The largest value a trial can take under ``spec`` (grid/choice maximum, range bound)."""
        return float(max(spec.candidate_values()))


#: The study axes by name, in the order the plan shows them.
AXES: dict[str, Axis] = {
    axis.name: axis
    for axis in (
        Axis("dose", _check_dose, default=0.0, sizes_pool=True),
        Axis("seed_size", _check_seed_size, default=None),
        Axis("prevalence", _check_prevalence, default=None, trains=False),
    )
}


def pool_dose(search_space: Mapping[str, ParamSpec]) -> float:
    """The dose every generator's pool is sized for: the largest dose any trial of the study can
    take, sampled ranges included (a pool sized from grid cells alone would be empty for a
    sampled dose)."""
    spec = search_space.get("dose")
    return AXES["dose"].largest(spec) if spec is not None else float(AXES["dose"].default)
