"""Subject-level evaluation of one trained detector at every test prevalence (pure numpy).

Prevalence is a property of the evaluation set: the held-out test subjects are subsampled to
exactly each target prevalence (:func:`salient.models.metrics.prevalence_subsample`), ``draws``
times with different seeds, and the metrics are averaged over the draws. A single small draw
at 1-5% prevalence holds one or two positives, so averaging several draws is what makes the
number stable; the confidence interval pools the bootstrap statistics of every draw.

Metric names use ``_p<prevalence>`` (``auprc_p0.05``): MLflow rejects ``@`` in metric names.
"""

from __future__ import annotations

import numpy as np
from salient.dashboards.names import metric_name
from salient.models.metrics import auprc, auroc, bootstrap_stats, prevalence_subsample, tvr_strata

__all__ = ["evaluate_subjects"]


def evaluate_subjects(
    labels: np.ndarray,
    scores: np.ndarray,
    prevalences: tuple[float, ...],
    *,
    draws: int,
    bootstrap: int,
    ci: float,
    seed: int,
    tvr: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of subject scores on the held-out test set.

    Returns, for every prevalence p: ``auprc_p{p}``, ``auroc_p{p}`` (mean over draws), their
    ``_ci_low``/``_ci_high`` (pooled bootstrap, level ``ci``) and ``n_pos_p{p}``/``n_neg_p{p}``;
    plus ``auprc``/``auroc`` on the whole test set and, when ``tvr`` is given and there are at
    least 3 positives, ``auprc_tvr_{small,middle,large}`` (each stratum with every negative).
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be equal 1-D shapes")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    out: dict[str, float] = {
        "auprc": auprc(y, s),
        "auroc": auroc(y, s),
        "n_test_pos": float(y.sum()),
        "n_test_neg": float(len(y) - y.sum()),
    }
    alpha = (1 - ci) / 2
    for p in prevalences:
        point: dict[str, list[float]] = {"auprc": [], "auroc": []}
        boot: dict[str, list[float]] = {"auprc": [], "auroc": []}
        n_pos = n_neg = 0
        for d in range(draws):
            idx = prevalence_subsample(y, p, seed=seed * 1000 + d)
            yy, ss = y[idx], s[idx]
            n_pos, n_neg = int(yy.sum()), int(len(yy) - yy.sum())
            n_boot = max(bootstrap // draws, 1) if bootstrap else 0
            for k, fn in (("auprc", auprc), ("auroc", auroc)):  # same seed: same resamples for both
                point[k].append(fn(yy, ss))
                boot[k].extend(bootstrap_stats(fn, yy, ss, n_boot, seed * 7919 + d).tolist())
        for k in ("auprc", "auroc"):
            mean = float(np.mean(point[k]))
            out[metric_name(k, p)] = mean
            if boot[k]:
                lo, hi = np.quantile(boot[k], [alpha, 1 - alpha])
                out[metric_name(k, p, "ci_low")] = float(min(lo, mean))
                out[metric_name(k, p, "ci_high")] = float(max(hi, mean))
        out[metric_name("n_pos", p)] = float(n_pos)
        out[metric_name("n_neg", p)] = float(n_neg)
    if tvr is not None and int(y.sum()) >= 3:
        for name, keep in tvr_strata(np.asarray(tvr, dtype=float), y).items():
            out[f"auprc_tvr_{name}"] = auprc(y[keep], s[keep])
    return out
