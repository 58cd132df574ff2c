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


# --- rules pinned one by one (issue #19: each test kills a class of deliberate bugs) ---------------


def test_long_metrics_fills_missing_axes_intervals_and_drops_missing_values() -> None:
    df = pd.DataFrame(
        {
            "dose": [0, 2],
            "auprc_p0.1": [0.3, np.nan],  # the 2x trial has no value at 0.1: no row
            "auprc_p0.05": [0.2, 0.25],
            "auprc_p0.05_ci_low": [0.1, 0.15],  # no ci_high column: the value stands in
            "auroc_p0.05": [0.6, 0.7],
            "auroc_p0.1": [0.55, np.nan],
        }
    )
    long = long_metrics(df)
    assert list(long.columns) == ["arm", "seed_size", "repeat", "dose", "prevalence", "value", "ci_low", "ci_high"]
    got = [tuple(r) for r in long.itertuples(index=False)]
    assert got == [
        ("synthetic", "all", 0, 0.0, 0.05, 0.2, 0.1, 0.2),
        ("synthetic", "all", 0, 2.0, 0.05, 0.25, 0.15, 0.25),
        ("synthetic", "all", 0, 0.0, 0.1, 0.3, 0.3, 0.3),
    ]
    assert long["dose"].dtype == float
    assert not long.index.duplicated().any()  # one label per row: callers select rows by it
    # a trial without an interval (no bootstrap) keeps its value
    gap = long_metrics(df.assign(**{"auprc_p0.05_ci_low": [np.nan, 0.15]}))
    assert gap["value"].tolist() == [0.2, 0.25, 0.3] and np.isnan(gap["ci_low"].iloc[0])
    roc = long_metrics(df, metric="auroc")
    assert roc["value"].tolist() == [0.6, 0.7, 0.55] and roc["prevalence"].tolist() == [0.05, 0.05, 0.1]
    with pytest.raises(ValueError, match=r"results table lacks column\(s\) \['dose'\]; it has \['auprc_p0.1'\]"):
        long_metrics(pd.DataFrame({"auprc_p0.1": [0.3]}))
    with pytest.raises(ValueError, match=r"metric must be one of \('auprc', 'auroc'\), got 'f1'"):
        long_metrics(df, metric="f1")
    with pytest.raises(ValueError, match="results table has no auroc_p<prevalence> column"):
        long_metrics(df[["dose"]], metric="auroc")


def test_long_metrics_of_a_metric_missing_at_a_prevalence_says_so() -> None:
    with pytest.raises(ValueError, match="auroc_p"):
        long_metrics(pd.DataFrame({"dose": [0.0], "auprc_p0.1": [0.3]}), metric="auroc")


def test_a_control_arm_of_missing_value_is_the_dose_curve() -> None:
    df = pd.DataFrame({"dose": [0.0, 1.0, 1.0], "arm": [None, None, "real"], "auprc_p0.1": [0.3, 0.4, 0.5]})
    long = long_metrics(df)
    assert long["arm"].tolist() == ["synthetic", "synthetic", "real"]
    with pytest.raises(
        ValueError,
        match=r"several trials share a \(arm, seed_size, dose, repeat\) cell: the study varies other settings too; "
        r"analyse one setting at a time \(filter the table\) or take best_per_cell\(\.\.\.\)$",
    ):
        long_metrics(pd.concat([df, df.iloc[[1]]], ignore_index=True))
    # another arm or another repeat is another cell
    long_metrics(pd.concat([df, df.iloc[[1]].assign(repeat=1)], ignore_index=True).fillna({"repeat": 0}))


