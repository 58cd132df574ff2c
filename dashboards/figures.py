"""Plotly figures: pure functions, results table (and arrays) in, ``go.Figure`` out.

Every figure names its traces so tests (and users hovering) can tell them apart; facets follow
the paper's layout (seed sizes down, prevalences across).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from salient.dashboards import names
from salient.dashboards.analysis import curve_table, long_metrics, natural_order, prevalences, with_cell
from salient.dashboards.links import HOVER_RUN, point_data, runs_by
from salient.dashboards.significance import Finding, Gain

__all__ = [
    "ARM_COLOURS",
    "PALETTE",
    "auprc_auroc_figure",
    "band_energy_figure",
    "delta_heatmap",
    "dose_response_figure",
    "empty_figure",
    "gain_figure",
    "gallery_figure",
    "hu_histogram_figure",
    "interval_band",
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


def _title(title: str, subtitle: str = "") -> dict[str, object]:
    """A figure title with its reading instructions in a smaller line beneath (half-width panels
    cannot fit both in one line)."""
    return {"text": title, "subtitle": {"text": subtitle}} if subtitle else {"text": title}


def empty_figure(title: str, why: str) -> go.Figure:
    """A figure with nothing to draw: its title and, in the middle, why."""
    fig = go.Figure()
    fig.update_layout(
        title=title,
        annotations=[{"text": why, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}],
    )
    return fig


def interval_band(curve: pd.DataFrame, fillcolor: str, name: str, **extra: object) -> go.Scatter:
    """The shaded interval of a dose curve (``dose``, ``ci_low``, ``ci_high``, sorted by dose): a
    closed polygon, no legend entry, no hover; ``extra`` goes to the trace (e.g. ``legendgroup``)."""
    return go.Scatter(
        x=list(curve["dose"]) + list(curve["dose"][::-1]),
        y=list(curve["ci_high"]) + list(curve["ci_low"][::-1]),
        mode="lines",
        fill="toself",
        fillcolor=fillcolor,
        line={"width": 0},
        name=name,
        hoverinfo="skip",
        showlegend=False,
        **extra,
    )


ARM_COLOURS = {"synthetic": LINE, "real": "#2ca02c", "shuffled": "#7f7f7f"}
ARM_LABELS = names.ARM_LABELS
NO_LINKS: Mapping[str, str] = {}


def _with_runs(trace: dict[str, object], runs: Sequence[Sequence[str]], links: Mapping[str, str], hover: str) -> dict:
    """``trace`` with its points' run ids as ``customdata`` and ``hover`` (+ the run line when
    there are run ids) as its hover template."""
    data = point_data(runs, links)
    if data is not None:
        trace["customdata"] = data
    trace["hovertemplate"] = hover + (HOVER_RUN if data is not None else "") + "<extra></extra>"
    return trace


def dose_response_figure(
    results: pd.DataFrame,
    findings: Sequence[Finding] = (),
    metric: str = "auprc",
    links: Mapping[str, str] = NO_LINKS,
) -> go.Figure:
    """Test dose-response curves with interval bands and the 0x baseline, one line per arm
    (controls beside the synthetic curve); rows = seed sizes, columns = prevalences. A star marks
    the therapeutic dose and a cross the toxic dose *chosen on validation* (``findings``); a curve
    without them had no significant effect. With several repeats every trial is a small dot
    beside the mean. Points carry their MLflow run ids (``links``: run id -> UI page)."""
    curves = curve_table(results, metric)
    trials = long_metrics(results, metric)
    repeats = curves["n_repeats"].max() > 1
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
                fill = BAND if arm == "synthetic" else "rgba(127,127,127,0.10)"
                fig.add_trace(interval_band(c, fill, f"interval {label} ({tag})"), row=i, col=j)
                fig.add_trace(
                    go.Scatter(
                        **_with_runs(
                            {
                                "x": c["dose"],
                                "y": c["mean"],
                                "mode": "lines+markers",
                                "line": {"color": colour, "dash": "solid" if arm == "synthetic" else "dot"},
                                "name": f"{label}" if first else f"{label} ({tag})",
                                "legendgroup": str(arm),
                                "showlegend": first,
                            },
                            c["runs"],
                            links,
                            f"{label}, {tag}<br>dose %{{x:g}}x<br>test {metric.upper()} %{{y:.3f}}",
                        )
                    ),
                    row=i,
                    col=j,
                )
                if repeats:  # every trial beside the mean, each linked to its own run
                    t = trials[
                        (trials["seed_size"] == seed)
                        & (trials["prevalence"] == prev)
                        & ((trials["arm"] == arm) | (trials["dose"] == 0.0))
                    ]
                    fig.add_trace(
                        go.Scatter(
                            **_with_runs(
                                {
                                    "x": t["dose"],
                                    "y": t["value"],
                                    "mode": "markers",
                                    "marker": {"color": colour, "size": 5, "opacity": 0.45},
                                    "name": f"trials, {label} ({tag})",
                                    "legendgroup": str(arm),
                                    "showlegend": False,
                                },
                                [[r] for r in t["run_id"]] if "run_id" in t.columns else [],
                                links,
                                f"{label}, {tag}, repeat %{{text}}<br>dose %{{x:g}}x"
                                f"<br>test {metric.upper()} %{{y:.3f}}",
                            ),
                            text=t["repeat"].astype(str),
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
                    at = c[c["dose"] == dose]
                    fig.add_trace(
                        go.Scatter(
                            **_with_runs(
                                {
                                    "x": [dose],
                                    "y": [float(at["mean"].iloc[0])],
                                    "mode": "markers",
                                    "marker": {"symbol": symbol, "size": 14, "color": colour_mark},
                                    "name": f"{what} dose, {label} ({tag})",
                                    "showlegend": False,
                                },
                                at["runs"],
                                links,
                                f"{what} dose (chosen on validation), {label}, {tag}<br>dose %{{x:g}}x"
                                f"<br>test {metric.upper()} %{{y:.3f}}",
                            )
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
                        hoverinfo="skip",
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
        title=_title(
            f"test {metric.upper()} dose response",
            "star: therapeutic, x: toxic dose (both chosen on validation); dashed: 0x; bands: intervals",
        ),
        height=320 * len(seeds) + 80,
    )
    return fig


def _where(prevalence: float | None) -> str:
    return "whole set" if prevalence is None else f"prevalence {prevalence:g}"


def gain_figure(
    findings: Sequence[Finding],
    test: Sequence[Gain] = (),
    results: pd.DataFrame | None = None,
    links: Mapping[str, str] = NO_LINKS,
) -> go.Figure:
    """Paired gain over 0x per dose with its interval: validation (filled circles: where the
    decision is made, Bonferroni-adjusted) and, when given, test (open diamonds: reported only);
    rows = seed sizes, columns = the whole held-out set then each prevalence, one colour per arm.
    With ``results`` (``run_id`` column) each point carries the run ids of its dose's trials."""
    curves = [f for f in findings if f.validation]
    if not curves:
        return empty_figure("gain over 0x", "no doses above 0x with per-subject scores")
    seeds = sorted({f.seed_size for f in curves}, key=lambda v: natural_order(pd.Series([v])).iloc[0])
    wheres = sorted({f.prevalence for f in curves}, key=lambda p: -1.0 if p is None else p)
    arms = sorted({f.arm for f in curves}, key=lambda a: (names.ARMS.index(a) if a in names.ARMS else 9, a))
    runs = runs_by(with_cell(results), ["arm", "seed_size", "dose"]) if results is not None else {}
    test_at = {(g.arm, g.seed_size, g.prevalence, g.dose): g for g in test}
    doses = sorted({g.dose for f in curves for g in f.validation})
    step = 0.015 * ((doses[-1] - doses[0]) or 1.0)  # side by side: arms, then validation | test
    n_series = 2 * len(arms)
    fig = make_subplots(
        rows=len(seeds),
        cols=len(wheres),
        shared_xaxes=True,
        subplot_titles=[f"seed {s}, {_where(p)}" for s in seeds for p in wheres],
        vertical_spacing=0.14 / max(len(seeds), 1),
    )
    at = {(f.arm, f.seed_size, f.prevalence): f for f in curves}
    shown: set[str] = set()
    for i, seed in enumerate(seeds, start=1):
        for j, prev in enumerate(wheres, start=1):
            tag = f"seed {seed}, {_where(prev)}"
            for a, arm in enumerate(arms):
                f = at.get((arm, seed, prev))
                if f is None:
                    continue
                label = ARM_LABELS.get(arm, arm)
                tested = [
                    test_at[k] for g in f.validation if (k := (g.arm, g.seed_size, g.prevalence, g.dose)) in test_at
                ]
                for r, (role, gains, symbol) in enumerate(
                    (("validation", list(f.validation), "circle"), ("test", tested, "diamond-open"))
                ):
                    if not gains:
                        continue
                    name = f"{role} gain, {label}"
                    offset = (2 * a + r - (n_series - 1) / 2) * step
                    fig.add_trace(
                        go.Scatter(
                            **_with_runs(
                                {
                                    "x": [g.dose + offset for g in gains],
                                    "y": [g.gain for g in gains],
                                    "error_y": {
                                        "type": "data",
                                        "symmetric": False,
                                        "array": [g.ci_high - g.gain for g in gains],
                                        "arrayminus": [g.gain - g.ci_low for g in gains],
                                    },
                                    "mode": "markers",
                                    "marker": {"color": ARM_COLOURS.get(arm, PALETTE[-1]), "symbol": symbol, "size": 9},
                                    "name": name if name not in shown else f"{name} ({tag})",
                                    "legendgroup": name,
                                    "showlegend": name not in shown,
                                    "text": [
                                        f"{label}, {tag}<br>{role} gain at {g.dose:g}x: {g.text()}"
                                        f"<br>interval level {g.level:.4f} ({g.n_doses} comparison"
                                        f"{'s' if g.n_doses != 1 else ''})"
                                        for g in gains
                                    ],
                                },
                                [runs.get((arm, seed, g.dose), []) for g in gains],
                                links,
                                "%{text}",
                            )
                        ),
                        row=i,
                        col=j,
                    )
                    shown.add(name)
            fig.add_hline(y=0.0, line={"dash": "dash", "color": "grey"}, row=i, col=j)
    fig.update_xaxes(title_text="dose", row=len(seeds))
    fig.update_yaxes(title_text=f"{curves[0].metric.upper()} gain over 0x", col=1)
    fig.update_layout(
        title=_title(
            "gain over 0x, paired on the same subjects",
            "filled: validation (where doses are chosen), open: test (for reference); "
            "intervals Bonferroni-adjusted over each curve's doses",
        ),
        height=300 * len(seeds) + 120,
    )
    return fig


