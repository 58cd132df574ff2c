"""One study's results -> its findings header, every figure and table, shared by the Dash app and the HTML report.

A view is built from plain inputs (the results table, the study's params, preview arrays,
per-subject scores, training histories), so it is the same whether the data came from MLflow, a
``results.csv`` or a test. Its order is the page's: the answer (findings header), then the
evidence (figures, most telling first), then the numbers (tables).
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
    natural_order,
    prevalences,
    table1,
    tvr_gains,
    with_cell,
)
from salient.dashboards.findings_header import Header, build_header
from salient.dashboards.links import EXPERIMENT_COLUMN, RUN_COLUMN, run_links
from salient.dashboards.significance import Finding, dose_findings, paired_gains
from salient.dashboards.training_figure import training_curves_figure

__all__ = [
    "StudyView",
    "analysis_settings",
    "build_view",
    "curve_trials",
    "findings_table",
    "is_short",
    "short_doses",
    "trials_table",
]

#: Search-space values the platform logs that are not sampled hyper-parameters.
_NOT_SAMPLED = {"dose", "seed_size", "repeat", "trial", "run_id", names.PARAM_ARM}


#: Figures that need the page's full width (facets, galleries); the rest share a row on wide screens.
WIDE_FIGURES = frozenset(
    {"dose-response", "gain", "training-curves", "gallery", "auprc-auroc", "compare-dose-response"}
)
#: Display order of the figures (the most telling first); figures not listed follow in build order.
FIGURE_ORDER = (
    "dose-response",
    "gain",
    "delta-heatmap",
    "optimal-dose",
    "realism",
    "training-curves",
    "auprc-auroc",
    "band-energy",
    "saliency",
    "gallery",
    "hu-histogram",
    "pareto",
    "history",
    "importance",
)


@dataclass
class StudyView:
    """Findings (header and sentences), figures (by id, in display order), tables (by title) of
    one study; ``results`` is the table the curves were drawn from (one trial per cell) and
    ``links`` maps its run ids to MLflow UI pages (empty without a UI address)."""

    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    header: Header | None = None
    results: pd.DataFrame = field(default_factory=pd.DataFrame)
    links: dict[str, str] = field(default_factory=dict)


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


def trials_table(results: pd.DataFrame, links: Mapping[str, str]) -> pd.DataFrame:
    """Every finished trial with its cell, main metrics and MLflow run (id, and UI page when known)."""
    frame = with_cell(results)
    columns = [
        c
        for c in ("trial", "arm", "seed_size", "dose", "repeat", "val_auprc", "auprc", "auroc", RUN_COLUMN)
        if c in frame.columns
    ]
    table = frame[columns].copy()
    if links and RUN_COLUMN in table.columns:
        table["MLflow UI"] = [links.get(str(r), "") for r in table[RUN_COLUMN]]
    sort = [c for c in ("arm", "seed_size", "dose", "repeat") if c in table.columns]
    table = table.sort_values(sort, key=natural_order) if sort else table
    return table.round(4).reset_index(drop=True)


def _objective(study_params: Mapping[str, Any] | None) -> tuple[str, bool]:
    """(the validation metric the study selected on, whether it maximised it)."""
    p = study_params or {}
    return str(p.get(names.PARAM_OBJECTIVE, "val_auprc")), str(p.get(names.PARAM_MODE, "max")) == "max"


def curve_trials(results: pd.DataFrame, study_params: Mapping[str, Any] | None) -> tuple[pd.DataFrame, str | None]:
    """The trials the dose curves and findings use: where a study varies more than dose and seed
    size (several trials per arm, seed size, dose and repeat), the one per cell with the best
    validation objective the study recorded; returns them and a note saying so (or None)."""
    cell = [c for c in ("arm", "seed_size", "dose", "repeat") if c in results.columns]
    objective, maximise = _objective(study_params)
    if not results.duplicated(subset=cell).any() or objective not in results.columns:
        return results, None
    note = (
        "the study varies more than dose and seed size: curves show, per cell, the trial with the best "
        f"{objective} (validation)"
    )
    return best_per_cell(results, objective, maximise), note


def analysis_settings(study_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The significance analysis' settings as the study recorded them (defaults otherwise)."""
    p = study_params or {}
    return {
        "level": float(p.get(names.PARAM_CI, 0.95)),
        "n_boot": int(p.get(names.PARAM_BOOTSTRAP, 1000)) or 1000,
        "draws": int(p.get(names.PARAM_DRAWS, 10)),
        "seed": int(p.get(names.PARAM_SEED, 0)),
    }


