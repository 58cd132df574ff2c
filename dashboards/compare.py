"""Several studies on the same axes: their dose curves and their gains over 0x, overlaid.

A researcher compares studies that differ in one thing (wavelet vs pixel generator, two cohorts,
two guidance profiles): the curves only answer that question drawn in the same panel with the
same scales, one colour per study. Panels are the union of the studies' seed sizes and
prevalences; a study without a cell is simply absent from it. Only the synthetic arm is drawn
(controls are per-study evidence; they are in each study's own page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from salient.dashboards.analysis import curve_table, natural_order, with_cell
from salient.dashboards.figures import PALETTE, empty_figure, interval_band, synthetic_arm
from salient.dashboards.links import HOVER_RUN, point_data, runs_by
from salient.dashboards.significance import Finding

__all__ = ["CompareInput", "compare_dose_response", "compare_gains"]

_BANDS = ("rgba(31,119,180,0.15)", "rgba(214,39,40,0.15)", "rgba(44,160,44,0.15)", "rgba(148,103,189,0.15)")


@dataclass(frozen=True)
class CompareInput:
    """One study to compare: its results table (one trial per cell), findings and run links."""

    results: pd.DataFrame
    findings: Sequence[Finding] = ()
    links: Mapping[str, str] = field(default_factory=dict)


def _key(value: object) -> object:
    return natural_order(pd.Series([value])).iloc[0]


def _check(studies: Mapping[str, CompareInput]) -> None:
    if len(studies) < 2:
        raise ValueError(f"studies must hold two or more studies to compare, got {len(studies)}: {list(studies)}")


def compare_dose_response(studies: Mapping[str, CompareInput], metric: str = "auprc") -> go.Figure:
    """Test dose curves (mean with interval band) of every study, overlaid: rows = seed sizes,
    columns = prevalences (union over studies), shared axes."""
    _check(studies)
    curves = {label: curve_table(synthetic_arm(s.results), metric) for label, s in studies.items()}
    every = pd.concat(curves.values(), ignore_index=True)
    seeds = sorted(every["seed_size"].unique(), key=_key)  # type: ignore[arg-type]
    prevs = sorted(every["prevalence"].unique())
    fig = make_subplots(
        rows=len(seeds),
        cols=len(prevs),
        shared_xaxes="all",
        shared_yaxes="all",
        subplot_titles=[f"seed {s}, prevalence {p:g}" for s in seeds for p in prevs],
        vertical_spacing=0.12 / max(len(seeds), 1),
    )
    for k, (label, frame) in enumerate(curves.items()):
        colour, band = PALETTE[k % len(PALETTE)], _BANDS[k % len(_BANDS)]
        for i, seed in enumerate(seeds, start=1):
            for j, prev in enumerate(prevs, start=1):
                c = frame[(frame["seed_size"] == seed) & (frame["prevalence"] == prev)].sort_values("dose")
                if c.empty:
                    continue
                tag = f"seed {seed}, p {prev:g}"
                fig.add_trace(interval_band(c, band, f"interval {label} ({tag})", legendgroup=label), row=i, col=j)
                data = point_data(c["runs"], studies[label].links)
                trace: dict[str, object] = {
                    "x": c["dose"],
                    "y": c["mean"],
                    "mode": "lines+markers",
                    "line": {"color": colour},
                    "name": label if (i, j) == (1, 1) else f"{label} ({tag})",
                    "legendgroup": label,
                    "showlegend": (i, j) == (1, 1),
                    "hovertemplate": f"{label}, {tag}<br>dose %{{x:g}}x<br>test {metric.upper()} %{{y:.3f}}"
                    + (HOVER_RUN if data is not None else "")
                    + "<extra></extra>",
                }
                if data is not None:
                    trace["customdata"] = data
                fig.add_trace(go.Scatter(**trace), row=i, col=j)
    fig.update_xaxes(title_text="synthetic dose (x real lesion slices)", row=len(seeds))
    fig.update_yaxes(title_text=f"test {metric.upper()}", col=1)
    fig.update_layout(
        title=f"test {metric.upper()} dose response, {len(studies)} studies overlaid (synthetic arm; bands: intervals)",
        height=320 * len(seeds) + 100,
    )
    return fig


def compare_gains(studies: Mapping[str, CompareInput]) -> go.Figure:
    """Validation gain over 0x (paired, Bonferroni-adjusted intervals: the decision's evidence)
    per dose, every study overlaid: one panel per seed size on the whole held-out set (the
    lowest prevalence when a study has no whole-set finding). Filled markers: significant."""
    _check(studies)
    picked: dict[str, dict[object, Finding]] = {}
    for label, s in studies.items():
        synthetic = [f for f in s.findings if f.arm == "synthetic" and f.validation]
        best: dict[object, Finding] = {}
        for f in sorted(synthetic, key=lambda f: -1.0 if f.prevalence is None else f.prevalence, reverse=True):
            best[f.seed_size] = f  # the last written wins: whole set, else the lowest prevalence
        picked[label] = best
    seeds = sorted({seed for best in picked.values() for seed in best}, key=_key)  # type: ignore[arg-type]
    if not seeds:
        return empty_figure("gain over 0x", "no per-subject scores in these studies: no paired gains")
    fig = make_subplots(rows=1, cols=len(seeds), shared_yaxes="all", subplot_titles=[f"seed {s}" for s in seeds])
    n = len(studies)
    for k, (label, best) in enumerate(picked.items()):
        colour = PALETTE[k % len(PALETTE)]
        runs = runs_by(with_cell(studies[label].results), ["arm", "seed_size", "dose"])
        for j, seed in enumerate(seeds, start=1):
            f = best.get(seed)
            if f is None:
                continue
            gains = sorted(f.validation, key=lambda g: g.dose)
            span = (gains[-1].dose - gains[0].dose) or 1.0
            where = "whole set" if f.prevalence is None else f"prevalence {f.prevalence:g}"
            data = point_data([runs.get(("synthetic", seed, g.dose), []) for g in gains], studies[label].links)
            fig.add_trace(
                go.Scatter(
                    customdata=data,
                    x=[g.dose + (k - (n - 1) / 2) * 0.02 * span for g in gains],
                    y=[g.gain for g in gains],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [g.ci_high - g.gain for g in gains],
                        "arrayminus": [g.gain - g.ci_low for g in gains],
                        "color": colour,
                    },
                    mode="markers",
                    marker={
                        "color": [colour if g.direction != "none" else "white" for g in gains],
                        "line": {"color": colour, "width": 2},
                        "size": 10,
                    },
                    name=label if j == 1 else f"{label} (seed {seed})",
                    legendgroup=label,
                    showlegend=j == 1,
                    text=[f"{label}, seed {seed}, {where}<br>{g.dose:g}x: {g.text()} ({g.direction})" for g in gains],
                    hovertemplate="%{text}" + (HOVER_RUN if data is not None else "") + "<extra></extra>",
                ),
                row=1,
                col=j,
            )
            fig.add_hline(y=0.0, line={"dash": "dash", "color": "grey"}, row=1, col=j)
    fig.update_xaxes(title_text="dose")
    fig.update_yaxes(title_text="validation gain over 0x", col=1)
    fig.update_layout(title="validation gain over 0x, studies overlaid (filled: significant after Bonferroni)")
    return fig
