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
from salient.dashboards.analysis import curve_table, natural_order, prevalences
from salient.dashboards.significance import Finding, Gain

__all__ = [
    "auprc_auroc_figure",
    "band_energy_figure",
    "delta_heatmap",
    "dose_response_figure",
    "gain_figure",
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


ARM_COLOURS = {"synthetic": LINE, "real": "#2ca02c", "shuffled": "#7f7f7f"}
ARM_LABELS = {"synthetic": "synthetic pairs", "real": "real control", "shuffled": "shuffled-mask control"}


def dose_response_figure(results: pd.DataFrame, findings: Sequence[Finding] = (), metric: str = "auprc") -> go.Figure:
    """Test dose-response curves with interval bands and the 0x baseline, one line per arm
    (controls beside the synthetic curve); rows = seed sizes, columns = prevalences. A star marks
    the therapeutic dose and a cross the toxic dose *chosen on validation* (``findings``); a curve
    without them had no significant effect."""
    curves = curve_table(results, metric)
    marks = {(f.arm, f.seed_size, f.prevalence): f for f in findings}
    seeds, prevs = _seeds(curves), sorted(curves["prevalence"].unique())
    fig = make_subplots(
        rows=len(seeds),
        cols=len(prevs),
        shared_xaxes=True,
        subplot_titles=[f"seed {s}, prevalence {p:g}" for s in seeds for p in prevs],
        vertical_spacing=0.12 / max(len(seeds), 1),
    )
    first = True
    for i, seed in enumerate(seeds, start=1):
        for j, prev in enumerate(prevs, start=1):
            cell = curves[(curves["seed_size"] == seed) & (curves["prevalence"] == prev)]
            tag = f"seed {seed}, p {prev:g}"
            for arm, c in cell.groupby("arm", sort=False):
                c = c.sort_values("dose")
                colour = ARM_COLOURS.get(str(arm), PALETTE[-1])
                label = ARM_LABELS.get(str(arm), str(arm))
                fig.add_trace(
                    go.Scatter(
                        x=list(c["dose"]) + list(c["dose"][::-1]),
                        y=list(c["ci_high"]) + list(c["ci_low"][::-1]),
                        mode="lines",
                        fill="toself",
                        fillcolor=BAND if arm == "synthetic" else "rgba(127,127,127,0.10)",
                        line={"width": 0},
                        name=f"interval {label} ({tag})",
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
                        line={"color": colour, "dash": "solid" if arm == "synthetic" else "dot"},
                        name=f"{label}" if first else f"{label} ({tag})",
                        legendgroup=str(arm),
                        showlegend=first,
                    ),
                    row=i,
                    col=j,
                )
                f = marks.get((str(arm), seed, prev))
                for dose, symbol, colour_mark, what in (
                    (f.therapeutic_dose if f else None, "star", "green", "therapeutic"),
                    (f.toxic_dose if f else None, "x", "red", "toxic"),
                ):
                    if dose is None or not (c["dose"] == dose).any():
                        continue
                    fig.add_trace(
                        go.Scatter(
                            x=[dose],
                            y=[float(c.loc[c["dose"] == dose, "mean"].iloc[0])],
                            mode="markers",
                            marker={"symbol": symbol, "size": 14, "color": colour_mark},
                            name=f"{what} dose, {label} ({tag})",
                            showlegend=False,
                        ),
                        row=i,
                        col=j,
                    )
            base = cell[cell["dose"] == 0.0]
            if not base.empty:
                fig.add_trace(
                    go.Scatter(
                        x=[cell["dose"].min(), cell["dose"].max()],
                        y=[float(base["mean"].iloc[0])] * 2,
                        mode="lines",
                        line={"dash": "dash", "color": "grey"},
                        name=f"0x baseline ({tag})",
                        showlegend=False,
                    ),
                    row=i,
                    col=j,
                )
            first = False
    fig.update_xaxes(title_text="synthetic dose (x real lesion slices)", row=len(seeds))
    fig.update_yaxes(title_text=f"test {metric.upper()}", col=1)
    fig.update_layout(
        title=f"test {metric.upper()} dose response (star: therapeutic, x: toxic - both chosen on validation; "
        "dashed: 0x)",
        height=320 * len(seeds) + 80,
    )
    return fig


def gain_figure(findings: Sequence[Finding], test: Sequence[Gain] = ()) -> go.Figure:
    """Paired gain over 0x per dose with Bonferroni-adjusted intervals: validation (where the
    decision is made) and, when given, test (reported only); one panel per curve."""
    curves = [f for f in findings if f.validation]
    if not curves:
        return _empty("gain over 0x", "no doses above 0x with per-subject scores")
    fig = make_subplots(
        rows=len(curves),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f.sentence()[:110] for f in curves],
        vertical_spacing=0.25 / max(len(curves), 1),
    )
    test_at = {(g.arm, g.seed_size, g.prevalence, g.dose): g for g in test}
    for i, f in enumerate(curves, start=1):
        for role, gains, colour, offset in (
            ("validation", list(f.validation), LINE, -0.05),
            (
                "test",
                [test_at[k] for g in f.validation if (k := (g.arm, g.seed_size, g.prevalence, g.dose)) in test_at],
                "#d62728",
                0.05,
            ),
        ):
            if not gains:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[g.dose + offset for g in gains],
                    y=[g.gain for g in gains],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [g.ci_high - g.gain for g in gains],
                        "arrayminus": [g.gain - g.ci_low for g in gains],
                    },
                    mode="markers",
                    marker={"color": colour},
                    name=f"{role} gain" if i == 1 else f"{role} gain ({i})",
                    legendgroup=role,
                    showlegend=i == 1,
                    hovertext=[f"{g.dose:g}x: {g.text()} at level {g.level:.4f}" for g in gains],
                ),
                row=i,
                col=1,
            )
        fig.add_hline(y=0.0, line={"dash": "dash", "color": "grey"}, row=i, col=1)
    fig.update_xaxes(title_text="dose", row=len(curves))
    fig.update_layout(
        title="gain over 0x, paired on the same subjects (intervals Bonferroni-adjusted over each curve's doses)",
        height=260 * len(curves) + 100,
    )
    return fig


