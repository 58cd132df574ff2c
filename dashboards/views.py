"""One study's results -> every figure and table, shared by the Dash app and the HTML report.

A view is built from plain inputs (the results table, the study's params, preview arrays), so
it is the same whether the data came from MLflow, a ``results.csv`` or a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from salient.dashboards import figures, names
from salient.dashboards.analysis import (
    ablation_table,
    best_per_cell,
    dose_shift,
    prevalences,
    table1,
    tvr_gains,
)
from salient.dashboards.significance import Finding, dose_findings, paired_gains

__all__ = ["StudyView", "analysis_settings", "build_view", "findings_table"]

#: Search-space values the platform logs that are not sampled hyper-parameters.
_NOT_SAMPLED = {"dose", "seed_size", "repeat", "trial", "run_id", names.PARAM_ARM}


@dataclass
class StudyView:
    """Figures (by id, in display order), tables (by title), findings (sentences) of one study."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    """One row per curve: the decision in words and the numbers behind it."""

    def dose(value: float | None) -> str:
        return "none" if value is None else f"{value:g}x"

    return pd.DataFrame(
        [
            {
                "arm": f.arm,
                "seed_size": f.seed_size,
                "prevalence": "whole set" if f.prevalence is None else f.prevalence,
                "therapeutic dose (validation)": dose(f.therapeutic_dose),
                "validation gain": f.chosen.text() if f.chosen else "-",
                "test gain there": f.chosen_test.text() if f.chosen_test else "-",
                "toxic dose (validation)": dose(f.toxic_dose),
                "finding": f.sentence(),
            }
            for f in findings
        ]
    )


def analysis_settings(study_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The significance analysis' settings as the study recorded them (defaults otherwise)."""
    p = study_params or {}
    return {
        "level": float(p.get(names.PARAM_CI, 0.95)),
        "n_boot": int(p.get(names.PARAM_BOOTSTRAP, 1000)) or 1000,
        "draws": int(p.get(names.PARAM_DRAWS, 10)),
        "seed": int(p.get(names.PARAM_SEED, 0)),
    }


def _gallery(preview: Mapping[str, np.ndarray] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not preview or "synthetic_image" not in preview:
        return {}
    panels = {"synthetic": (preview["synthetic_image"], preview["synthetic_mask"])}
    if "real_image" in preview and len(preview["real_image"]):
        panels = {"real": (preview["real_image"], preview["real_mask"]), **panels}
    return panels


def _roi_hu(images: np.ndarray, masks: np.ndarray, window: np.ndarray) -> np.ndarray:
    low, high = float(window[0]), float(window[1])
    return (np.asarray(images, dtype=np.float32)[masks > 0] + 1.0) / 2.0 * (high - low) + low


def build_view(
    results: pd.DataFrame,
    study_params: Mapping[str, Any] | None = None,
    preview: Mapping[str, np.ndarray] | None = None,
    scores: pd.DataFrame | None = None,
) -> StudyView:
    """Every figure and table of a study that its results support (missing axes are noted).

    ``scores``: the trials' per-subject scores (``trial, role, subject, label, score, ...``);
    without them there is no significance analysis, and the view says so."""
    view = StudyView()
    if results.empty:
        view.notes.append("no finished trials yet")
        return view
    has_curves = "dose" in results.columns and bool(prevalences(results))
    all_trials = results
    cell = [c for c in ("arm", "seed_size", "dose", "repeat") if c in results.columns]
    objective = str((study_params or {}).get(names.PARAM_OBJECTIVE, "val_auprc"))
    maximise = str((study_params or {}).get(names.PARAM_MODE, "max")) == "max"
    if has_curves and results.duplicated(subset=cell).any() and objective in results.columns:
        results = best_per_cell(results, objective, maximise)
        view.notes.append(
            "the study varies more than dose and seed size: curves show, per cell, the trial with the best "
            f"{objective} (validation)"
        )
    if has_curves:
        if scores is not None and not scores.empty:
            settings = analysis_settings(study_params)
            prevs: list[float | None] = [None, *prevalences(results)]
            view.findings = dose_findings(results, scores, prevs, **settings)
            test_gains = [
                g for p in prevs for g in paired_gains(results, scores, role="test", prevalence=p, **settings)
            ]
            view.tables["findings (chosen on validation, reported on test)"] = findings_table(view.findings)
            view.figures["gain"] = figures.gain_figure(view.findings, test_gains)
        else:
            view.notes.append("no per-subject scores: the significance analysis (findings) is not available")
        view.figures["dose-response"] = figures.dose_response_figure(results, view.findings)
        view.figures["delta-heatmap"] = figures.delta_heatmap(results)
        view.figures["auprc-auroc"] = figures.auprc_auroc_figure(results)
        view.tables["Table 1 (test AUPRC [interval], delta vs 0x, AUROC)"] = table1(results)
        if "seed_size" in results.columns and results["seed_size"].nunique() > 1 and view.findings:
            view.figures["optimal-dose"] = figures.optimal_dose_figure(view.findings)
            view.tables["dose shift between seed sizes"] = dose_shift(view.findings)
        ablation = ablation_table(all_trials)
        if not ablation.empty:
            view.tables["mask-guidance ablation (mean AUPRC, guided - unguided)"] = ablation.round(4)
        gains = tvr_gains(results)
        if not gains.empty:
            view.tables["AUPRC by tumour-volume ratio (delta vs 0x)"] = gains.round(4)
    tuning = {"mask_dice", "frechet_distance"} <= set(all_trials.columns)  # a guidance-tuning search
    if tuning:
        view.figures["pareto"] = figures.pareto_figure(all_trials)
    else:
        if not has_curves:
            view.notes.append("no dose axis or prevalence metrics: dose-response curves are not drawn")
        view.figures["realism"] = figures.realism_figure(all_trials)
        view.figures["band-energy"] = figures.band_energy_figure(all_trials)
        view.figures["saliency"] = figures.saliency_figure(results)
    panels = _gallery(preview)
    if panels:
        view.figures["gallery"] = figures.gallery_figure(panels)
        if "real" in panels and "hu_window" in (preview or {}):
            window = np.asarray((preview or {})["hu_window"])
            view.figures["hu-histogram"] = figures.hu_histogram_figure(
                _roi_hu(*panels["real"], window), _roi_hu(*panels["synthetic"], window)
            )
    # Searched hyper-parameters: the param columns (``results.attrs["params"]``, set by the
    # platform's reader) beyond the grid axes, that actually vary.
    params = all_trials.attrs.get("params", [])
    sampled = [c for c in params if c in all_trials.columns and c not in _NOT_SAMPLED and all_trials[c].nunique() > 1]
    if sampled and objective in all_trials.columns:
        view.figures["history"] = figures.optimisation_history_figure(all_trials, objective, maximise)
        view.figures["importance"] = figures.param_importance_figure(all_trials, objective, sampled)
    return view
