"""Plotly figures: pure functions, results table (and arrays) in, ``go.Figure`` out.

Every figure names its traces so tests (and users hovering) can tell them apart; facets follow
the paper's layout (seed sizes down, prevalences across).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from salient.dashboards import names
from salient.dashboards.analysis import curve_table, dose_summaries, natural_order, prevalences

__all__ = [
    "auprc_auroc_figure",
    "band_energy_figure",
    "delta_heatmap",
    "dose_response_figure",
    "gallery_figure",
    "hu_histogram_figure",
    "optimal_dose_figure",
    "optimisation_history_figure",
    "param_importance_figure",
    "pareto_figure",
    "realism_figure",
    "saliency_figure",
]

BAND = "rgba(31, 119, 180, 0.18)"
LINE = "#1f77b4"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _seeds(frame: pd.DataFrame) -> list[object]:
    return sorted(frame["seed_size"].unique(), key=lambda v: natural_order(pd.Series([v])).iloc[0])


def _empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        annotations=[{"text": why, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}],
    )
    return fig


def dose_response_figure(results: pd.DataFrame, metric: str = "auprc") -> go.Figure:
    """Dose-response curves with interval bands, the 0x baseline, therapeutic (star) and toxic
    (cross) doses; rows = seed sizes, columns = prevalences."""
    curves = curve_table(results, metric)
    summaries = {(s.seed_size, s.prevalence): s for s in dose_summaries(results, metric)}
    seeds, prevs = _seeds(curves), sorted(curves["prevalence"].unique())
    fig = make_subplots(
        rows=len(seeds),
        cols=len(prevs),
        shared_xaxes=True,
        subplot_titles=[f"seed {s}, prevalence {p:g}" for s in seeds for p in prevs],
        vertical_spacing=0.12 / max(len(seeds), 1),
    )
    for i, seed in enumerate(seeds, start=1):
        for j, prev in enumerate(prevs, start=1):
            c = curves[(curves["seed_size"] == seed) & (curves["prevalence"] == prev)].sort_values("dose")
            tag = f"seed {seed}, p {prev:g}"
            band_x = list(c["dose"]) + list(c["dose"][::-1])
            band_y = list(c["ci_high"]) + list(c["ci_low"][::-1])
            fig.add_trace(
                go.Scatter(
                    x=band_x,
                    y=band_y,
                    mode="lines",
                    fill="toself",
                    fillcolor=BAND,
                    line={"width": 0},
                    name=f"interval ({tag})",
                    hoverinfo="skip",
                    showlegend=False,
                ),
                row=i,
                col=j,
            )
            fig.add_trace(
                go.Scatter(
                    x=c["dose"],
                    y=c["mean"],
                    mode="lines+markers",
                    line={"color": LINE},
                    name=f"{metric.upper()} ({tag})",
                    showlegend=False,
                ),
                row=i,
                col=j,
            )
            s = summaries[(seed, prev)]
            if s.baseline is not None:
                fig.add_trace(
                    go.Scatter(
                        x=[c["dose"].min(), c["dose"].max()],
                        y=[s.baseline] * 2,
                        mode="lines",
                        line={"dash": "dash", "color": "grey"},
                        name=f"0x baseline ({tag})",
                        showlegend=False,
                    ),
                    row=i,
                    col=j,
                )
            fig.add_trace(
                go.Scatter(
                    x=[s.therapeutic_dose],
                    y=[s.therapeutic_value],
                    mode="markers",
                    marker={"symbol": "star", "size": 14, "color": "green"},
                    name=f"therapeutic dose ({tag})",
                    showlegend=False,
                ),
                row=i,
                col=j,
            )
            if s.toxic_dose is not None:
                y = float(c.loc[c["dose"] == s.toxic_dose, "mean"].iloc[0])
                fig.add_trace(
                    go.Scatter(
                        x=[s.toxic_dose],
                        y=[y],
                        mode="markers",
                        marker={"symbol": "x", "size": 12, "color": "red"},
                        name=f"toxic dose ({tag})",
                        showlegend=False,
                    ),
                    row=i,
                    col=j,
                )
    fig.update_xaxes(title_text="synthetic dose (x real positives)", row=len(seeds))
    fig.update_yaxes(title_text=metric.upper(), col=1)
    fig.update_layout(
        title=f"{metric.upper()} dose response (star: therapeutic, x: toxic, dashed: 0x)", height=320 * len(seeds) + 80
    )
    return fig


def delta_heatmap(results: pd.DataFrame, metric: str = "auprc") -> go.Figure:
    """Delta vs 0x as a dose x prevalence heatmap, one panel per seed size."""
    curves = curve_table(results, metric)
    seeds = _seeds(curves)
    fig = make_subplots(rows=1, cols=len(seeds), subplot_titles=[f"seed {s}" for s in seeds], shared_yaxes=True)
    span = float(np.nanmax(np.abs(curves["delta"]))) if curves["delta"].notna().any() else 1.0
    for j, seed in enumerate(seeds, start=1):
        c = curves[curves["seed_size"] == seed].pivot(index="dose", columns="prevalence", values="delta")
        fig.add_trace(
            go.Heatmap(
                z=c.to_numpy(),
                x=[f"{p:g}" for p in c.columns],
                y=[f"{d:g}x" for d in c.index],
                colorscale="RdBu",
                zmid=0.0,
                zmin=-span,
                zmax=span,
                name=f"delta {metric.upper()} (seed {seed})",
                showscale=j == len(seeds),
                texttemplate="%{z:+.3f}",
            ),
            row=1,
            col=j,
        )
    fig.update_xaxes(title_text="test prevalence")
    fig.update_yaxes(title_text="dose", col=1)
    fig.update_layout(title=f"delta {metric.upper()} vs 0x")
    return fig


def optimal_dose_figure(results: pd.DataFrame, metric: str = "auprc") -> go.Figure:
    """Therapeutic dose vs seed size, one line per prevalence; bars span the plausible optima."""
    summaries = dose_summaries(results, metric)
    fig = go.Figure()
    for prev in sorted({s.prevalence for s in summaries}):
        rows = sorted(
            (s for s in summaries if s.prevalence == prev),
            key=lambda s: natural_order(pd.Series([s.seed_size])).iloc[0],
        )
        x = [str(s.seed_size) for s in rows]
        y = [s.therapeutic_dose for s in rows]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                name=f"prevalence {prev:g}",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(s.plausible_optima) - s.therapeutic_dose for s in rows],
                    "arrayminus": [s.therapeutic_dose - min(s.plausible_optima) for s in rows],
                },
            )
        )
    fig.update_layout(
        title="therapeutic dose vs labeled seed size (bars: plausible optima)",
        xaxis_title="seed size",
        yaxis_title="dose",
    )
    return fig


def auprc_auroc_figure(results: pd.DataFrame) -> go.Figure:
    """AUPRC at every prevalence next to AUROC (prevalence-free), vs dose, one line per seed size."""
    prevs = prevalences(results)
    cols = [names.metric_name("auprc", p) for p in prevs] + (["auroc"] if "auroc" in results.columns else [])
    titles = [f"AUPRC @ {p:g}" for p in prevs] + (["AUROC"] if "auroc" in results.columns else [])
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=titles)
    frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
    colours = {seed: PALETTE[k % len(PALETTE)] for k, seed in enumerate(_seeds(frame))}  # one colour per seed size
    for j, col in enumerate(cols, start=1):
        for seed in _seeds(frame):
            g = frame[frame["seed_size"] == seed].groupby("dose", as_index=False)[col].mean()
            fig.add_trace(
                go.Scatter(
                    x=g["dose"],
                    y=g[col],
                    mode="lines+markers",
                    name=f"{titles[j - 1]} (seed {seed})",
                    line={"color": colours[seed]},
                    legendgroup=str(seed),
                    showlegend=j == 1,
                ),
                row=1,
                col=j,
            )
    fig.update_xaxes(title_text="dose")
    fig.update_layout(title="AUPRC (by prevalence) alongside AUROC")
    return fig


def _generator_rows(results: pd.DataFrame) -> pd.DataFrame:
    if "n_synthetic" not in results.columns:
        return results.iloc[0:0]
    rows = results[results["n_synthetic"].astype(float) > 0]
    return rows.assign(domain=rows["diffusion.domain"] if "diffusion.domain" in rows.columns else "wavelet")


def realism_figure(results: pd.DataFrame) -> go.Figure:
    """Mask fidelity (Dice of the UCMT teacher vs the conditioning mask), MS-SSIM and Frechet
    distance of each generator's pool, wavelet vs pixel baseline when the study has both."""
    rows = _generator_rows(results)
    names = [
        (c, t)
        for c, t in (
            ("pool_mask_dice", "mask Dice"),
            ("pool_ms_ssim", "MS-SSIM"),
            ("pool_frechet_distance", "Frechet distance"),
        )
        if c in rows.columns
    ]
    if rows.empty or not names:
        return _empty("realism", "no synthetic data in this study")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[t for _, t in names])
    for j, (col, title) in enumerate(names, start=1):
        g = rows.groupby("domain")[col].agg(["mean", "std"]).reset_index()
        fig.add_trace(
            go.Bar(x=g["domain"], y=g["mean"], error_y={"type": "data", "array": g["std"].fillna(0.0)}, name=title),
            row=1,
            col=j,
        )
    fig.update_layout(title="realism of the synthetic pools (mean over trials, bars: sd)", showlegend=False)
    return fig