def test_best_per_cell_maximises_or_minimises_and_keeps_table_order() -> None:
    df = pd.DataFrame(
        {
            "seed_size": [6, 6, 6, 6, 6],
            "dose": [1.0, 0.0, 0.0, 1.0, 1.0],
            "detector.lr": [1e-2, 1e-3, 1e-4, 1e-3, 1e-4],
            "val_loss": [0.5, 0.2, 0.1, 0.3, 0.3],
        }
    )
    best = best_per_cell(df, "val_loss", maximise=True)
    assert best.index.tolist() == [0, 1]  # original row order; the higher values win
    low = best_per_cell(df, "val_loss", maximise=False)
    assert low.index.tolist() == [2, 3]  # 0.3 twice at 1x: the first of the tie is kept
    assert low.columns.tolist() == df.columns.tolist()  # the trials as given, no helper columns
    # ties go to the trial listed first, however many rows are sorted (a stable sort)
    rng = np.random.default_rng(0)
    many = pd.DataFrame(
        {
            "seed_size": 6,
            "dose": rng.integers(0, 3, 300).astype(float),
            "trial": np.arange(300),
            "val_auprc": rng.integers(0, 3, 300) / 4,  # few distinct values: ties everywhere
        }
    )
    for maximise in (True, False):
        chosen = best_per_cell(many, "val_auprc", maximise=maximise)
        for dose, group in many.groupby("dose"):
            best = group["val_auprc"].max() if maximise else group["val_auprc"].min()
            first = group[group["val_auprc"] == best]["trial"].iloc[0]
            assert chosen[chosen["dose"] == dose]["trial"].tolist() == [first]
    with pytest.raises(ValueError, match=r"selection uses validation metrics \(val_...\); got 'auprc'"):
        best_per_cell(df, "auprc")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['val_auprc'\]"):
        best_per_cell(df, "val_auprc")


def test_curve_intervals_with_two_repeats_and_deltas_paired_within_a_curve() -> None:
    rows = []
    for seed, prev, values in ((6, 0.1, [(0.30, 0.40), (0.34, 0.50)]), (10, 0.1, [(0.6, 0.6), (0.6, 0.7)])):
        for repeat, (v0, v1) in enumerate(values):
            rows.append(
                {"seed_size": seed, "dose": 0.0, "repeat": repeat, f"auprc_p{prev}": v0, "run_id": f"a{seed}{repeat}"}
            )
            rows.append(
                {"seed_size": seed, "dose": 1.0, "repeat": repeat, f"auprc_p{prev}": v1, "run_id": f"b{seed}{repeat}"}
            )
    rows.append({"seed_size": 6, "dose": 2.0, "repeat": 5, "auprc_p0.1": 0.9, "run_id": "c"})  # no 0x in repeat 5
    rows.append({"seed_size": 6, "dose": 0.0, "repeat": 0, "auprc_p0.2": 0.05, "run_id": "d"})  # another prevalence
    df = pd.DataFrame(rows).reset_index(drop=True)
    df = df.groupby(["seed_size", "dose", "repeat"], as_index=False).first()  # one trial per cell
    curves = curve_table(df).set_index(["seed_size", "prevalence", "dose"])
    six = curves.loc[(6, 0.1, 1.0)]
    # two repeats: t interval with 1 degree of freedom, t_0.975 = 12.7062
    sd = np.std([0.40, 0.50], ddof=1)
    assert six["n_repeats"] == 2 and six["mean"] == pytest.approx(0.45)
    assert (six["ci_low"], six["ci_high"]) == pytest.approx(
        (0.45 - 12.7062 * sd / 2**0.5, 0.45 + 12.7062 * sd / 2**0.5), rel=1e-5
    )
    assert six["delta"] == pytest.approx(0.13)  # (0.10 + 0.16) / 2: each repeat against its own 0x
    assert six["runs"] == ("b60", "b61")
    assert curves.loc[(10, 0.1, 1.0), "delta"] == pytest.approx(0.05)  # against seed 10's 0x, not seed 6's
    assert np.isnan(curves.loc[(6, 0.1, 2.0), "delta"])  # no 0x trial in its repeat
    assert curves.loc[(6, 0.1, 0.0), "delta"] == pytest.approx(0.0)
    assert curves.loc[(6, 0.1, 0.0), "n_repeats"] == 2 and curves.loc[(6, 0.1, 0.0), "mean"] == pytest.approx(0.32)
    # a level other than 95%: t_0.95 with 1 degree of freedom = 6.3138
    ninety = curve_table(df, level=0.9).set_index(["seed_size", "prevalence", "dose"]).loc[(6, 0.1, 1.0)]
    assert ninety["ci_high"] - 0.45 == pytest.approx(6.3138 * sd / 2**0.5, rel=1e-4)
    assert curve_table(df.drop(columns="run_id"))["runs"].tolist() == [()] * len(curves)


