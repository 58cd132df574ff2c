"""From a point to its MLflow run: UI addresses, and the run ids every figure's points carry."""

from __future__ import annotations

import pandas as pd
import pytest
from salient.dashboards.links import normalise_ui_url, run_url
from salient.dashboards.training_figure import training_curves_figure
from salient.dashboards.views import build_view
from study_data import STUDY_PARAMS, make_study

UI = "http://ui.test:5000"


def test_run_url_follows_the_mlflow_ui_routes() -> None:
    # MLflow's UI is a hash router: #/experiments/<experiment id>/runs/<run id>
    assert run_url("http://127.0.0.1:5000/", "7", "abc") == "http://127.0.0.1:5000/#/experiments/7/runs/abc"
    assert normalise_ui_url(" https://host.test/mlflow/ ") == "https://host.test/mlflow"
    for bad in ("127.0.0.1:5000", "ftp://host.test", "http://", "http://host.test/#/x", "http://host.test?q=1"):
        with pytest.raises(ValueError, match=r"mlflow_ui .* got '"):
            normalise_ui_url(bad)


def _study_with_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    results, scores = make_study(controls=True)
    return results.assign(run_id="run-" + results["trial"], experiment_id="7"), scores


def _trace(fig: object, name: str) -> object:
    return next(t for t in fig.data if t.name == name)  # type: ignore[attr-defined]


def test_every_point_carries_its_run_and_ui_page() -> None:
    results, scores = _study_with_runs()
    view = build_view(results, STUDY_PARAMS, scores=scores, mlflow_ui=UI + "/")
    page = f"{UI}/#/experiments/7/runs/"
    curve = _trace(view.figures["dose-response"], "synthetic pairs")  # first panel: seed 6, prevalence 0.05
    assert [c[0] for c in curve.customdata] == ["run-s6_d0", "run-s6_d1", "run-s6_d2", "run-s6_d4"]  # type: ignore[attr-defined]
    assert curve.customdata[2][1] == page + "run-s6_d2"  # type: ignore[attr-defined]
    assert "run %{customdata[0]}" in curve.hovertemplate  # type: ignore[attr-defined]
    control = _trace(view.figures["dose-response"], "real control")  # starts at the shared 0x trial
    assert [c[0] for c in control.customdata] == ["run-s6_d0", "run-s6_d1_real", "run-s6_d2_real", "run-s6_d4_real"]  # type: ignore[attr-defined]
    star = _trace(view.figures["dose-response"], "therapeutic dose, synthetic pairs (seed 6, p 0.05)")
    assert [list(c) for c in star.customdata] == [["run-s6_d2", page + "run-s6_d2"]]  # type: ignore[attr-defined]
    gain = _trace(view.figures["gain"], "validation gain, synthetic pairs")  # seed 6, whole set
    assert [c[0] for c in gain.customdata] == ["run-s6_d1", "run-s6_d2", "run-s6_d4"]  # type: ignore[attr-defined]
    heat = view.figures["delta-heatmap"].data[1]  # seed 10: rows = doses 0, 1, 2, 4; columns = prevalences
    assert list(heat.customdata[2][1]) == ["run-s10_d2", page + "run-s10_d2"]
    optimum = _trace(view.figures["optimal-dose"], "synthetic pairs, whole set")
    assert [c[0] for c in optimum.customdata] == ["run-s6_d2", "run-s10_d1"]  # type: ignore[attr-defined]
    for fig_id in ("auprc-auroc", "saliency"):
        assert view.figures[fig_id].data[0].customdata[0][0] == "run-s6_d0"
    trials = view.tables["trials (MLflow runs)"]
    assert trials.loc[trials["trial"] == "s10_d1", "MLflow UI"].item() == page + "run-s10_d1"


def test_without_a_ui_address_points_show_the_run_id_and_without_run_ids_nothing() -> None:
    results, _ = _study_with_runs()
    curve = _trace(build_view(results, STUDY_PARAMS).figures["dose-response"], "synthetic pairs")
    assert list(curve.customdata[2]) == ["run-s6_d2", ""]  # type: ignore[attr-defined]
    bare = _trace(build_view(make_study()[0]).figures["dose-response"], "synthetic pairs")
    assert bare.customdata is None and "customdata" not in bare.hovertemplate  # type: ignore[attr-defined]


def test_repeats_draw_each_trial_beside_the_mean_linked_to_its_own_run() -> None:
    results, _ = make_study(seed_sizes=(6,))
    twice = pd.concat([results, results.assign(repeat=1, trial=results["trial"] + "_r1")], ignore_index=True)
    twice["auprc_p0.05"] += twice["repeat"] * 0.1
    twice = twice.assign(run_id="run-" + twice["trial"])
    fig = build_view(twice).figures["dose-response"]
    mean = _trace(fig, "synthetic pairs")
    assert mean.customdata[2][0] == "run-s6_d2, run-s6_d2_r1"  # type: ignore[attr-defined]
    dots = _trace(fig, "trials, synthetic pairs (seed 6, p 0.05)")
    at_2x = [(c[0], y) for c, x, y in zip(dots.customdata, dots.x, dots.y, strict=True) if x == 2.0]  # type: ignore[attr-defined]
    base = results.loc[results["trial"] == "s6_d2", "auprc_p0.05"].item()
    assert at_2x == [("run-s6_d2", pytest.approx(base)), ("run-s6_d2_r1", pytest.approx(base + 0.1))]


def _histories() -> pd.DataFrame:
    rows = []
    for trial, run in (("a", "rA"), ("b", "rB")):
        rows += [(run, trial, "mask_vae", step, v) for step, v in enumerate([3.0, 2.0, 1.5])]  # shared: one training
    rows += [("rA", "a", "detector", step, v) for step, v in enumerate([1.0, 0.8])]
    rows += [("rB", "b", "detector", step, v) for step, v in enumerate([0.9, 0.5])]
    return pd.DataFrame(rows, columns=["run_id", "trial", "stage", "step", "value"])


def test_training_curves_one_panel_per_stage_and_a_shared_history_drawn_once() -> None:
    histories = _histories().iloc[::-1]  # any row order
    fig = training_curves_figure(histories, {"rA": "http://ui/a"})
    assert [a.text for a in fig.layout.annotations] == ["mask_vae", "detector"]  # pipeline order
    assert [t.name for t in fig.data] == ["a (+1 sharing it)", "a", "b"]
    shared = fig.data[0]
    assert list(shared.y) == [3.0, 2.0, 1.5] and list(shared.customdata[0]) == ["rA, rB", "http://ui/a"]
    assert list(fig.data[2].x) == [0, 1] and list(fig.data[2].y) == [0.9, 0.5]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"  # every loss positive
    negative = _histories().assign(value=lambda f: f["value"] - 2.0)  # e.g. a log-likelihood loss
    assert training_curves_figure(negative).layout.yaxis.type != "log"
    with pytest.raises(ValueError, match=r"lack column\(s\) \['step'\]"):
        training_curves_figure(histories.drop(columns="step"))
    view = build_view(make_study()[0], histories=_histories())
    assert list(view.figures).index("training-curves") > list(view.figures).index("dose-response")


def test_cli_refuses_a_ui_address_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    from salient.platform.cli import main

    for command in (["dashboard"], ["report", "study.yaml", "-o", "r.html"]):
        with pytest.raises(SystemExit) as info:
            main([*command, "--mlflow-ui", "localhost:5000"])
        assert info.value.code == 2
        assert "--mlflow-ui: must be http(s)://HOST[:PORT][/PATH], got 'localhost:5000'" in capsys.readouterr().err