def _gallery(preview: Mapping[str, np.ndarray] | None) -> dict[str, figures.Panel]:
    """Gallery rows: real slices with their masks, synthetic ones with their pseudo-labels and,
    when the preview has them, the conditioning masks they were generated from."""
    if not preview or "synthetic_image" not in preview:
        return {}
    panels: dict[str, figures.Panel] = {
        "synthetic": (preview["synthetic_image"], preview["synthetic_mask"], preview.get(names.PREVIEW_CONDITION))
    }
    if "real_image" in preview and len(preview["real_image"]):
        panels = {"real": (preview["real_image"], preview["real_mask"]), **panels}
    return panels


def _roi_hu(images: np.ndarray, masks: np.ndarray, window: np.ndarray) -> np.ndarray:
    low, high = float(window[0]), float(window[1])
    return (np.asarray(images, dtype=np.float32)[masks > 0] + 1.0) / 2.0 * (high - low) + low


def is_short(results: pd.DataFrame) -> pd.Series:
    """Trials whose dose could not be filled: their pool (or, for the real control, the cohort's
    spare lesion slices) held fewer slices than the dose asked for. Their points are not the dose
    they name, so curves and findings leave them out (and say so)."""
    if not {names.N_ADDED, names.N_ADDED_REQUESTED} <= set(results.columns):
        return pd.Series(False, index=results.index)
    return results[names.N_ADDED].astype(float) < results[names.N_ADDED_REQUESTED].astype(float)


def short_doses(results: pd.DataFrame) -> list[str]:
    """A note per trial :func:`is_short` leaves out."""
    short = results[is_short(results)]
    return [
        f"trial {row.get('trial', '?')} (dose {row.get('dose', '?')}, seed size {row.get('seed_size', '?')}"
        + (f", {row[names.PARAM_ARM]} control" if isinstance(row.get(names.PARAM_ARM), str) else "")
        + f"): {int(row[names.N_ADDED])} of {int(row[names.N_ADDED_REQUESTED])} slices added - the source ran short "
        "(pairs that failed the pair or placement check are never used); left out of the curves and findings"
        for row in short.to_dict("records")
    ]