def synthetic_arm(results: pd.DataFrame) -> pd.DataFrame:
    """The trials of the dose curve itself (controls left out)."""
    if names.PARAM_ARM not in results.columns:
        return results
    return results[results[names.PARAM_ARM].fillna("synthetic") == "synthetic"]


def delta_heatmap(results: pd.DataFrame, metric: str = "auprc") -> go.Figure:
    """Delta vs 0x (test, descriptive) as a dose x prevalence heatmap, one panel per seed size
    (the synthetic arm; controls are in the dose-response figure)."""
    curves = curve_table(synthetic_arm(results), metric)
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


def optimal_dose_figure(findings: Sequence[Finding]) -> go.Figure:
    """The therapeutic dose chosen on validation vs seed size, one line per arm and prevalence;
    seed sizes without a significant gain are left out and named in the hover text."""
    fig = go.Figure()
    groups: dict[tuple[str, float | None], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.arm, f.prevalence), []).append(f)
    for (arm, prev), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        rows = sorted(rows, key=lambda f: natural_order(pd.Series([f.seed_size])).iloc[0])
        chosen = [f for f in rows if f.therapeutic_dose is not None]
        fig.add_trace(
            go.Scatter(
                x=[str(f.seed_size) for f in chosen],
                y=[f.therapeutic_dose for f in chosen],
                mode="lines+markers",
                name=f"{ARM_LABELS.get(arm, arm)}, " + ("whole set" if prev is None else f"prevalence {prev:g}"),
                hovertext=[f.sentence() for f in chosen],
            )
        )
    fig.update_layout(
        title="therapeutic dose vs labeled seed size (chosen on validation; missing: no significant effect)",
        xaxis_title="seed size",
        yaxis_title="dose",
    )
    return fig


def auprc_auroc_figure(results: pd.DataFrame) -> go.Figure:
    """AUPRC at every prevalence next to AUROC (prevalence-free), vs dose, one line per seed size."""
    results = synthetic_arm(results)
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
    if names.N_ADDED not in results.columns:
        return results.iloc[0:0]
    rows = synthetic_arm(results)
    rows = rows[rows[names.N_ADDED].astype(float) > 0]
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
    results = synthetic_arm(results)
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
