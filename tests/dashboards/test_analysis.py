"""Dose-response tables on hand-made curves (descriptive: significance is tested in test_significance)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from salient.dashboards.analysis import (
    ablation_table,
    best_per_cell,
    curve_table,
    dose_shift,
    long_metrics,
    prevalences,
    table1,
    table1_markdown,
    tvr_gains,
)


def _results(curves: dict[tuple[int, float], list[float]], doses: list[float], half_ci: float = 0.02) -> pd.DataFrame:
    """One trial per (seed_size, dose); ``curves[(seed, prevalence)]`` lists AUPRC by dose."""
    rows: dict[tuple[int, float], dict[str, float]] = {}
    for (seed, prev), values in curves.items():
        for dose, v in zip(doses, values, strict=True):
            row = rows.setdefault((seed, dose), {"seed_size": seed, "dose": dose, "repeat": 0, "auroc": 0.7})
            row[f"auprc_p{prev:g}"] = v
            row[f"auprc_p{prev:g}_ci_low"] = v - half_ci
            row[f"auprc_p{prev:g}_ci_high"] = v + half_ci
    return pd.DataFrame(list(rows.values()))


DOSES = [0.0, 1.0, 2.0, 4.0, 8.0]


def test_curves_with_controls_share_the_0x_point() -> None:
    df = _results({(6, 0.05): [0.30, 0.41, 0.43, 0.35, 0.25]}, DOSES)
    controls = df[df["dose"] > 0].assign(arm="real")
    controls["auprc_p0.05"] += 0.1
    curves = curve_table(pd.concat([df, controls], ignore_index=True))
    real = curves[curves["arm"] == "real"].set_index("dose")
    synthetic = curves[curves["arm"] == "synthetic"].set_index("dose")
    assert list(real.index) == DOSES and real.loc[0.0, "mean"] == synthetic.loc[0.0, "mean"] == pytest.approx(0.30)
    assert real.loc[2.0, "delta"] == pytest.approx(0.23) and synthetic.loc[2.0, "delta"] == pytest.approx(0.13)


def test_repeats_give_t_intervals_paired_deltas_and_optimum_stability() -> None:
    rows = []
    for repeat, shift in enumerate([0.0, 0.02, -0.02]):
        for dose, v in zip([0.0, 1.0, 2.0], [0.30, 0.40, 0.35], strict=True):
            best_here = v + shift + (0.1 if (repeat == 2 and dose == 2.0) else 0.0)
            rows.append({"seed_size": 6, "dose": dose, "repeat": repeat, "auprc_p0.1": best_here})
    df = pd.DataFrame(rows)
    curves = curve_table(df).set_index("dose")
    assert curves.loc[1.0, "n_repeats"] == 3
    assert curves.loc[1.0, "mean"] == pytest.approx(0.40)
    assert curves.loc[1.0, "delta"] == pytest.approx(0.10)  # paired by repeat: the shift cancels
    sd = np.std([0.40, 0.42, 0.38], ddof=1)
    assert curves.loc[1.0, "ci_high"] - curves.loc[1.0, "mean"] == pytest.approx(4.302653 * sd / np.sqrt(3), rel=1e-5)


def test_dose_shift_between_seed_sizes_uses_the_chosen_doses() -> None:
    from salient.dashboards.significance import Finding, Gain

    def finding(seed: int, prev: float, dose: float | None) -> Finding:
        chosen = (
            None
            if dose is None
            else Gain("synthetic", seed, prev, dose, "validation", "auprc", 0.1, 0.05, 0.15, 0.99, 4, 1, 50)
        )
        return Finding("synthetic", seed, prev, "auprc", (), chosen, chosen, None, None)

    shift = dose_shift([finding(25, 0.05, 4.0), finding(50, 0.05, 2.0), finding(25, 0.2, None), finding(50, 0.2, 2.0)])
    got = {(r.prevalence, r.seed_size): (r.therapeutic_dose, r.shift) for r in shift.itertuples()}
    assert got[(0.05, 25)] == (4.0, 0.0) and got[(0.05, 50)] == (2.0, -2.0)
    assert np.isnan(got[(0.2, 25)][0]) and np.isnan(got[(0.2, 50)][1])  # no significant gain at 25: no shift
    assert prevalences(_results({(6, 0.05): [0.3], (6, 0.2): [0.4]}, [0.0])) == [0.05, 0.2]


def test_table1_has_a_row_per_seed_and_dose_and_a_markdown_twin() -> None:
    df = _results({(6, 0.05): [0.30, 0.41, 0.43, 0.35, 0.25], (10, 0.05): [0.5, 0.5, 0.5, 0.5, 0.5]}, DOSES)
    table = table1(df)
    assert len(table) == 10
    assert list(table.columns) == ["arm", "seed_size", "dose", "AUPRC@0.05", "dAUPRC@0.05", "AUROC"]
    first = table.iloc[2]  # seed 6, dose 2
    assert first["AUPRC@0.05"] == "0.430 [0.410, 0.450]" and first["dAUPRC@0.05"] == "+0.130"
    md = table1_markdown(table)
    assert md.splitlines()[0].startswith("| arm | seed_size | dose | AUPRC@0.05")
    assert len(md.splitlines()) == 12


def test_tvr_gains_and_ablation() -> None:
    df = pd.DataFrame(
        {
            "seed_size": [6, 6, 6, 6],
            "dose": [0.0, 1.0, 0.0, 1.0],
            "detector.mask_guidance": [True, True, False, False],
            "auprc_p0.1": [0.3, 0.5, 0.3, 0.35],
            "auprc_tvr_small": [0.2, 0.4, 0.2, 0.3],
        }
    )
    gains = tvr_gains(df).set_index(["dose", "stratum"])
    assert gains.loc[(1.0, "small"), "delta"] == pytest.approx(0.15)  # mean over guided/unguided
    abl = ablation_table(df).set_index("dose")
    assert abl.loc[1.0, "difference"] == pytest.approx(0.15)
    assert ablation_table(df.drop(columns="detector.mask_guidance")).empty


def test_bad_input_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        long_metrics(pd.DataFrame({"auprc_p0.1": [0.3]}))
    with pytest.raises(ValueError, match="no auprc_p"):
        long_metrics(pd.DataFrame({"dose": [0.0]}))
    with pytest.raises(ValueError, match="metric must be"):
        long_metrics(pd.DataFrame({"dose": [0.0]}), metric="f1")


def test_several_trials_per_cell_are_refused_or_reduced_to_the_best() -> None:
    df = pd.DataFrame(
        {
            "seed_size": [6, 6, 6, 6],
            "dose": [0.0, 0.0, 1.0, 1.0],
            "detector.lr": [1e-3, 1e-4, 1e-3, 1e-4],
            "auprc_p0.1": [0.3, 0.2, 0.25, 0.5],
        }
    )
    df["val_auprc_p0.1"] = [0.2, 0.3, 0.25, 0.4]  # selection sees validation only
    with pytest.raises(ValueError, match="several trials share a"):
        curve_table(df)
    best = best_per_cell(df, "val_auprc_p0.1")
    assert best["detector.lr"].tolist() == [1e-4, 1e-4]  # not the test-best 1e-3 at 0x
    with pytest.raises(ValueError, match="validation metrics"):
        best_per_cell(df, "auprc_p0.1")
    assert curve_table(best).set_index("dose").loc[1.0, "delta"] == pytest.approx(0.3)
