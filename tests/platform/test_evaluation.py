"""Subject-level evaluation (`salient.platform.evaluation.evaluate_subjects`) against rules worked
out by hand and against scikit-learn.

The rules (README "Evaluation", models/metrics.py): at each prevalence a/b the test set is
subsampled to the *largest* subset with exactly k*a positives and k*(b-a) negatives; the reported
value is the *mean over draws*; the interval pools stratified bootstrap statistics; TVR strata
split the positives into tertiles and keep every negative. Every expected number below is
computed here, from those rules, never by calling the code under test.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from salient.platform.evaluation import evaluate_subjects
from sklearn.metrics import average_precision_score, roc_auc_score


def _cohort(n_pos: int, n_neg: int, seed: int = 0, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (positives first) and overlapping scores: a detector that is good, not perfect."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return labels, rng.normal(size=n_pos + n_neg) + separation * labels


def _evaluate(labels: np.ndarray, scores: np.ndarray, prevalences: tuple[float, ...], **kw: object) -> dict[str, float]:
    args: dict = {"draws": 3, "bootstrap": 0, "ci": 0.95, "seed": 0, **kw}
    return evaluate_subjects(labels, scores, prevalences, **args)


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "prevalence", "want_pos", "want_neg"),
    [
        # 5% = 1/20: k = min(50 // 1, 1000 // 19) = min(50, 52) = 50 -> 50 positives, 50 * 19 negatives
        (50, 1000, 0.05, 50, 950),
        # the example: 26 positives, 600 negatives; k = min(26, 600 // 19 = 31) = 26 -> 520 subjects
        (26, 600, 0.05, 26, 494),
        # 2% = 1/50: negatives limit, k = min(50, 1000 // 49 = 20) = 20
        (50, 1000, 0.02, 20, 980),
        # 3% = 3/100: k = min(50 // 3 = 16, 1000 // 97 = 10) = 10 -> 30 positives, 970 negatives
        (50, 1000, 0.03, 30, 970),
        # 10% = 1/10: positives limit, k = min(50, 1000 // 9 = 111) = 50
        (50, 1000, 0.1, 50, 450),
        # 25% = 1/4 on a tiny set: k = min(4, 8 // 3 = 2) = 2
        (4, 8, 0.25, 2, 6),
    ],
)
def test_each_prevalence_uses_the_largest_exact_subset(
    n_pos: int, n_neg: int, prevalence: float, want_pos: int, want_neg: int
) -> None:
    labels, scores = _cohort(n_pos, n_neg)
    out = _evaluate(labels, scores, (prevalence,))
    assert out[f"n_pos_p{prevalence:g}"] == want_pos
    assert out[f"n_neg_p{prevalence:g}"] == want_neg
    assert want_pos / (want_pos + want_neg) == pytest.approx(prevalence, abs=1e-12)  # the hand numbers are exact
    assert (_whole_set(out, "pos"), _whole_set(out, "neg")) == (n_pos, n_neg)


def _whole_set(out: dict[str, float], label: str) -> float | None:
    """Subjects of one label in the whole held-out set: ``n_test_pos`` before the validation split,
    ``n_pos`` after it (the set is then the test or the validation set)."""
    return out.get(f"n_test_{label}", out.get(f"n_{label}"))


def test_several_prevalences_are_reported_side_by_side() -> None:
    labels, scores = _cohort(50, 1000)
    out = _evaluate(labels, scores, (0.02, 0.05, 0.1))
    assert [(out[f"n_pos_p{p:g}"], out[f"n_neg_p{p:g}"]) for p in (0.02, 0.05, 0.1)] == [
        (20, 980),
        (50, 950),
        (50, 450),
    ]
    # rarer positives, same detector: a lower AUPRC (the reason prevalence is a study axis)
    assert out["auprc_p0.02"] < out["auprc_p0.05"] < out["auprc_p0.1"]


def test_whole_test_set_metrics_equal_scikit_learn() -> None:
    labels, scores = _cohort(30, 300, seed=4)
    out = _evaluate(labels, scores, (0.05,))
    assert out["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_a_subset_that_is_the_whole_set_scores_like_scikit_learn_on_it() -> None:
    # 50 positives + 950 negatives at 5%: k = min(50, 950 // 19 = 50) = 50, so every draw is the
    # whole set and the mean over draws is scikit-learn's value on the whole set.
    labels, scores = _cohort(50, 950, seed=1)
    out = _evaluate(labels, scores, (0.05,), draws=4)
    assert out["auprc_p0.05"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert out["auroc_p0.05"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def _two_candidate_positives() -> tuple[np.ndarray, np.ndarray]:
    """2 positives, 3 negatives. At 25% (1/4) k = min(2 // 1, 3 // 3) = 1: each draw keeps all 3
    negatives and ONE of the two positives. Positive A outscores every negative (AP 1, AUROC 1);
    positive B is scored below every negative (it ranks 4th of 4: AP 1/4, AUROC 0)."""
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.4, 0.3])
    return labels, scores


def test_the_value_is_the_mean_over_draws_not_one_draw() -> None:
    labels, scores = _two_candidate_positives()
    draws = 400
    out = _evaluate(labels, scores, (0.25,), draws=draws)
    assert (out["n_pos_p0.25"], out["n_neg_p0.25"]) == (1, 3)
    auprc, auroc = out["auprc_p0.25"], out["auroc_p0.25"]
    # Each draw scores (AP, AUROC) = (1, 1) with positive A or (1/4, 0) with positive B, so the
    # means over draws are tied by AP = 1/4 + 3/4 * AUROC, with AUROC = (draws that took A) / draws.
    n_a = auroc * draws
    assert n_a == pytest.approx(round(n_a), abs=1e-9)
    assert auprc == pytest.approx(0.25 + 0.75 * auroc, abs=1e-12)
    # Both positives are equally likely: over 400 draws the share of A is 1/2 +- 0.025 (1 sd),
    # so the mean AP is 0.625 +- 0.019. A single draw would give exactly 1 or 0.25.
    assert abs(auprc - 0.625) < 0.1, auprc
    assert 0 < n_a < draws  # both positives were drawn


def test_one_draw_is_one_of_the_two_possible_subsets() -> None:
    labels, scores = _two_candidate_positives()
    values = {
        (_evaluate(labels, scores, (0.25,), draws=1, seed=s)["auprc_p0.25"]) for s in range(12)
    }  # different seeds draw different positives
    assert values == {1.0, 0.25}


def test_draws_are_seeded() -> None:
    labels, scores = _cohort(20, 400, seed=2)
    a = _evaluate(labels, scores, (0.02,), draws=3, bootstrap=60, seed=5)
    b = _evaluate(labels, scores, (0.02,), draws=3, bootstrap=60, seed=5)
    c = _evaluate(labels, scores, (0.02,), draws=3, bootstrap=60, seed=6)
    assert a == b
    # k = min(20, 400 // 49 = 8) = 8 positives of 20: other draws, other value
    assert a["auprc_p0.02"] != c["auprc_p0.02"]


def _stratified_bootstrap_ap(labels: np.ndarray, scores: np.ndarray, n: int, seed: int) -> np.ndarray:
    """An independent stratified bootstrap of AP with scikit-learn (own RNG, own resampling)."""
    rng = np.random.default_rng(seed + 12345)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    out = np.empty(n)
    for i in range(n):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        out[i] = average_precision_score(labels[idx], scores[idx])
    return out


def _quantile_se(q: float, n: int) -> float:
    """Monte-Carlo standard error of the q-quantile of n bootstrap replicates, in units of the
    bootstrap sd (normal approximation: sqrt(q (1 - q) / n) / density at the quantile)."""
    z = NormalDist().inv_cdf(q)
    return float(np.sqrt(q * (1 - q) / n) / NormalDist().pdf(z))


@pytest.mark.parametrize("ci", [0.9, 0.2])
def test_interval_is_a_bootstrap_interval_that_matches_an_independent_one(ci: float) -> None:
    # Every draw is the whole set (see above), so the pooled bootstrap is a bootstrap of the whole
    # set, which scikit-learn can redo independently. The narrow 20% level separates the right
    # quantiles (40%/60%) from wrong ones (e.g. 33%/67%) by ~0.37 bootstrap sd; the tolerance is 4
    # Monte-Carlo standard errors of the two estimates (~0.18 sd at 20%, ~0.32 sd at 90%).
    # Checked over cohort seeds 0-4: the right quantiles missed by <= 0.53 tol, the 33%/67% ones
    # (alpha = (1 - ci) / 3) by >= 1.38 tol at the 20% level.
    labels, scores = _cohort(50, 950, seed=3)
    n_boot, n_ref = 1000, 3000
    out = _evaluate(labels, scores, (0.05,), draws=4, bootstrap=n_boot, ci=ci)
    point, lo, hi = out["auprc_p0.05"], out["auprc_p0.05_ci_low"], out["auprc_p0.05_ci_high"]
    ref = _stratified_bootstrap_ap(labels, scores, n_ref, seed=3)
    q = (1 - ci) / 2
    ref_lo, ref_hi = np.quantile(ref, [q, 1 - q])
    tol = 4 * float(np.hypot(_quantile_se(q, n_boot), _quantile_se(q, n_ref))) * float(ref.std())
    assert lo == pytest.approx(ref_lo, abs=tol) and hi == pytest.approx(ref_hi, abs=tol)
    assert lo < point < hi  # strictly: a real interval around the point, not one clamped onto it
    want_width = 2 * NormalDist().inv_cdf(1 - q) * float(ref.std())  # width of a normal interval
    assert hi - lo == pytest.approx(want_width, rel=0.35)
    auroc_lo, auroc_hi = out["auroc_p0.05_ci_low"], out["auroc_p0.05_ci_high"]
    assert auroc_lo < out["auroc_p0.05"] < auroc_hi


def test_a_wider_level_gives_a_wider_interval_and_no_bootstrap_gives_none() -> None:
    labels, scores = _cohort(40, 760, seed=6)
    narrow = _evaluate(labels, scores, (0.05,), bootstrap=600, ci=0.5)
    wide = _evaluate(labels, scores, (0.05,), bootstrap=600, ci=0.95)
    assert narrow["auprc_p0.05"] == wide["auprc_p0.05"]  # the level changes the interval only
    assert wide["auprc_p0.05_ci_low"] < narrow["auprc_p0.05_ci_low"]
    assert wide["auprc_p0.05_ci_high"] > narrow["auprc_p0.05_ci_high"]
    none = _evaluate(labels, scores, (0.05,), bootstrap=0)
    assert "auprc_p0.05_ci_low" not in none and "auprc_p0.05" in none


def test_tvr_strata_score_each_tertile_of_positives_against_every_negative() -> None:
    # 9 positives in tertiles of 3, and 72 negatives: every stratum is 3 positives + 72 negatives
    # = exactly 4% (1/25, k = min(3, 72 // 24) = 3), so a stratum subsampled to 4% (as the
    # redesigned evaluation does) is the whole stratum, and its AUPRC is scikit-learn's on it.
    rng = np.random.default_rng(7)
    n_neg = 72
    labels = np.r_[np.ones(9, int), np.zeros(n_neg, int)]
    tvr = np.r_[np.arange(1, 10) / 100.0, np.zeros(n_neg)]  # positives' TVR 0.01 ... 0.09
    # small lesions are hard to see, large ones easy: distinct AP per stratum
    scores = np.r_[[0.1, 0.6, 0.2, 0.7, 0.3, 0.8, 0.95, 0.9, 0.99], rng.random(n_neg) * 0.75]
    out = _evaluate(labels, scores, (0.1,), tvr=tvr)
    negatives = np.arange(9, 9 + n_neg)
    for name, positives in (("small", [0, 1, 2]), ("middle", [3, 4, 5]), ("large", [6, 7, 8])):
        keep = np.r_[positives, negatives]  # tertiles of 9 TVRs: the 3 smallest, next 3, 3 largest
        want = average_precision_score(labels[keep], scores[keep])
        assert out[f"auprc_tvr_{name}"] == pytest.approx(want, abs=1e-12), name
    assert out["auprc_tvr_small"] < out["auprc_tvr_middle"] < out["auprc_tvr_large"]


def test_tvr_strata_from_three_positives_on() -> None:
    labels = np.r_[np.ones(3, int), np.zeros(24, int)]  # a stratum: 1 positive + 24 negatives = 4%
    scores = np.r_[[0.2, 0.5, 0.9], np.linspace(0, 0.8, 24)]
    out = _evaluate(labels, scores, (0.1,), tvr=np.r_[[0.03, 0.01, 0.02], np.zeros(24)])
    # one positive per tertile: TVR 0.01 is subject 1, 0.02 subject 2, 0.03 subject 0
    negatives = np.arange(3, 27)
    for name, positive in (("small", 1), ("middle", 2), ("large", 0)):
        keep = np.r_[positive, negatives]
        assert out[f"auprc_tvr_{name}"] == pytest.approx(average_precision_score(labels[keep], scores[keep]), abs=1e-12)


def test_a_tvr_stratum_without_positives_is_left_out_and_the_others_are_kept() -> None:
    # TVRs 1, 1, 1, 1, 2, 3: the tertile cut points are 1 and 1.33, so "small" holds the four 1s,
    # "large" the 2 and the 3, and "middle" nobody: it gets no value, the strata after it still do.
    labels = np.r_[np.ones(6, int), np.zeros(96, int)]
    # small lesions scored below every negative, large ones above: values that do not depend on
    # which negatives a 4% draw takes
    scores = np.r_[[0.04, 0.03, 0.02, 0.01, 0.95, 0.96], np.linspace(0.1, 0.85, 96)]
    out = _evaluate(labels, scores, (0.1,), tvr=np.r_[[1.0, 1.0, 1.0, 1.0, 2.0, 3.0], np.zeros(96)])
    assert "auprc_tvr_middle" not in out
    assert out["auprc_tvr_large"] == 1.0
    # the 4 small positives rank 97th-100th: AP = (1/97 + 2/98 + 3/99 + 4/100) / 4
    assert out["auprc_tvr_small"] == pytest.approx((1 / 97 + 2 / 98 + 3 / 99 + 4 / 100) / 4, abs=1e-12)


def test_tvr_strata_need_three_positives_and_a_tvr() -> None:
    labels = np.r_[np.ones(2, int), np.zeros(20, int)]
    scores = np.linspace(0, 1, 22)
    assert not any(k.startswith("auprc_tvr") for k in _evaluate(labels, scores, (0.1,), tvr=np.ones(22)))
    labels3, scores3 = _cohort(9, 81)
    assert not any(k.startswith("auprc_tvr") for k in _evaluate(labels3, scores3, (0.1,)))


def test_bad_arguments_are_refused() -> None:
    labels, scores = _cohort(10, 90)
    with pytest.raises(ValueError, match="draws"):
        _evaluate(labels, scores, (0.1,), draws=0)
    with pytest.raises(ValueError, match="shape"):
        _evaluate(labels, scores[:-1], (0.1,))
    with pytest.raises(ValueError, match="too small for prevalence"):
        _evaluate(labels[:12], scores[:12], (0.01,))  # 10 positives, 2 negatives: no 1% subset
