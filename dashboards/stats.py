"""Subject-level statistics (numpy only): AUPRC/AUROC (one at a time, or every row of a batch of
bootstrap replicates), stratified bootstrap intervals, exact-prevalence subsampling and TVR strata.

Shared by the platform's per-trial evaluation and the dashboards' paired significance analysis,
so both count a metric the same way (ties taken together, as scikit-learn does).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

__all__ = [
    "auprc",
    "auprc_rows",
    "auroc",
    "auroc_rows",
    "bootstrap_ci",
    "bootstrap_stats",
    "prevalence_subsample",
    "tvr_strata",
]


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).astype(int).ravel(), np.asarray(s, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length, got {y.shape} and {s.shape}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0/1")
    return y, s


def auprc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve, as scikit-learn computes it)."""
    y, s = _check(y, s)
    if y.sum() == 0:
        raise ValueError("AUPRC needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # Thresholds at distinct scores: ties are taken together.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    y, s = _check(y, s)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _batch(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.atleast_2d(np.asarray(y)).astype(int), np.atleast_2d(np.asarray(s, dtype=float))
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels and scores must be equal (B, n) arrays, got {y.shape} and {s.shape}")
    return y, s


def auprc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """:func:`auprc` of every row of (B, n) labels and scores at once (ties taken together, as
    scikit-learn does); for bootstrap replicates. Rows without a positive give NaN."""
    y, s = _batch(y, s)
    order = np.argsort(-s, axis=1, kind="mergesort")
    y, s = np.take_along_axis(y, order, 1), np.take_along_axis(s, order, 1)
    n = y.shape[1]
    tp = np.cumsum(y, axis=1)
    last = np.ones_like(y, dtype=bool)  # the last slot of each run of tied scores is a threshold
    last[:, :-1] = s[:, :-1] != s[:, 1:]
    tp_last = np.where(last, tp, 0)
    before = np.zeros_like(tp)  # true positives at the previous threshold
    before[:, 1:] = np.maximum.accumulate(tp_last, axis=1)[:, :-1]
    precision = tp / np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(last, (tp - before) * precision, 0.0).sum(axis=1) / tp[:, -1]


def auroc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """:func:`auroc` of every row of (B, n) labels and scores at once (ties count half); rows
    without both classes give NaN."""
    from scipy.stats import rankdata

    y, s = _batch(y, s)
    ranks = rankdata(s, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_stats(
    metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, s: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """``n_boot`` replicates of ``metric``, resampling positives and negatives separately (seeded).

    The same seed draws the same resamples for any metric, so several metrics can be bootstrapped
    over identical replicates.
    """
    y, s = _check(y, s)
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        stats[i] = metric(y[idx], s[idx])
    return stats


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    s: np.ndarray,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile bootstrap, resampling positives and negatives
    separately so every replicate keeps the evaluation set's prevalence."""
    y, s = _check(y, s)
    point = metric(y, s)
    if n_boot == 0:
        return point, point, point
    stats = bootstrap_stats(metric, y, s, n_boot, seed)
    lo, hi = np.quantile(stats, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return point, float(min(lo, point)), float(max(hi, point))


def prevalence_subsample(labels: np.ndarray, prevalence: float, seed: int, max_denominator: int = 1000) -> np.ndarray:
    """Indices of the largest subset whose positive fraction is exactly ``prevalence``.

    ``prevalence`` is read as the fraction a/b (limited to ``max_denominator``); the subset has
    k*a positives and k*(b-a) negatives with the largest k available, drawn with ``seed``.
    """
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence!r}")
    labels = np.asarray(labels).astype(int)
    frac = Fraction(prevalence).limit_denominator(max_denominator)
    a, b = frac.numerator, frac.denominator
    pos, neg = np.nonzero(labels == 1)[0], np.nonzero(labels == 0)[0]
    k = min(len(pos) // a, len(neg) // (b - a))
    if k == 0:
        raise ValueError(
            f"test set too small for prevalence {prevalence}: needs at least {a} positive and {b - a} "
            f"negative subjects, has {len(pos)} and {len(neg)}"
        )
    rng = np.random.default_rng(seed)
    chosen = np.r_[rng.choice(pos, k * a, replace=False), rng.choice(neg, k * (b - a), replace=False)]
    return np.sort(chosen)


def tvr_strata(tvr: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Split positives into small/middle/large TVR tertiles; each stratum keeps every negative.

    Returns boolean index arrays over the subjects, one per stratum.
    """
    tvr, labels = np.asarray(tvr, float), np.asarray(labels).astype(int)
    pos = labels == 1
    if pos.sum() < 3:
        raise ValueError(f"TVR strata need at least 3 positives, got {int(pos.sum())}")
    lo, hi = np.quantile(tvr[pos], [1 / 3, 2 / 3])
    small, large = pos & (tvr <= lo), pos & (tvr > hi)
    middle = pos & ~small & ~large
    neg = ~pos
    return {"small": small | neg, "middle": middle | neg, "large": large | neg}