def band_energy_figure(results: pd.DataFrame) -> go.Figure:
    """Wavelet band statistics (paper Fig. 4): LL std and LH/HL/HH variance, real vs synthetic."""
    rows = _generator_rows(results)
    bands = [b for b in ("ll_std", "lh_var", "hl_var", "hh_var") if f"real_{b}" in rows.columns]
    if rows.empty or not bands:
        return _empty("wavelet band energies", "no synthetic data in this study")
    fig = make_subplots(rows=1, cols=len(bands), subplot_titles=[b.replace("_", " ").upper() for b in bands])
    for j, band in enumerate(bands, start=1):
        x = ["real"] + [f"synthetic ({d})" for d in sorted(rows["domain"].unique())]
        y = [float(rows[f"real_{band}"].mean())] + [
            float(rows.loc[rows["domain"] == d, f"synthetic_{band}"].mean()) for d in sorted(rows["domain"].unique())
        ]
        fig.add_trace(go.Bar(x=x, y=y, name=band, marker_color=["grey"] + [LINE] * (len(x) - 1)), row=1, col=j)
    fig.update_layout(title="Haar band statistics of lesion slices: real vs synthetic", showlegend=False)
    return fig


def hu_histogram_figure(real_hu: np.ndarray, synthetic_hu: np.ndarray, bins: int = 40) -> go.Figure:
    """Histogram of HU values inside the lesion masks, real vs synthetic (normalised)."""
    fig = go.Figure()
    for name, values in (("real", real_hu), ("synthetic", synthetic_hu)):
        fig.add_trace(
            go.Histogram(
                x=np.asarray(values).ravel(), nbinsx=bins, histnorm="probability density", name=name, opacity=0.6
            )
        )
    fig.update_layout(barmode="overlay", title="HU inside the lesion mask", xaxis_title="HU", yaxis_title="density")
    return fig


