"""Figures contain the traces they promise; views and the report hold every figure and table."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
from plotly.offline import get_plotlyjs
from salient.dashboards import figures
from salient.dashboards.report import render_report
from salient.dashboards.significance import dose_findings
from salient.dashboards.views import build_view
from study_data import STUDY_PARAMS, make_results, make_study

SETTINGS = {"n_boot": 300, "draws": 3, "seed": 0}


def _names(fig: object) -> list[str]:
    return [t.name for t in fig.data]  # type: ignore[attr-defined]


def test_dose_response_has_band_curve_baseline_controls_and_validated_markers() -> None:
    results, scores = make_study(controls=True)
    findings = dose_findings(results, scores, [0.05, 0.2], **SETTINGS)
    fig = figures.dose_response_figure(results, findings)
    names = _names(fig)
    for seed in (6, 10):
        for p in ("0.05", "0.2"):
            tag = f"seed {seed}, p {p}"
            assert f"interval synthetic pairs ({tag})" in names and f"0x baseline ({tag})" in names
            assert f"interval real control ({tag})" in names
    star = next(t for t in fig.data if t.name == "therapeutic dose, synthetic pairs (seed 6, p 0.2)")
    assert list(star.x) == [2.0]  # the known gain of the hand-made study, chosen on validation
    toxic = next(t for t in fig.data if t.name == "toxic dose, synthetic pairs (seed 6, p 0.2)")
    assert list(toxic.x) == [4.0]
    assert len(fig.layout.annotations) == 4  # one subplot title per (seed size, prevalence)
    # no findings (no per-subject scores): curves without claims
    assert not any("dose," in n for n in _names(figures.dose_response_figure(results)))


def test_delta_heatmap_is_dose_by_prevalence_per_seed_size() -> None:
    fig = figures.delta_heatmap(make_results())
    assert _names(fig) == ["delta AUPRC (seed 6)", "delta AUPRC (seed 10)"]
    heat = fig.data[0]
    assert list(heat.y) == ["0x", "1x", "2x", "4x"] and list(heat.x) == ["0.05", "0.2"]
    assert np.allclose(np.asarray(heat.z)[0], 0.0)  # 0x minus 0x


def test_other_figures_have_their_traces() -> None:
    res, scores = make_study()
    findings = dose_findings(res, scores, [0.05, 0.2], **SETTINGS)
    optimum = figures.optimal_dose_figure(findings)
    assert _names(optimum) == ["synthetic pairs, prevalence 0.05", "synthetic pairs, prevalence 0.2"]
    assert list(optimum.data[1].y) == [2.0, 1.0]  # seed 6: 2x, seed 10: 1x (the known answer)
    gain = figures.gain_figure(findings)
    names = _names(gain)  # seed sizes down, prevalences across; the legend names each series once
    assert names[0] == "validation gain, synthetic pairs"
    assert "validation gain, synthetic pairs (seed 10, prevalence 0.2)" in names
    first = next(f for f in findings if f.seed_size == 6 and f.prevalence == 0.05)
    assert list(gain.data[0].y) == [g.gain for g in first.validation]  # the findings' gains, drawn as given
    assert [round(x) for x in gain.data[0].x] == [1, 2, 4]  # at their doses (offset to sit beside each other)
    names = _names(figures.auprc_auroc_figure(res))
    assert "AUROC (seed 10)" in names and "AUPRC @ 0.05 (seed 6)" in names
    realism = figures.realism_figure(res)
    assert _names(realism) == ["mask Dice", "MS-SSIM", "Frechet distance"]
    assert list(realism.data[0].x) == ["wavelet"]
    band = figures.band_energy_figure(res)
    assert _names(band) == ["ll_std", "hh_var"] and list(band.data[0].x) == ["real", "synthetic (wavelet)"]
    assert _names(figures.saliency_figure(res)) == ["seed 6", "seed 10"]
    hist = figures.hu_histogram_figure(np.array([10.0, 20.0]), np.array([15.0]))
    assert _names(hist) == ["real", "synthetic"]
    gallery = figures.gallery_figure(
        {"real": (np.zeros((2, 8, 8)), np.ones((2, 8, 8))), "synthetic": (np.zeros((3, 8, 8)), np.zeros((3, 8, 8)))}
    )
    assert _names(gallery) == ["real 0", "real 0 mask", "real 1", "real 1 mask", "synthetic 0", "synthetic 1"]
    assert gallery.layout.title.subtitle.text == "red: mask"  # no conditioning masks in this preview: none promised
    assert [gallery.layout[f"yaxis{k}"].scaleanchor for k in (2, 3)] == ["x2", "x3"]  # every slice square


def test_gallery_outlines_conditioning_mask_and_pseudo_label_in_two_colours() -> None:
    condition = np.zeros((2, 8, 8))
    condition[:, 2:5, 2:5] = 1
    label = np.zeros((2, 8, 8))
    label[:, 3:6, 3:6] = 1
    fig = figures.gallery_figure({"synthetic": (np.zeros((2, 8, 8)), label, condition)})
    assert _names(fig) == [
        "synthetic 0",
        "synthetic 0 conditioning mask",
        "synthetic 0 pseudo-label",
        "synthetic 1",
        "synthetic 1 conditioning mask",
        "synthetic 1 pseudo-label",
    ]
    outlines = {t.name: t.line.color for t in fig.data if t.type == "contour"}
    assert outlines["synthetic 0 conditioning mask"] == figures.CONDITION_COLOUR
    assert outlines["synthetic 0 pseudo-label"] == figures.MASK_COLOUR != figures.CONDITION_COLOUR
    # drawn upside down like the image (row 0 at the bottom): the outlined mask is the given one, flipped
    contour = next(t for t in fig.data if t.name == "synthetic 0 conditioning mask")
    assert np.array_equal(np.asarray(contour.z), condition[0][::-1])
    # the view passes preview.npz's synthetic_condition through
    preview = {"synthetic_image": np.zeros((2, 8, 8)), "synthetic_mask": label, "synthetic_condition": condition}
    view = build_view(make_results(), preview=preview)
    assert "synthetic 0 conditioning mask" in _names(view.figures["gallery"])


def test_optimisation_history_and_importance() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 12)
    res = pd.DataFrame({"diffusion.guidance.s_mask": x, "detector.lr": rng.uniform(0, 1, 12), "auprc": 2 * x})
    hist = figures.optimisation_history_figure(res, "auprc")
    assert _names(hist) == ["auprc", "best so far"]
    assert np.all(np.diff(hist.data[1].y) >= 0)
    imp = figures.param_importance_figure(res, "auprc", ["diffusion.guidance.s_mask", "detector.lr"])
    bars = dict(zip(imp.data[0].y, imp.data[0].x, strict=True))
    assert bars["diffusion.guidance.s_mask"] > bars["detector.lr"]  # the objective depends only on s_mask


def test_a_study_without_synthetic_data_still_renders() -> None:
    res = make_results(doses=(0.0,)).drop(columns=["n_added_slices"])
    view = build_view(res)
    assert "dose-response" in view.figures
    assert view.figures["realism"].layout.annotations[0].text == "no synthetic data in this study"
    assert build_view(pd.DataFrame()).notes == ["no finished trials yet"]


def test_view_and_report_hold_every_figure_and_table() -> None:
    preview = {
        "real_image": np.zeros((2, 8, 8), np.float16),
        "real_mask": np.ones((2, 8, 8), np.uint8),
        "synthetic_image": np.full((2, 8, 8), 0.5, np.float16),
        "synthetic_mask": np.ones((2, 8, 8), np.uint8),
        "hu_window": np.array([-160.0, 240.0], np.float32),
    }
    view = build_view(*make_study()[:1], STUDY_PARAMS, preview, make_study()[1])
    assert set(view.figures) >= {"dose-response", "gain", "delta-heatmap", "optimal-dose", "gallery", "hu-histogram"}
    hu = view.figures["hu-histogram"].data
    assert float(hu[0].x[0]) == -160.0 + 0.5 * 400.0 and float(hu[1].x[0]) == -160.0 + 0.75 * 400.0
    assert "Table 1 (test AUPRC [interval], delta vs 0x, AUROC)" in view.tables
    assert any("therapeutic dose 2x" in f.sentence() for f in view.findings)
    ablated = make_results().assign(**{"detector.mask_guidance": True})
    unguided = ablated.assign(**{"detector.mask_guidance": False, "auprc_p0.05": ablated["auprc_p0.05"] - 0.1})
    both = build_view(pd.concat([ablated, unguided], ignore_index=True))
    table = both.tables["mask-guidance ablation (mean AUPRC, guided - unguided)"]
    assert table.loc[table["prevalence"] == 0.05, "difference"].round(6).eq(0.1).all()
    html = render_report(view, "study <x>", {"run": "abc"})
    assert "<h2>Findings</h2>" in html and "therapeutic dose 2x" in html
    # the answer first: findings before the first figure, figures before the first table
    assert html.index('id="findings"') < html.index('class="plotly-graph-div"') < html.index('<details class="table">')
    assert html.count('<details class="table">') == len(view.tables)  # collapsed, each with its CSV
    table1 = view.tables["Table 1 (test AUPRC [interval], delta vs 0x, AUROC)"]
    uri = re.search(r'download="table_1_test_auprc_interval_delta_vs_0x_auroc.csv" href="([^"]+)"', html)
    assert uri is not None and uri.group(1).startswith("data:text/csv;charset=utf-8;base64,")
    csv = base64.b64decode(uri.group(1).split(",", 1)[1]).decode("utf-8")
    assert csv.splitlines()[0] == ",".join(table1.columns) and len(csv.splitlines()) == len(table1) + 1
    assert html.count('class="plotly-graph-div"') == len(view.figures)
    assert "<title>study &lt;x&gt;</title>" in html
    outside_bundle = html.replace(get_plotlyjs(), "")
    assert get_plotlyjs() in html and not re.search(r"<script[^>]*\bsrc=", outside_bundle)  # inline: offline


def test_a_guidance_tuning_search_shows_pareto_history_and_importance() -> None:
    rng = np.random.default_rng(1)
    s_mask = rng.uniform(0.5, 4.0, 10)
    res = pd.DataFrame(
        {
            "trial": [f"guidance-{i:03d}" for i in range(10)],
            "diffusion.guidance.s_mask": s_mask,
            "diffusion.guidance.sampling_steps": rng.choice([5, 10, 20], 10),
            "mask_dice": 0.5 + 0.05 * s_mask,
            "frechet_distance": 10 - s_mask,
            "nfe": 30.0,
            "score": 0.1 * s_mask,
        }
    )
    res.attrs["params"] = ["diffusion.guidance.s_mask", "diffusion.guidance.sampling_steps"]
    view = build_view(res, {"objective": "score", "mode": "max"})
    assert list(view.figures) == ["pareto", "history", "importance"]
    front = view.figures["pareto"].data[1]
    assert list(front.x) == sorted(front.x) and np.all(np.diff(front.y) > 0)
    assert view.notes == []
