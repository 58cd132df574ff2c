"""Study files: schema, loading/validation, and the expanded plan of trials."""

from salient.platform.study.loader import load_study
from salient.platform.study.plan import Plan, TrialSpec, apply_params, build_plan
from salient.platform.study.schema import Study

__all__ = ["Plan", "Study", "TrialSpec", "apply_params", "build_plan", "load_study"]
