"""Two or more studies on the same axes: dose curves and validation gains overlaid."""

from __future__ import annotations

import pytest
from salient.dashboards.compare import CompareInput, compare_dose_response, compare_gains
from salient.dashboards.significance import dose_findings
from study_data import NULL_LIFTS, make_study

SETTINGS = {"n_boot": 300, "draws": 3, "seed": 0}


def test_curves_of_two_studies_share_panels_and_axes() -> None:
    wavelet, _ = make_study()  # seed sizes 6 and 10
    pixel, _ = make_study(seed_sizes=(6,), lifts=NULL_LIFTS, noise=0.3)  # seed 6 only
    fig = compare_dose_response({"wavelet": CompareInput(wavelet), "pixel": CompareInput(pixel)})
    assert [a.text for a in fig.layout.annotations] == [
        "seed 6, prevalence 0.05",
        "seed 6, prevalence 0.2",
        "seed 10, prevalence 0.05",
        "seed 10, prevalence 0.2",
    ]
    lines = {t.name: t for t in fig.data if not t.name.startswith("interval")}
    assert set(lines) == {
        "wavelet",
        "wavelet (seed 6, p 0.2)",
        "wavelet (seed 10, p 0.05)",
        "wavelet (seed 10, p 0.2)",
        "pixel",
        "pixel (seed 6, p 0.2)",
    }  # a study without seed size 10 is absent from its panels
    # both studies' seed-6, prevalence-0.05 curves are in the first panel, at their trials' values (one repeat)
    assert lines["wavelet"].xaxis == lines["pixel"].xaxis == "x" and lines["pixel"].yaxis == "y"
    expected = pixel.set_index("dose")["auprc_p0.05"]
    assert list(lines["pixel"].y) == pytest.approx([expected[d] for d in lines["pixel"].x])
    # shared axes: every panel's axis follows one (plotly anchors them on the bottom-left panel)
    for axis in ("xaxis", "yaxis"):
        matches = [fig.layout[axis + ("" if k == 1 else str(k))].matches for k in (1, 2, 3, 4)]
        assert matches.count(None) == 1 and len(set(matches) - {None}) == 1
    with pytest.raises(ValueError, match=r"two or more studies to compare, got 1: \['wavelet'\]"):
        compare_dose_response({"wavelet": CompareInput(wavelet)})


def test_gains_of_two_studies_fill_only_the_significant_points() -> None:
    clear, clear_scores = make_study(seed_sizes=(6,))
    null, null_scores = make_study(seed_sizes=(6,), lifts=NULL_LIFTS, noise=0.3)
    studies = {
        "clear": CompareInput(clear, dose_findings(clear, clear_scores, [None, 0.05], **SETTINGS)),
        "null": CompareInput(null, dose_findings(null, null_scores, [None, 0.05], **SETTINGS)),
    }
    fig = compare_gains(studies)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["clear", "null"]
    filled = {name: [c != "white" for c in t.marker.color] for name, t in by_name.items()}
    # clear (seed 6 of LIFTS): the 2x gain and the 4x loss are significant, so filled; null: nothing is
    assert filled["clear"][1:] == [True, True] and filled["null"] == [False, False, False]
    assert list(by_name["clear"].x) == pytest.approx([1 - 0.03, 2 - 0.03, 4 - 0.03])  # beside the other study
    assert list(by_name["clear"].y) == [g.gain for g in studies["clear"].findings[0].validation]  # whole set
    assert "whole set" in by_name["clear"].text[1] and "(gain)" in by_name["clear"].text[1]
