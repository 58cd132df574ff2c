"""Subject-level statistics: checked against scikit-learn and hand-counted subsets."""

import numpy as np
import pytest
from salient.dashboards.stats import (
    auprc,
    auprc_rows,
    auroc,
    auroc_rows,
    bootstrap_ci,
    prevalence_subsample,
    tvr_strata,
)
from sklearn.metrics import average_precision_score, roc_auc_score


@pytest.mark.parametrize("seed", range(5))
def test_auprc_auroc_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    y[0], y[1] = 0, 1
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes ties
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_prevalence_subsample_is_exact_and_seeded() -> None:
    labels = np.r_[np.ones(30, int), np.zeros(500, int)]
    for p in (0.01, 0.02, 0.03, 0.05, 0.1):
        idx = prevalence_subsample(labels, p, seed=7)
        assert labels[idx].sum() / len(idx) == pytest.approx(p, abs=1e-12)
        assert np.array_equal(idx, prevalence_subsample(labels, p, seed=7))
        assert len(np.unique(idx)) == len(idx)
    assert not np.array_equal(prevalence_subsample(labels, 0.05, 1), prevalence_subsample(labels, 0.05, 2))
    with pytest.raises(ValueError, match="too small for prevalence"):
        prevalence_subsample(np.r_[np.ones(1, int), np.zeros(50, int)], 0.01, 0)


def test_bootstrap_ci_contains_point_and_narrows_with_n() -> None:
    def data(n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        y = (np.arange(n) % 5 == 0).astype(int)
        return y, rng.normal(size=n) + 1.2 * y

    widths = []
    for n in (50, 400):
        y, s = data(n)
        point, lo, hi = bootstrap_ci(auprc, y, s, n_boot=300, seed=1)
        # strictly inside: bootstrap_ci clamps the interval onto the point, so `<=` could not fail
        assert lo < point < hi and point == pytest.approx(average_precision_score(y, s), abs=1e-12)
        widths.append(hi - lo)
    # 8x the subjects: the width should shrink ~sqrt(8) = 2.8x (ratio 0.35). Over data seeds 0-4 x
    # bootstrap seeds 1-3 the ratio was 0.37-0.59 (the 10-positive interval is noisy); a width that
    # did not shrink would give ~1. Hence 0.7 (it was 0.6, tuned to this seed's 0.51).
    assert widths[1] < 0.7 * widths[0]


def test_tvr_strata_split_positives_into_tertiles() -> None:
    tvr = np.r_[np.arange(1, 10) / 1000, np.zeros(5)]
    labels = np.r_[np.ones(9, int), np.zeros(5, int)]
    strata = tvr_strata(tvr, labels)
    assert [int((strata[k] & (labels == 1)).sum()) for k in ("small", "middle", "large")] == [3, 3, 3]
    assert all(strata[k][labels == 0].all() for k in strata)


def test_row_metrics_equal_scikit_learn_row_by_row_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 40))
        y = rng.integers(0, 2, (6, n))
        s = rng.integers(0, 4, (6, n)).astype(float)  # few distinct scores: many ties, as in a bootstrap
        ap, roc = auprc_rows(y, s), auroc_rows(y, s)
        for i in range(6):
            if y[i].sum() == 0:
                assert np.isnan(ap[i])
                continue
            assert ap[i] == pytest.approx(average_precision_score(y[i], s[i]), abs=1e-12)
            if 0 < y[i].sum() < n:
                assert roc[i] == pytest.approx(roc_auc_score(y[i], s[i]), abs=1e-12)
            else:
                assert np.isnan(roc[i])
    with pytest.raises(ValueError, match="equal"):
        auprc_rows(np.zeros((2, 3)), np.zeros((2, 4)))
