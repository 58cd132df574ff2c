"""Study files: schema, loading/validation, parameter paths, and the expanded plan of trials."""

from salient.platform.study.loader import load_study
from salient.platform.study.params import AXES, ParamPath, apply_params
from salient.platform.study.plan import Plan, TrialSpec, build_plan
from salient.platform.study.schema import Study

__all__ = ["AXES", "ParamPath", "Plan", "Study", "TrialSpec", "apply_params", "build_plan", "load_study"]