def test_dose_shift_follows_seed_sizes_numerically_per_arm_and_prevalence() -> None:
    from salient.dashboards.significance import Finding, Gain

    def finding(arm: str, seed: object, prev: float | None, dose: float | None) -> Finding:
        g = (
            None
            if dose is None
            else Gain(arm, seed, prev, dose, "validation", "auprc", 0.1, 0.05, 0.15, 0.99, 4, 1, 50)
        )
        return Finding(arm, seed, prev, "auprc", (), g, g, None, None)

    shift = dose_shift(
        [
            finding("synthetic", "10", None, 1.0),
            finding("synthetic", "6", None, 4.0),
            finding("real", "6", None, 2.0),
            finding("real", "10", None, 2.0),
            finding("synthetic", "all", None, 8.0),
        ]
    )
    assert list(shift.columns) == ["arm", "prevalence", "seed_size", "therapeutic_dose", "shift"]
    got = [(r.arm, r.seed_size, r.therapeutic_dose, r.shift) for r in shift.itertuples()]
    assert got == [
        ("real", "6", 2.0, 0.0),
        ("real", "10", 2.0, 0.0),
        ("synthetic", "6", 4.0, 0.0),  # the whole-set findings (prevalence None) are a group too
        ("synthetic", "10", 1.0, -3.0),
        ("synthetic", "all", 8.0, 4.0),  # labels after numbers
    ]
    empty = dose_shift([])
    assert empty.empty and list(empty.columns) == ["arm", "prevalence", "seed_size", "therapeutic_dose", "shift"]


def test_tvr_gains_per_stratum_against_the_same_seed_sizes_0x() -> None:
    df = pd.DataFrame(
        {
            "seed_size": [6, 6, 6, 10, 10],
            "dose": [0.0, 1.0, 1.0, 0.0, 1.0],
            "repeat": [0, 0, 1, 0, 0],
            "auroc_tvr_small": [0.5, 0.6, 0.8, 0.9, 0.7],
            "auroc_tvr_large": [0.4, 0.4, np.nan, 0.5, 0.5],
            "auprc_tvr_small": [0.1, 0.1, 0.1, 0.1, 0.1],
        }
    )
    gains = tvr_gains(df, "auroc")
    assert list(gains.columns) == ["arm", "seed_size", "dose", "stratum", "auroc", "delta"]
    got = {(r.seed_size, r.dose, r.stratum): (r.auroc, r.delta) for r in gains.itertuples()}
    assert got[(6, 1.0, "small")] == pytest.approx((0.7, 0.2))  # mean over repeats, minus 0x
    assert got[(6, 1.0, "large")] == pytest.approx((0.4, 0.0))  # a missing value is left out of the mean
    assert got[(10, 1.0, "small")] == pytest.approx((0.7, -0.2))
    assert set(gains["stratum"]) == {"small", "large"} and set(gains["arm"]) == {"synthetic"}
    no_base = tvr_gains(df[df["dose"] > 0], "auroc")
    assert no_base["delta"].isna().all()
    empty = tvr_gains(df.drop(columns=["auroc_tvr_small", "auroc_tvr_large"]), "auroc")
    assert empty.empty and list(empty.columns) == ["arm", "seed_size", "dose", "stratum", "auroc", "delta"]


def test_ablation_keeps_doses_of_either_setting_and_names_its_columns() -> None:
    df = pd.DataFrame(
        {
            "seed_size": [6, 6, 6, 6, 6],
            "dose": [0.0, 1.0, 0.0, 1.0, 2.0],
            "detector.mask_guidance": [True, True, False, False, False],
            "auprc_p0.1": [0.3, 0.5, 0.3, 0.35, 0.2],
            "auroc_p0.1": [0.6, 0.7, 0.6, 0.65, 0.5],
        }
    )
    table = ablation_table(df, metric="auroc").set_index("dose")
    assert {"auroc (detector.mask_guidance=False)", "auroc (detector.mask_guidance=True)"} <= set(table.columns)
    assert table.loc[1.0, "difference"] == pytest.approx(0.05)
    assert np.isnan(table.loc[2.0, "auroc (detector.mask_guidance=True)"])  # unguided only: kept, blank
    assert table.loc[2.0, "auroc (detector.mask_guidance=False)"] == pytest.approx(0.5)
    other = ablation_table(df.assign(lr=[1, 1, 2, 2, 2]), column="lr").set_index("dose")
    assert "difference" not in other.columns  # not a True/False setting: no guided - unguided column
    assert other.loc[1.0, "auprc (lr=1)"] == pytest.approx(0.5)
    assert ablation_table(df.assign(lr=1), column="lr").empty  # one value: nothing to compare
    # guided and another setting, but no unguided run: no difference to take
    half = ablation_table(df.assign(**{"detector.mask_guidance": [True, True, "auto", "auto", "auto"]}))
    assert "difference" not in half.columns and len(half.columns) == 6