def synthetic_arm(results: pd.DataFrame) -> pd.DataFrame:
    """The trials of the dose curve itself (controls left out)."""
    if names.PARAM_ARM not in results.columns:
        return results
    return results[results[names.PARAM_ARM].fillna("synthetic") == "synthetic"]


def delta_heatmap(results: pd.DataFrame, metric: str = "auprc", links: Mapping[str, str] = NO_LINKS) -> go.Figure:
    """Delta vs 0x (test, descriptive) as a dose x prevalence heatmap, one panel per seed size
    (the synthetic arm; controls are in the dose-response figure). Cells carry their dose's runs."""
    curves = curve_table(synthetic_arm(results), metric)
    seeds = _seeds(curves)
    fig = make_subplots(rows=1, cols=len(seeds), subplot_titles=[f"seed {s}" for s in seeds], shared_yaxes=True)
    span = float(np.nanmax(np.abs(curves["delta"]))) if curves["delta"].notna().any() else 1.0
    for j, seed in enumerate(seeds, start=1):
        cell = curves[curves["seed_size"] == seed]
        c = cell.pivot(index="dose", columns="prevalence", values="delta")
        runs = {(d, p): r for d, p, r in zip(cell["dose"], cell["prevalence"], cell["runs"], strict=True)}
        data = [point_data([runs.get((d, p), ()) for p in c.columns], links) for d in c.index]
        trace = _with_runs(
            {
                "z": c.to_numpy(),
                "x": [f"{p:g}" for p in c.columns],
                "y": [f"{d:g}x" for d in c.index],
                "colorscale": "RdBu",
                "zmid": 0.0,
                "zmin": -span,
                "zmax": span,
                "name": f"delta {metric.upper()} (seed {seed})",
                "showscale": j == len(seeds),
                "texttemplate": "%{z:+.3f}",
            },
            [],
            links,
            f"seed {seed}, dose %{{y}}, prevalence %{{x}}<br>delta {metric.upper()} %{{z:+.3f}}",
        )
        if all(row is not None for row in data):
            trace["customdata"] = data
            trace["hovertemplate"] = str(trace["hovertemplate"]).replace("<extra>", HOVER_RUN + "<extra>")
        fig.add_trace(go.Heatmap(**trace), row=1, col=j)
    fig.update_xaxes(title_text="test prevalence")
    fig.update_yaxes(title_text="dose", col=1)
    fig.update_layout(
        title=_title(f"delta {metric.upper()} vs 0x (test)", "descriptive: significance is in the gain figure")
    )
    return fig


