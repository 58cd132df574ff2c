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
from salient.dashboards import figures
from salient.dashboards.analysis import (
    DoseSummary,
    ablation_table,
    best_per_cell,
    dose_shift,
    dose_summaries,
    prevalences,
    table1,
    tvr_gains,
)

__all__ = ["StudyView", "build_view", "summary_table"]

#: Search-space values the platform logs that are not sampled hyper-parameters.
_NOT_SAMPLED = {"dose", "seed_size", "repeat", "trial", "run_id"}


@dataclass
class StudyView:
    """Figures (by id, in display order) and tables (by title) of one study."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def summary_table(summaries: list[DoseSummary]) -> pd.DataFrame:
    def fmt(values: tuple[float, ...]) -> str:
        return ", ".join(f"{v:g}x" for v in values) if values else "none"

    return pd.DataFrame(
        [
            {
                "seed_size": s.seed_size,
                "prevalence": s.prevalence,
                "0x AUPRC": "-" if s.baseline is None else f"{s.baseline:.3f}",
                "therapeutic dose": f"{s.therapeutic_dose:g}x",
                "AUPRC there": f"{s.therapeutic_value:.3f}",
                "plausible optima": fmt(s.plausible_optima),
                "therapeutic window": fmt(s.window),
                "toxic dose": "none" if s.toxic_dose is None else f"{s.toxic_dose:g}x",
                "optimum stability": "-" if s.optimum_stability is None else f"{s.optimum_stability:.0%}",
            }
            for s in summaries
        ]
    )


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
) -> StudyView:
    """Every figure and table of a study that its results support (missing axes are noted)."""
    view = StudyView()
    if results.empty:
        view.notes.append("no finished trials yet")
        return view
    has_curves = "dose" in results.columns and bool(prevalences(results))
    all_trials = results
    cell = [c for c in ("seed_size", "dose", "repeat") if c in results.columns]
    objective = str((study_params or {}).get("objective", "auprc"))
    maximise = str((study_params or {}).get("mode", "max")) == "max"
    if has_curves and results.duplicated(subset=cell).any() and objective in results.columns:
        results = best_per_cell(results, objective, maximise)
        view.notes.append(
            f"the study varies more than dose and seed size: curves show, per cell, the trial with the best {objective}"
        )
    if has_curves:
        summaries = dose_summaries(results)
        view.figures["dose-response"] = figures.dose_response_figure(results)
        view.figures["delta-heatmap"] = figures.delta_heatmap(results)
        view.figures["auprc-auroc"] = figures.auprc_auroc_figure(results)
        view.tables["therapeutic and toxic doses"] = summary_table(summaries)
        view.tables["Table 1 (AUPRC [interval], delta vs 0x, AUROC)"] = table1(results)
        if "seed_size" in results.columns and results["seed_size"].nunique() > 1:
            view.figures["optimal-dose"] = figures.optimal_dose_figure(results)
            view.tables["dose shift between seed sizes"] = dose_shift(summaries)
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
