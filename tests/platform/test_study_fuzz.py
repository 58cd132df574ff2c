"""Fuzz the study loader: every input validates or raises the platform's own error, never a raw
traceback (issue #8). Inputs are a valid study with leaves replaced, keys dropped or unknown keys
added, and arbitrary YAML text."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from salient.platform.errors import PlatformError
from salient.platform.study import build_plan, load_study
from salient.platform.study.schema import Study

VALID: dict[str, Any] = {
    "name": "fuzz",
    "seed": 0,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 24, "n_positive": 8, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0]},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {
        "preset": "tiny",
        "diffusion": {"train_steps": 6, "guidance": {"sampling_steps": 3}},
        "detector": {"epochs": 1},
    },
    "search_space": {
        "dose": {"grid": [0.0, 1.0]},
        "seed_size": {"grid": [2]},
        "diffusion.guidance.s_mask": {"uniform": [0.5, 2.0]},
    },
    "sampler": {"name": "tpe", "n_trials": 2, "seed": 1},
    "evaluation": {"prevalences": [0.25, 0.5], "test_fraction": 0.5, "bootstrap": 20},
    "resources": {"cpus": 1, "max_concurrent": 2, "retries": 1},
    "output_dir": "out",
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["grid", "tpe", "exponential", "phantom", "manifest", "full", "[0, 1]", "1e309"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_studies(draw: st.DrawFn) -> Any:
    study = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(study) if isinstance(study, dict) else []
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = study
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return study


def _load(text: str) -> Study | None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "study.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            study = load_study(path)
        except PlatformError as exc:
            assert str(exc), "a platform error must say what is wrong"
            return None
        build_plan(study)  # a study that validates must also plan
        return study


def _dump(data: Any) -> str:
    # YAML has no NaN/inf literal that round-trips via safe_dump for every type: write them as .nan/.inf
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return v
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return yaml.safe_dump(fix(data), allow_unicode=True)


def test_the_unmutated_study_is_valid() -> None:
    assert _load(_dump(VALID)) is not None


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_studies())
def test_mutated_studies_validate_or_raise_platform_errors(study: Any) -> None:
    _load(_dump(study))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_validates_or_raises_platform_errors(text: str) -> None:
    _load(text)