def test_table1_gives_every_arm_the_shared_0x_auroc_and_sorts_seed_sizes_numerically() -> None:
    df = pd.DataFrame(
        {
            "seed_size": ["10", "10", "6", "6", "6"],
            "dose": [0.0, 1.0, 0.0, 1.0, 1.0],
            "arm": [None, None, None, None, "real"],
            "auprc_p0.05": [0.3, 0.4, 0.2, 0.25, 0.5],
            "auroc": [0.61, 0.72, 0.55, 0.58, 0.8],
        }
    )
    table = table1(df)
    got = [
        (r["arm"], r["seed_size"], r["dose"], r["AUPRC@0.05"], r["dAUPRC@0.05"], r["AUROC"])
        for _, r in table.iterrows()
    ]
    assert got == [
        ("real", "6", 0.0, "0.200 [0.200, 0.200]", "+0.000", "0.550"),
        ("real", "6", 1.0, "0.500 [0.500, 0.500]", "+0.300", "0.800"),
        ("real", "10", 0.0, "0.300 [0.300, 0.300]", "+0.000", "0.610"),  # every arm starts at 0x
        ("synthetic", "6", 0.0, "0.200 [0.200, 0.200]", "+0.000", "0.550"),
        ("synthetic", "6", 1.0, "0.250 [0.250, 0.250]", "+0.050", "0.580"),
        ("synthetic", "10", 0.0, "0.300 [0.300, 0.300]", "+0.000", "0.610"),
        ("synthetic", "10", 1.0, "0.400 [0.400, 0.400]", "+0.100", "0.720"),
    ]
    # two repeats: the mean and its t interval (95% by default; t_0.975 with 1 df = 12.7062)
    two = table1(pd.DataFrame({"dose": [0.0, 0.0], "repeat": [0, 1], "auprc_p0.05": [0.3, 0.4]}))
    half = 12.7062 * np.std([0.3, 0.4], ddof=1) / 2**0.5
    assert two.loc[0, "AUPRC@0.05"] == f"0.350 [{0.35 - half:.3f}, {0.35 + half:.3f}]"
    # a dose without a 0x in its repeat: no delta to show; no auroc column: no AUROC column
    lone = table1(pd.DataFrame({"dose": [1.0], "auprc_p0.05": [0.4]}))
    assert lone.loc[0, "dAUPRC@0.05"] == "" and "AUROC" not in lone.columns


def test_table1_markdown_renders_every_cell() -> None:
    table = pd.DataFrame(
        {"arm": ["synthetic", "real"], "dose": [0.0, 2.0], "note": pd.Series([None, "x"], dtype=object)}
    )
    assert table1_markdown(table) == (
        "| arm | dose | note |\n|---|---|---|\n| synthetic | 0.0 |  |\n| real | 2.0 | x |\n"
    )


def test_table1_markdown_leaves_a_missing_cell_blank() -> None:
    df = pd.DataFrame({"dose": [0.0, 1.0], "auprc_p0.05": [0.3, 0.4], "auprc_p0.1": [0.2, np.nan]})
    assert "nan" not in table1_markdown(table1(df))


def test_table1_intervals_use_the_level_asked_for() -> None:
    """With repeats, Table 1's intervals are t intervals at ``level`` (a mutation that dropped the
    level, falling back to 0.95, survived)."""
    from scipy import stats

    values = {0.0: [0.30, 0.34, 0.38], 2.0: [0.40, 0.46, 0.43]}
    df = pd.DataFrame(
        [
            {"seed_size": 6, "dose": dose, "repeat": r, "auprc_p0.05": v, "auprc": v}
            for dose, vs in values.items()
            for r, v in enumerate(vs)
        ]
    )
    for level in (0.8, 0.95):
        row = table1(df, level=level).set_index("dose").loc[2.0]
        vs = np.array(values[2.0])
        half = stats.t.ppf(0.5 + level / 2, 2) * vs.std(ddof=1) / np.sqrt(3)
        assert row["AUPRC@0.05"] == f"{vs.mean():.3f} [{vs.mean() - half:.3f}, {vs.mean() + half:.3f}]", level