def optimal_dose_figure(
    findings: Sequence[Finding], results: pd.DataFrame | None = None, links: Mapping[str, str] = NO_LINKS
) -> go.Figure:
    """The therapeutic dose chosen on validation vs seed size, one line per arm and prevalence;
    seed sizes without a significant gain are left out and named in the hover text. With
    ``results``, each point carries the runs of its dose's trials."""
    fig = go.Figure()
    runs = runs_by(with_cell(results), ["arm", "seed_size", "dose"]) if results is not None else {}
    groups: dict[tuple[str, float | None], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.arm, f.prevalence), []).append(f)
    wheres = sorted({f.prevalence for f in findings}, key=lambda p: -1.0 if p is None else p)
    dashes = dict(zip(wheres, ("solid", "dash", "dashdot", "longdash"), strict=False))  # arm: colour; set: dash
    for (arm, prev), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        rows = sorted(rows, key=lambda f: natural_order(pd.Series([f.seed_size])).iloc[0])
        chosen = [f for f in rows if f.therapeutic_dose is not None]
        none = [str(f.seed_size) for f in rows if f.therapeutic_dose is None]
        fig.add_trace(
            go.Scatter(
                **_with_runs(
                    {
                        "x": [str(f.seed_size) for f in chosen],
                        "y": [f.therapeutic_dose for f in chosen],
                        "mode": "lines+markers",
                        "line": {"color": ARM_COLOURS.get(arm, PALETTE[-1]), "dash": dashes.get(prev, "dot")},
                        "name": f"{ARM_LABELS.get(arm, arm)}, " + _where(prev),
                        "text": [
                            f.sentence() + (f"<br>no significant gain at seed {', '.join(none)}" if none else "")
                            for f in chosen
                        ],
                    },
                    [runs.get((arm, f.seed_size, f.therapeutic_dose), []) for f in chosen],
                    links,
                    "%{text}",
                )
            )
        )
    fig.update_layout(
        title=_title("therapeutic dose vs seed size", "chosen on validation; no point: no significant gain"),
        xaxis_title="seed size",
        yaxis_title="dose",
    )
    return fig