def gallery_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], per_row: int = 4) -> go.Figure:
    """Slices with their mask outlined: ``panels[row title] = (images (N, H, W), masks (N, H, W))``."""
    titles = list(panels)
    n = min(per_row, min((len(panels[t][0]) for t in titles), default=0))
    if not titles or n == 0:
        return _empty("samples", "no samples")
    fig = make_subplots(
        rows=len(titles),
        cols=n,
        subplot_titles=[f"{t} {k}" for t in titles for k in range(n)],
        horizontal_spacing=0.01,
        vertical_spacing=0.06,
    )
    for i, title in enumerate(titles, start=1):
        images, masks = (np.asarray(a, dtype=np.float32) for a in panels[title])  # plotly has no float16
        for k in range(n):
            fig.add_trace(
                go.Heatmap(z=images[k][::-1], colorscale="gray", showscale=False, name=f"{title} {k}", zmin=-1, zmax=1),
                row=i,
                col=k + 1,
            )
            if masks[k].any():
                fig.add_trace(
                    go.Contour(
                        z=masks[k][::-1].astype(float),
                        showscale=False,
                        contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
                        colorscale=[[0.0, "red"], [1.0, "red"]],  # "lines" colouring ignores line.color
                        line={"color": "red", "width": 2},
                        name=f"{title} {k} mask",
                        hoverinfo="skip",
                    ),
                    row=i,
                    col=k + 1,
                )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_layout(title="real vs synthetic lesion slices (red: mask)", height=220 * len(titles) + 80)
    return fig


