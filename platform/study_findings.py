"""A finished study's answer, right after its trials: the paired significance analysis
(:mod:`salient.dashboards.significance`) on the trials' metrics and per-subject scores, printed
in words and saved as ``findings.json`` (study run artifact; ``OUTPUT_DIR/studies/NAME/findings.json``).

The dashboards compute the same from MLflow; this is the same analysis on the driver's own copies,
so a batch log ends with the study's answer and the answer survives without a tracking server.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from salient.dashboards import names
from salient.dashboards.analysis import prevalences
from salient.dashboards.significance import Finding, dose_findings
from salient.dashboards.views import analysis_settings, curve_trials, is_short
from salient.platform.outcome import TrialOutcome
from salient.platform.study.schema import Study

__all__ = ["findings_document", "outcome_tables", "study_findings"]

log = logging.getLogger(__name__)


def outcome_tables(outcomes: Sequence[TrialOutcome]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(results, scores)`` of finished trials: one row per trial (``trial``, values, ``repeat``,
    metrics) and the per-subject scores their artifacts hold (None if no trial has them)."""
    results = pd.DataFrame([o.result_row() for o in outcomes])
    frames = []
    for o in outcomes:
        path = Path(o.checkpoint_dir) / names.ARTIFACT_SCORES if o.checkpoint_dir else None
        if path is not None and path.is_file():
            frames.append(pd.read_csv(path, dtype={"subject": str}).assign(trial=o.trial_id))
    return results, (pd.concat(frames, ignore_index=True) if frames else None)


def study_findings(study: Study, outcomes: Sequence[TrialOutcome]) -> list[Finding]:
    """Chosen on validation, reported on test: the findings of every arm, seed size and prevalence
    (and the whole held-out set). Empty when the study has no dose axis or no 0x trial."""
    results, scores = outcome_tables(outcomes)
    results = results[~is_short(results)]  # a dose that could not be filled is not that dose
    if scores is None or results.empty or "dose" not in results.columns or not (results["dose"] == 0).any():
        return []
    # the dashboard's own selection and settings (so the printed answer is the dashboard's)
    params = study_analysis_params(study)
    results, note = curve_trials(results, params)
    if note:
        log.info("%s", note)
    prevs: list[float | None] = [None, *prevalences(results)]
    return dose_findings(results, scores, prevs, **analysis_settings(params))


def study_analysis_params(study: Study) -> dict[str, Any]:
    """The study-run params the significance analysis reads (as the dashboards get them from MLflow)."""
    ev = study.evaluation
    return {
        names.PARAM_OBJECTIVE: study.sampler.metric,
        names.PARAM_MODE: study.sampler.mode,
        names.PARAM_CI: ev.ci,
        names.PARAM_BOOTSTRAP: ev.bootstrap,
        names.PARAM_DRAWS: ev.prevalence_draws,
        names.PARAM_SEED: study.seed,
    }


def findings_document(study: Study, findings: Sequence[Finding]) -> dict[str, Any]:
    """``findings.json``: the settings of the analysis and every finding in words and numbers."""

    def gain(g: Any) -> dict[str, Any] | None:
        return None if g is None else {k: getattr(g, k) for k in ("dose", "gain", "ci_low", "ci_high", "level")}

    return {
        "study": study.name,
        "rule": "chosen on validation (paired bootstrap over subjects, two-stage across repeats, Bonferroni over "
        "each curve's doses); the chosen dose's test gain reported with an unadjusted interval",
        "level": study.evaluation.ci,
        # replicates of the paired bootstrap (evaluation.bootstrap; 0 there turns off the per-trial
        # intervals only: the significance analysis then uses 1000)
        "bootstrap": analysis_settings(study_analysis_params(study))["n_boot"],
        "findings": [
            {
                "arm": f.arm,
                "seed_size": f.seed_size,
                "prevalence": f.prevalence,
                "metric": f.metric,
                "sentence": f.sentence(),
                "therapeutic_dose": f.therapeutic_dose,
                "validation_gain": gain(f.chosen),
                "test_gain": gain(f.chosen_test),
                "toxic_dose": f.toxic_dose,
                "toxic_validation_loss": gain(f.toxic),
                "toxic_test_loss": gain(f.toxic_test),
                "validation_curve": [gain(g) for g in f.validation],
            }
            for f in findings
        ],
    }


def write_findings(study: Study, findings: Sequence[Finding]) -> Path:
    """``OUTPUT_DIR/studies/NAME/findings.json``, written atomically."""
    study.results_dir.mkdir(parents=True, exist_ok=True)
    path = study.results_dir / names.ARTIFACT_FINDINGS
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(findings_document(study, findings), indent=1, default=str))
    os.replace(tmp, path)
    return path