def auprc_auroc_figure(results: pd.DataFrame, links: Mapping[str, str] = NO_LINKS) -> go.Figure:
    """AUPRC at every prevalence next to AUROC (prevalence-free), vs dose, one line per seed size."""
    results = synthetic_arm(results)
    prevs = prevalences(results)
    cols = [names.metric_name("auprc", p) for p in prevs] + (["auroc"] if "auroc" in results.columns else [])
    titles = [f"AUPRC @ {p:g}" for p in prevs] + (["AUROC"] if "auroc" in results.columns else [])
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=titles)
    frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
    runs = runs_by(frame, ["seed_size", "dose"])
    colours = {seed: PALETTE[k % len(PALETTE)] for k, seed in enumerate(_seeds(frame))}  # one colour per seed size
    for j, col in enumerate(cols, start=1):
        for seed in _seeds(frame):
            g = frame[frame["seed_size"] == seed].groupby("dose", as_index=False)[col].mean()
            fig.add_trace(
                go.Scatter(
                    **_with_runs(
                        {
                            "x": g["dose"],
                            "y": g[col],
                            "mode": "lines+markers",
                            "name": f"{titles[j - 1]} (seed {seed})",
                            "line": {"color": colours[seed]},
                            "legendgroup": str(seed),
                            "showlegend": j == 1,
                        },
                        [runs.get((seed, d), []) for d in g["dose"]],
                        links,
                        f"seed {seed}, dose %{{x:g}}x<br>{titles[j - 1]} %{{y:.3f}}",
                    )
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
        return empty_figure("realism", "no synthetic data in this study")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[t for _, t in names])
    for j, (col, title) in enumerate(names, start=1):
        g = rows.groupby("domain")[col].agg(["mean", "std"]).reset_index()
        fig.add_trace(
            go.Bar(
                x=g["domain"],
                y=g["mean"],
                error_y={"type": "data", "array": g["std"].fillna(0.0)},
                marker_color=LINE,
                name=title,
            ),
            row=1,
            col=j,
        )
    fig.update_layout(title=_title("realism of the synthetic pools", "mean over trials, bars: sd"), showlegend=False)
    return fig


def band_energy_figure(results: pd.DataFrame) -> go.Figure:
    """Wavelet band statistics (paper Fig. 4): LL std and LH/HL/HH variance, real vs synthetic."""
    rows = _generator_rows(results)
    bands = [b for b in ("ll_std", "lh_var", "hl_var", "hh_var") if f"real_{b}" in rows.columns]
    if rows.empty or not bands:
        return empty_figure("wavelet band energies", "no synthetic data in this study")
    fig = make_subplots(rows=1, cols=len(bands), subplot_titles=[b.replace("_", " ").upper() for b in bands])
    for j, band in enumerate(bands, start=1):
        x = ["real"] + [f"synthetic ({d})" for d in sorted(rows["domain"].unique())]
        y = [float(rows[f"real_{band}"].mean())] + [
            float(rows.loc[rows["domain"] == d, f"synthetic_{band}"].mean()) for d in sorted(rows["domain"].unique())
        ]
        fig.add_trace(go.Bar(x=x, y=y, name=band, marker_color=["grey"] + [LINE] * (len(x) - 1)), row=1, col=j)
    fig.update_layout(title=_title("Haar band statistics of lesion slices", "real vs synthetic"), showlegend=False)
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


#: Gallery outline colours: the mask the detector trains with (real mask, UCMT pseudo-label) and
#: the conditioning mask the generator was asked for (MaskVAE3D draw).
MASK_COLOUR, CONDITION_COLOUR = "#e41a1c", "#00e5ff"

Panel = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _outline(mask: np.ndarray, colour: str, name: str) -> go.Contour:
    return go.Contour(
        z=mask[::-1].astype(float),
        showscale=False,
        contours={"start": 0.5, "end": 0.5, "coloring": "lines"},
        colorscale=[[0.0, colour], [1.0, colour]],  # "lines" colouring ignores line.color
        line={"color": colour, "width": 2},
        name=name,
        hoverinfo="skip",
    )


def gallery_figure(panels: Mapping[str, Panel], per_row: int = 4) -> go.Figure:
    """Slices with their masks outlined: ``panels[row title] = (images (N, H, W), masks (N, H, W))``
    or ``(images, masks, conditions (N, H, W))``: synthetic slices show the conditioning mask
    (cyan) beside the UCMT pseudo-label (red) the detector trained with."""
    titles = list(panels)
    n = min(per_row, min((len(panels[t][0]) for t in titles), default=0))
    if not titles or n == 0:
        return empty_figure("samples", "no samples")
    fig = make_subplots(
        rows=len(titles),
        cols=n,
        subplot_titles=[f"{t} {k}" for t in titles for k in range(n)],
        horizontal_spacing=0.01,
        vertical_spacing=0.06,
    )
    with_condition = False
    for i, title in enumerate(titles, start=1):
        panel: tuple[Any, ...] = tuple(panels[title])
        images, masks = (np.asarray(a, dtype=np.float32) for a in panel[:2])  # plotly has no float16
        condition = panel[2] if len(panel) > 2 else None
        conditions = None if condition is None else np.asarray(condition, dtype=np.float32)
        for k in range(n):
            fig.add_trace(
                go.Heatmap(z=images[k][::-1], colorscale="gray", showscale=False, name=f"{title} {k}", zmin=-1, zmax=1),
                row=i,
                col=k + 1,
            )
            if conditions is not None and conditions[k].any():
                fig.add_trace(
                    _outline(conditions[k], CONDITION_COLOUR, f"{title} {k} conditioning mask"), row=i, col=k + 1
                )
                with_condition = True
            if masks[k].any():
                label = "pseudo-label" if conditions is not None else "mask"
                fig.add_trace(_outline(masks[k], MASK_COLOUR, f"{title} {k} {label}"), row=i, col=k + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    for k in range(1, len(titles) * n + 1):  # every slice square: each y axis scaled to its own x axis
        fig.layout[f"yaxis{'' if k == 1 else k}"].scaleanchor = f"x{'' if k == 1 else k}"
    legend = "red: mask / UCMT pseudo-label, cyan: conditioning mask" if with_condition else "red: mask"
    fig.update_layout(
        title=_title("real vs synthetic lesion slices", legend), height=220 * len(titles) + 100, plot_bgcolor="white"
    )
    return fig


def saliency_figure(results: pd.DataFrame, links: Mapping[str, str] = NO_LINKS) -> go.Figure:
    """Share of the detector's deep attention inside the lesion (test lesion slices) vs dose."""
    results = synthetic_arm(results)
    if "attention_overlap" not in results.columns:
        return empty_figure("saliency overlap", "no attention_overlap metric")
    frame = results.assign(seed_size=results["seed_size"] if "seed_size" in results.columns else "all")
    runs = runs_by(frame, ["seed_size", "dose"])
    fig = go.Figure()
    for seed in _seeds(frame):
        g = frame[frame["seed_size"] == seed].groupby("dose", as_index=False)["attention_overlap"].mean()
        fig.add_trace(
            go.Scatter(
                **_with_runs(
                    {"x": g["dose"], "y": g["attention_overlap"], "mode": "lines+markers", "name": f"seed {seed}"},
                    [runs.get((seed, d), []) for d in g["dose"]],
                    links,
                    f"seed {seed}, dose %{{x:g}}x<br>overlap %{{y:.3f}}",
                )
            )
        )
    fig.update_layout(
        title="attention inside the lesion (saliency overlap) vs dose", xaxis_title="dose", yaxis_title="overlap"
    )
    return fig


def _trial_runs(results: pd.DataFrame) -> list[list[str]]:
    return [[str(r)] for r in results["run_id"]] if "run_id" in results.columns else []


def optimisation_history_figure(
    results: pd.DataFrame, objective: str, maximise: bool = True, links: Mapping[str, str] = NO_LINKS
) -> go.Figure:
    """Objective per trial in completion order with the running best (Optuna-style history)."""
    if objective not in results.columns:
        return empty_figure("optimisation history", f"no {objective} column")
    values = results[objective].astype(float).to_numpy()
    best = np.maximum.accumulate(values) if maximise else np.minimum.accumulate(values)
    x = np.arange(len(values))
    trials = results["trial"].astype(str) if "trial" in results.columns else pd.Series(x.astype(str))
    fig = go.Figure(
        [
            go.Scatter(
                **_with_runs(
                    {"x": x, "y": values, "mode": "markers", "name": objective, "text": trials},
                    _trial_runs(results),
                    links,
                    f"%{{text}}<br>{objective} %{{y:.4g}}",
                )
            ),
            go.Scatter(x=x, y=best, mode="lines", name="best so far", hoverinfo="skip"),
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
        return empty_figure("parameter importance", "needs >= 2 trials and a varying sampled parameter")
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


def pareto_figure(
    results: pd.DataFrame, x: str = "frechet_distance", y: str = "mask_dice", links: Mapping[str, str] = NO_LINKS
) -> go.Figure:
    """Guidance tuning: every configuration's realism (x, lower is better) vs mask fidelity (y,
    higher is better); marker size grows with sampling cost (``nfe``); the 2-D Pareto front of
    (x down, y up) is drawn as a line."""
    if x not in results.columns or y not in results.columns:
        return empty_figure("Pareto front", f"needs {x} and {y}")
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
                **_with_runs(
                    {
                        "x": rows[x],
                        "y": rows[y],
                        "mode": "markers",
                        "marker": {"size": 6 + 14 * cost / max(float(cost.max()), 1.0)},
                        "text": rows["trial"] if "trial" in rows.columns else [""] * len(rows),
                        "name": "configurations",
                    },
                    _trial_runs(rows),
                    links,
                    f"%{{text}}<br>{x} %{{x:.4g}}<br>{y} %{{y:.4g}}",
                )
            ),
            go.Scatter(x=rows.loc[front, x], y=rows.loc[front, y], mode="lines", name="Pareto front"),
        ]
    )
    fig.update_layout(title=f"guidance tuning: {y} vs {x} (marker size: sampling cost)", xaxis_title=x, yaxis_title=y)
    return fig