def saliency_figure(results: pd.DataFrame) -> go.Figure:
    """Share of the detector's deep attention inside the lesion (test lesion slices) vs dose."""
    if "attention_overlap" not in results.columns:
        return _empty("saliency overlap", "no attention_overlap metric")
    frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
    fig = go.Figure()
    for seed in _seeds(frame):
        g = frame[frame["seed_size"] == seed].groupby("dose", as_index=False)["attention_overlap"].mean()
        fig.add_trace(go.Scatter(x=g["dose"], y=g["attention_overlap"], mode="lines+markers", name=f"seed {seed}"))
    fig.update_layout(
        title="attention inside the lesion (saliency overlap) vs dose", xaxis_title="dose", yaxis_title="overlap"
    )
    return fig


def optimisation_history_figure(results: pd.DataFrame, objective: str, maximise: bool = True) -> go.Figure:
    """Objective per trial in completion order with the running best (Optuna-style history)."""
    if objective not in results.columns:
        return _empty("optimisation history", f"no {objective} column")
    values = results[objective].astype(float).to_numpy()
    best = np.maximum.accumulate(values) if maximise else np.minimum.accumulate(values)
    x = np.arange(len(values))
    fig = go.Figure(
        [
            go.Scatter(x=x, y=values, mode="markers", name=objective),
            go.Scatter(x=x, y=best, mode="lines", name="best so far"),
        ]
    )
    fig.update_layout(title=f"optimisation history: {objective}", xaxis_title="trial", yaxis_title=objective)
    return fig


def param_importance_figure(results: pd.DataFrame, objective: str, params: Sequence[str]) -> go.Figure:
    """Optuna's fANOVA importance of the sampled parameters for ``objective``.

    The trials are replayed into an in-memory Optuna study (numeric parameters as float ranges
    spanning the observed values, others categorical), so any results table works, not only one
    produced by an Optuna sampler. Needs at least two trials and one varying parameter.
    """
    import optuna

    params = [p for p in params if p in results.columns and results[p].nunique() > 1]
    rows = results.dropna(subset=[objective]) if objective in results.columns else results.iloc[0:0]
    if len(rows) < 2 or not params:
        return _empty("parameter importance", "needs >= 2 trials and a varying sampled parameter")
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for p in params:
        numeric = pd.to_numeric(rows[p], errors="coerce")
        if numeric.notna().all():
            dists[p] = optuna.distributions.FloatDistribution(float(numeric.min()), float(numeric.max()))
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(sorted(map(str, rows[p].unique())))
    study = optuna.create_study(direction="maximize")
    for _, r in rows.iterrows():
        values = {
            p: (float(r[p]) if isinstance(d, optuna.distributions.FloatDistribution) else str(r[p]))
            for p, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=float(r[objective])))
    importance = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    names = list(importance)[::-1]
    fig = go.Figure(go.Bar(x=[importance[n] for n in names], y=names, orientation="h", name="importance"))
    fig.update_layout(title=f"parameter importance for {objective} (fANOVA)", xaxis_title="importance")
    return fig


def pareto_figure(results: pd.DataFrame, x: str = "frechet_distance", y: str = "mask_dice") -> go.Figure:
    """Guidance tuning: every configuration's realism (x, lower is better) vs mask fidelity (y,
    higher is better); marker size grows with sampling cost (``nfe``); the 2-D Pareto front of
    (x down, y up) is drawn as a line."""
    if x not in results.columns or y not in results.columns:
        return _empty("Pareto front", f"needs {x} and {y}")
    rows = results.dropna(subset=[x, y]).sort_values(x)
    cost = rows["nfe"].astype(float) if "nfe" in rows.columns else pd.Series(30.0, index=rows.index)
    front, best = [], -np.inf
    for idx, r in rows.iterrows():
        if float(r[y]) > best:
            front.append(idx)
            best = float(r[y])
    fig = go.Figure(
        [
            go.Scatter(
                x=rows[x],
                y=rows[y],
                mode="markers",
                marker={"size": 6 + 14 * cost / max(float(cost.max()), 1.0)},
                text=rows["trial"] if "trial" in rows.columns else None,
                name="configurations",
            ),
            go.Scatter(x=rows.loc[front, x], y=rows.loc[front, y], mode="lines", name="Pareto front"),
        ]
    )
    fig.update_layout(title=f"guidance tuning: {y} vs {x} (marker size: sampling cost)", xaxis_title=x, yaxis_title=y)
    return fig
