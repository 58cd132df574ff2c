"""Paired significance: hand-made per-subject scores with a known answer.

Scores are built from one baseline draw per subject: a dose that lifts every positive subject's
score by a lot is significantly better; one that adds noise and a sliver of lift is only noisily
better; one that pushes positives down is significantly worse. Only what the intervals support
may be declared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from salient.dashboards.significance import Gain, dose_findings, paired_gains, ties_to_smallest
from salient.dashboards.stats import auprc
from salient.dashboards.views import build_view

N_POS, N_NEG = 60, 240


def _subjects(rng: np.random.Generator, role: str) -> pd.DataFrame:
    labels = np.r_[np.ones(N_POS, int), np.zeros(N_NEG, int)]
    base = rng.normal(0, 1, len(labels)) + 0.5 * labels
    return pd.DataFrame(
        {"role": role, "subject": [f"{role[0]}{i:03d}" for i in range(len(labels))], "label": labels, "base": base}
    )


def _study(
    effects: dict[float, tuple[float, float]], seed: int = 0, repeats: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and per-subject scores. ``effects[dose] = (lift of positives, sd of added noise)``;
    dose 0 is the baseline. Every repeat draws new subjects."""
    rng = np.random.default_rng(seed)
    trials, scores = [], []
    for repeat in range(repeats):
        subjects = pd.concat([_subjects(rng, "validation"), _subjects(rng, "test")], ignore_index=True)
        for dose, (lift, noise) in {0.0: (0.0, 0.0), **effects}.items():
            name = f"r{repeat}_d{dose:g}"
            trials.append({"trial": name, "seed_size": 6, "dose": dose, "repeat": repeat})
            score = subjects["base"] + lift * subjects["label"] + rng.normal(0, noise, len(subjects)) * (noise > 0)
            scores.append(subjects.assign(trial=name, score=score, max_slice=score).drop(columns="base"))
    return pd.DataFrame(trials), pd.concat(scores, ignore_index=True)


SETTINGS = {"n_boot": 500, "draws": 3, "seed": 1}


def test_a_clear_gain_is_declared_and_a_noisy_one_is_not() -> None:
    trials, scores = _study({1.0: (0.05, 0.3), 2.0: (1.5, 0.0), 4.0: (0.1, 0.4)})
    (finding,) = dose_findings(trials, scores, [None], **SETTINGS)
    by_dose = {g.dose: g for g in finding.validation}
    assert by_dose[2.0].direction == "gain" and by_dose[2.0].ci_low > 0.1
    assert by_dose[1.0].direction == "none" and by_dose[4.0].direction == "none"
    assert finding.therapeutic_dose == 2.0 and finding.toxic_dose is None
    # reported on test: one comparison, unadjusted; the lift is there too
    assert finding.chosen_test is not None and finding.chosen_test.role == "test"
    assert finding.chosen_test.n_doses == 1 and finding.chosen_test.direction == "gain"
    # the validation gain is the paired difference of the metric, computed by hand
    val = scores[scores["role"] == "validation"]
    base, dosed = val[val["trial"] == "r0_d0"], val[val["trial"] == "r0_d2"]
    expected = auprc(dosed["label"], dosed["score"]) - auprc(base["label"], base["score"])
    assert by_dose[2.0].gain == pytest.approx(expected, abs=1e-12)
    assert "therapeutic dose 2x" in finding.sentence() and "confirmed on test" in finding.sentence()


def test_intervals_are_bonferroni_adjusted_over_the_doses_of_a_curve() -> None:
    trials, scores = _study({1.0: (0.3, 0.2), 2.0: (0.3, 0.2), 4.0: (0.3, 0.2), 8.0: (0.3, 0.2)})
    adjusted = paired_gains(trials, scores, role="validation", prevalence=None, **SETTINGS)
    single = paired_gains(trials, scores, role="validation", prevalence=None, adjust=False, **SETTINGS)
    assert all(g.level == pytest.approx(1 - 0.05 / 4) and g.n_doses == 4 for g in adjusted)
    assert all(g.level == pytest.approx(0.95) and g.n_doses == 1 for g in single)
    for a, s in zip(adjusted, single, strict=True):
        assert a.gain == s.gain and a.ci_low < s.ci_low and a.ci_high > s.ci_high


def test_pure_noise_declares_nothing() -> None:
    declared = 0
    for seed in range(12):
        trials, scores = _study({1.0: (0.0, 0.5), 2.0: (0.0, 0.5), 4.0: (0.0, 0.5)}, seed=seed)
        (finding,) = dose_findings(trials, scores, [None], **SETTINGS)
        declared += finding.therapeutic_dose is not None or finding.toxic_dose is not None
        if finding.therapeutic_dose is None and finding.toxic_dose is None:
            assert "no significant effect" in finding.sentence()
    # Bonferroni keeps each curve's family-wise error near 5%: none or one of 12 pure-noise curves
    assert declared <= 1


