"""The answer printed at the end of ``platform run`` (salient.platform.study_findings) is the
dashboard's: same selection of trials, same analysis settings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from salient.dashboards.significance import dose_findings
from salient.dashboards.stats import auprc
from salient.platform.outcome import TrialOutcome
from salient.platform.study.schema import Study
from salient.platform.study_findings import study_findings

from tests.dashboards.study_data import make_study


def _outcomes(results: pd.DataFrame, scores: pd.DataFrame, folder: Path) -> list[TrialOutcome]:
    out = []
    for _, row in results.iterrows():
        trial = str(row["trial"])
        (folder / trial).mkdir(parents=True)
        scores[scores["trial"] == trial].drop(columns="trial").to_csv(folder / trial / "scores.csv", index=False)
        params = {k: row[k] for k in ("seed_size", "dose", "detector.lr") if k in row and pd.notna(row[k])}
        metrics = {k: float(v) for k, v in row.items() if k.startswith(("val_", "auprc", "auroc", "n_added"))}
        out.append(TrialOutcome(trial, trial, int(row["repeat"]), params, metrics, {}, [], str(folder / trial)))
    return out


def test_a_study_with_several_trials_per_cell_reports_the_best_on_validation(tmp_path: Path) -> None:
    """A study that also varies a detector setting has two trials per (seed size, dose, repeat):
    the findings use the one with the better validation objective in each cell (it raised before:
    'several 0x trials in one repeat'), and equal the findings of those trials alone."""
    results, scores = make_study(seed_sizes=(6,), doses=(0.0, 2.0, 4.0))
    results = results.assign(**{"detector.lr": 1e-3})
    worse_rows, worse_scores = [], []
    for _, row in results.iterrows():  # the same cells with a setting worse on validation, better on test
        trial = f"{row['trial']}_lr"
        s = scores[scores["trial"] == row["trial"]].assign(trial=trial)
        shift = s["label"] * s["role"].map({"validation": -1.0, "test": 1.0})
        s = s.assign(score=s["score"] + shift)
        s = s.assign(max_slice=s["score"])
        worse_scores.append(s)
        val = s[s["role"] == "validation"]
        worse_rows.append({**row, "trial": trial, "detector.lr": 1e-2, "val_auprc": auprc(val["label"], val["score"])})
    both = pd.concat([results, pd.DataFrame(worse_rows)], ignore_index=True)
    all_scores = pd.concat([scores, *worse_scores], ignore_index=True)
    assert (pd.DataFrame(worse_rows)["val_auprc"].to_numpy() < results["val_auprc"].to_numpy()).all()
    study = Study(name="t", output_dir=tmp_path / "out", evaluation={"bootstrap": 200, "prevalence_draws": 2})
    found = study_findings(study, _outcomes(both, all_scores, tmp_path / "trials"))
    expected = dose_findings(results, scores, [None, 0.05, 0.2], level=0.95, n_boot=200, draws=2, seed=study.seed)
    assert [f.sentence() for f in found] == [f.sentence() for f in expected]
    assert any(f.therapeutic_dose == 2.0 for f in found)  # study_data: 2x is a clear gain at seed size 6


def test_bootstrap_zero_still_tests_with_the_dashboards_replicates(tmp_path: Path) -> None:
    """``evaluation.bootstrap: 0`` turns off the per-trial intervals; the significance analysis then
    uses the dashboard's 1000 replicates (it used 1, where one lucky draw was 'therapeutic')."""
    results, scores = make_study(seed_sizes=(6,), doses=(0.0, 2.0, 4.0))
    study = Study(name="t", output_dir=tmp_path / "out", evaluation={"bootstrap": 0, "prevalence_draws": 2})
    found = study_findings(study, _outcomes(results, scores, tmp_path / "trials"))
    expected = dose_findings(results, scores, [None, 0.05, 0.2], level=0.95, n_boot=1000, draws=2, seed=0)
    assert [f.sentence() for f in found] == [f.sentence() for f in expected]
    chosen = [f.chosen for f in found if f.chosen is not None]
    assert chosen and all(c.ci_low < c.gain < c.ci_high for c in chosen)  # real intervals around the gains