def build_view(
    results: pd.DataFrame,
    study_params: Mapping[str, Any] | None = None,
    preview: Mapping[str, np.ndarray] | None = None,
    scores: pd.DataFrame | None = None,
    histories: pd.DataFrame | None = None,
    mlflow_ui: str | None = None,
) -> StudyView:
    """Every figure and table of a study that its results support (missing axes are noted).

    Args:
        results: one row per finished trial (``run_id`` and ``experiment_id`` columns make its
            points link to MLflow).
        study_params: the study run's params (objective, mode, significance settings).
        preview: a trial's gallery arrays (``preview.npz``).
        scores: the trials' per-subject scores (``trial, role, subject, label, score, ...``);
            without them there is no significance analysis, and the view says so.
        histories: training-loss histories (``run_id, trial, stage, step, value``), if any.
        mlflow_ui: the MLflow UI's address; points then open their run's page on click.
    """
    view = StudyView()
    if results.empty:
        view.notes.append("no finished trials yet")
        return view
    view.links = run_links(results, mlflow_ui) if EXPERIMENT_COLUMN in results.columns else {}
    links = view.links
    view.notes += short_doses(results)
    results = results[~is_short(results)]
    has_curves = "dose" in results.columns and bool(prevalences(results))
    all_trials = results
    objective, maximise = _objective(study_params)
    if has_curves:
        results, note = curve_trials(results, study_params)
        view.notes += [note] if note else []
    view.results = results
    if has_curves:
        if scores is not None and not scores.empty:
            settings = analysis_settings(study_params)
            prevs: list[float | None] = [None, *prevalences(results)]
            view.findings = dose_findings(results, scores, prevs, **settings)
            view.header = build_header(view.findings)
            test_gains = [
                g for p in prevs for g in paired_gains(results, scores, role="test", prevalence=p, **settings)
            ]
            view.tables["findings (chosen on validation, reported on test)"] = findings_table(view.findings)
            view.figures["gain"] = figures.gain_figure(view.findings, test_gains, results, links)
        else:
            view.notes.append("no per-subject scores: the significance analysis (findings) is not available")
        view.figures["dose-response"] = figures.dose_response_figure(results, view.findings, links=links)
        view.figures["delta-heatmap"] = figures.delta_heatmap(results, links=links)
        view.figures["auprc-auroc"] = figures.auprc_auroc_figure(results, links)
        view.tables["Table 1 (test AUPRC [interval], delta vs 0x, AUROC)"] = table1(results)
        if "seed_size" in results.columns and results["seed_size"].nunique() > 1 and view.findings:
            view.figures["optimal-dose"] = figures.optimal_dose_figure(view.findings, results, links)
            view.tables["dose shift between seed sizes"] = dose_shift(view.findings)
        ablation = ablation_table(all_trials)
        if not ablation.empty:
            view.tables["mask-guidance ablation (mean AUPRC, guided - unguided)"] = ablation.round(4)
        gains = tvr_gains(results)
        if not gains.empty:
            view.tables["AUPRC by tumour-volume ratio (delta vs 0x)"] = gains.round(4)
    tuning = {"mask_dice", "frechet_distance"} <= set(all_trials.columns)  # a guidance-tuning search
    if tuning:
        view.figures["pareto"] = figures.pareto_figure(all_trials, links=links)
    else:
        if not has_curves:
            view.notes.append("no dose axis or prevalence metrics: dose-response curves are not drawn")
        view.figures["realism"] = figures.realism_figure(all_trials)
        view.figures["band-energy"] = figures.band_energy_figure(all_trials)
        view.figures["saliency"] = figures.saliency_figure(results, links)
    if histories is not None and not histories.empty:
        view.figures["training-curves"] = training_curves_figure(histories, links)
    panels = _gallery(preview)
    if panels:
        view.figures["gallery"] = figures.gallery_figure(panels)
        if "real" in panels and "hu_window" in (preview or {}):
            window = np.asarray((preview or {})["hu_window"])
            real, synthetic = panels["real"], panels["synthetic"]
            view.figures["hu-histogram"] = figures.hu_histogram_figure(
                _roi_hu(real[0], real[1], window), _roi_hu(synthetic[0], synthetic[1], window)
            )
    # Searched hyper-parameters: the param columns (``results.attrs["params"]``, set by the
    # platform's reader) beyond the grid axes, that actually vary.
    params = all_trials.attrs.get("params", [])
    sampled = [c for c in params if c in all_trials.columns and c not in _NOT_SAMPLED and all_trials[c].nunique() > 1]
    if sampled and objective in all_trials.columns:
        view.figures["history"] = figures.optimisation_history_figure(all_trials, objective, maximise, links)
        view.figures["importance"] = figures.param_importance_figure(all_trials, objective, sampled)
    if RUN_COLUMN in all_trials.columns:
        view.tables["trials (MLflow runs)"] = trials_table(all_trials, links)
    rank = {name: k for k, name in enumerate(FIGURE_ORDER)}
    view.figures = dict(sorted(view.figures.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    for fig in view.figures.values():
        if fig.layout.title.subtitle.text:  # room for the subtitle above the subplot titles
            fig.update_layout(margin={"t": 120})
    return view
