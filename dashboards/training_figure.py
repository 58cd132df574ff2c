"""Training curves: the loss histories every trial logs per stage (``train_loss.<stage>``).

Input is a long table, one row per logged value: ``run_id, trial, stage, step, value`` (the
platform reads it with ``MlflowClient.get_metric_history``). Stages a trial reused from the stage
cache were trained once for several trials, so the same history arrives under each of them:
identical histories of a stage are drawn once and named after every trial that shares them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from salient.dashboards import names
from salient.dashboards.figures import empty_figure
from salient.dashboards.links import HOVER_RUN, point_data

__all__ = ["HISTORY_COLUMNS", "training_curves_figure"]

HISTORY_COLUMNS = ("run_id", "trial", "stage", "step", "value")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _fingerprint(part: pd.DataFrame) -> str:
    steps, values = part["step"].to_numpy(float), part["value"].to_numpy(float)
    return hashlib.sha1(steps.tobytes() + values.tobytes()).hexdigest()


def _stage_order(stage: str) -> tuple[int, str]:
    return (names.TRAIN_STAGES.index(stage) if stage in names.TRAIN_STAGES else len(names.TRAIN_STAGES), stage)


def training_curves_figure(histories: pd.DataFrame, links: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per stage (pipeline order), one line per distinct history (log y when every
    value is positive); a trial's lines share a legend entry, so clicking it hides the trial in
    every panel. Points carry the run ids of the trials the line belongs to.

    Args:
        histories: ``run_id, trial, stage, step, value`` rows (``stage`` without the
            ``train_loss.`` prefix).
        links: run id -> MLflow UI page.
    """
    missing = [c for c in HISTORY_COLUMNS if c not in histories.columns]
    if missing:
        raise ValueError(f"histories lack column(s) {missing}; they have {sorted(map(str, histories.columns))}")
    if histories.empty:
        return empty_figure("training curves", f"no {names.TRAIN_LOSS_PREFIX}<stage> histories logged")
    stages = sorted(histories["stage"].unique(), key=_stage_order)
    trials = sorted(histories["trial"].astype(str).unique())
    colour = {t: _COLOURS[k % len(_COLOURS)] for k, t in enumerate(trials)}
    fig = make_subplots(rows=1, cols=len(stages), subplot_titles=[str(s) for s in stages])
    shown: set[str] = set()
    for j, stage in enumerate(stages, start=1):
        part = histories[histories["stage"] == stage].sort_values("step", kind="stable")
        lines: dict[str, list[tuple[str, str]]] = {}  # fingerprint -> [(trial, run id)]
        first: dict[str, pd.DataFrame] = {}
        for (trial, run_id), h in part.groupby(["trial", "run_id"], sort=True):
            key = _fingerprint(h)
            lines.setdefault(key, []).append((str(trial), str(run_id)))
            first.setdefault(key, h)
        for key, owners in lines.items():
            h = first[key]
            lead = owners[0][0]
            label = lead if len(owners) == 1 else f"{lead} (+{len(owners) - 1} sharing it)"
            run_ids = [r for _, r in owners]
            data = point_data([run_ids] * len(h), links or {})
            trace: dict[str, object] = {
                "x": h["step"],
                "y": h["value"],
                "mode": "lines",
                "line": {"color": colour[lead], "width": 1.5},
                "name": label,
                "legendgroup": lead,
                "showlegend": lead not in shown,
                "hovertemplate": f"{stage}, trials {', '.join(t for t, _ in owners)}<br>step %{{x}}<br>loss %{{y:.4g}}"
                + (HOVER_RUN if data is not None else "")
                + "<extra></extra>",
            }
            if data is not None:
                trace["customdata"] = data
            fig.add_trace(go.Scatter(**trace), row=1, col=j)
            shown.add(lead)
        values = part["value"].to_numpy(float)
        if len(values) and np.all(values > 0):
            fig.update_yaxes(type="log", row=1, col=j)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="training loss", col=1)
    fig.update_layout(title="training curves per stage (identical histories of a reused stage drawn once)")
    return fig