def test_a_significant_loss_is_toxic_and_a_flat_curve_says_so() -> None:
    trials, scores = _study({1.0: (0.0, 0.0), 4.0: (-1.5, 0.0), 8.0: (-2.0, 0.0)})
    (finding,) = dose_findings(trials, scores, [None], **SETTINGS)
    assert finding.therapeutic_dose is None and finding.toxic_dose == 4.0  # the smallest harmful dose
    assert finding.toxic_test is not None and finding.toxic_test.direction == "loss"
    by_dose = {g.dose: g for g in finding.validation}
    assert by_dose[1.0].gain == 0.0 and by_dose[1.0].direction == "none"  # identical scores: exactly 0
    assert "no significant gain" in finding.sentence() and "toxic from 4x" in finding.sentence()


def test_ties_go_to_the_smallest_dose_without_exact_float_equality() -> None:
    a, b = (0.1 + 0.2 + 0.3) / 3, (0.3 + 0.2 + 0.1) / 3  # the same values summed in another order
    assert a != b  # they differ in the last digit ...
    assert ties_to_smallest([4.0, 2.0, 1.0], [a, b, 0.0]) == 2.0  # ... and still tie
    assert ties_to_smallest([1.0, 2.0], [0.2, 0.2 + 1e-6]) == 2.0  # a real difference is not a tie
    with pytest.raises(ValueError, match="equal, non-empty"):
        ties_to_smallest([], [])
    # end to end: two doses with identical scores have identical gains; the smaller is chosen
    trials, scores = _study({2.0: (1.5, 0.0), 4.0: (1.5, 0.0)})
    (finding,) = dose_findings(trials, scores, [None], **SETTINGS)
    assert finding.therapeutic_dose == 2.0


def test_prevalence_subsets_are_shared_by_the_dose_and_0x() -> None:
    trials, scores = _study({2.0: (0.0, 0.0)})  # identical scores: any shared subset gives gain 0
    (g,) = paired_gains(trials, scores, role="test", prevalence=0.05, **SETTINGS)
    assert (g.gain, g.ci_low, g.ci_high) == (0.0, 0.0, 0.0) and g.prevalence == 0.05


def test_repeats_are_combined_by_a_two_stage_bootstrap() -> None:
    one = paired_gains(*_study({2.0: (0.4, 0.3)}, repeats=1), role="validation", prevalence=None, **SETTINGS)
    three = paired_gains(*_study({2.0: (0.4, 0.3)}, repeats=3), role="validation", prevalence=None, **SETTINGS)
    assert one[0].n_repeats == 1 and three[0].n_repeats == 3
    # the mean of three repeats' gains is estimated more tightly than one repeat's gain
    assert three[0].ci_high - three[0].ci_low < one[0].ci_high - one[0].ci_low


def test_controls_share_the_0x_trial_and_bad_tables_are_refused() -> None:
    trials, scores = _study({2.0: (1.5, 0.0)})
    control = trials[trials["dose"] == 2.0].assign(trial="r0_d2_real", arm="real")
    scores = pd.concat([scores, scores[scores["trial"] == "r0_d2"].assign(trial="r0_d2_real")], ignore_index=True)
    both = pd.concat([trials, control], ignore_index=True)
    gains = paired_gains(both, scores, role="validation", prevalence=None, **SETTINGS)
    assert sorted(g.arm for g in gains) == ["real", "synthetic"]
    assert gains[0].gain == gains[1].gain  # same scores, same shared baseline
    with pytest.raises(ValueError, match="role must be"):
        paired_gains(trials, scores, role="train", prevalence=None)
    other = scores.copy()
    other.loc[other["trial"] == "r0_d2", "subject"] += "x"
    with pytest.raises(ValueError, match="same ones"):
        paired_gains(trials, other, role="validation", prevalence=None, **SETTINGS)


def test_the_view_states_findings_in_words_and_falls_back_without_scores() -> None:
    trials, scores = _study({1.0: (0.05, 0.3), 2.0: (1.5, 0.0)})
    results = trials.assign(**{"auprc_p0.2": 0.5, "val_auprc": 0.5, "auroc": 0.7})
    params = {"bootstrap": 300, "prevalence_draws": 3, "ci": 0.95, "seed": 0}
    view = build_view(results, params, scores=scores)
    sentences = [f.sentence() for f in view.findings]
    assert any("therapeutic dose 2x" in s for s in sentences)
    assert "findings (chosen on validation, reported on test)" in view.tables and "gain" in view.figures
    assert isinstance(view.findings[0].validation[0], Gain)
    bare = build_view(results, params)
    assert not bare.findings and any("no per-subject scores" in n for n in bare.notes)


def test_prevalence_subsets_resample_the_held_out_set_once_per_replicate() -> None:
    # At the held-out set's own prevalence (60 of 300 = 0.2) every prevalence subset is the whole
    # set, so the estimate and its interval must be the whole set's: averaging independently
    # resampled copies of the same subjects would shrink the interval by about sqrt(draws).
    trials, scores = _study({1.0: (0.0, 0.5), 2.0: (0.3, 0.5)})
    whole = paired_gains(trials, scores, role="validation", prevalence=None, **{**SETTINGS, "draws": 4})
    same = paired_gains(trials, scores, role="validation", prevalence=0.2, **{**SETTINGS, "draws": 4})
    for w, s in zip(whole, same, strict=True):
        assert (s.gain, s.ci_low, s.ci_high) == pytest.approx((w.gain, w.ci_low, w.ci_high), abs=1e-12)
