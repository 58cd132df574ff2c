"""Subject-level evaluation of one trained detector at every test prevalence (pure numpy).

Prevalence is a property of the evaluation set: the held-out subjects are subsampled to
exactly each target prevalence (:func:`salient.models.metrics.prevalence_subsample`), ``draws``
times with different seeds, and the metrics are averaged over the draws. A single small draw
at 1-5% prevalence holds one or two positives, so averaging several draws is what makes the
number stable; the confidence interval pools the bootstrap statistics of every draw.

Metric names use ``_p<prevalence>`` (``auprc_p0.05``): MLflow rejects ``@`` in metric names.
"""

from __future__ import annotations

import numpy as np
from salient.dashboards.names import metric_name
from salient.dashboards.stats import auprc, auroc, bootstrap_stats, prevalence_subsample, tvr_strata

__all__ = ["evaluate_subjects"]


def _at_prevalence(
    y: np.ndarray, s: np.ndarray, p: float, draws: int, seed: int, bootstrap: int
) -> tuple[dict[str, float], dict[str, list[float]], int, int]:
    """Mean AUPRC/AUROC over ``draws`` seeded subsets at exactly prevalence ``p``, the pooled
    bootstrap replicates (``bootstrap`` in all) and the subset size (positives, negatives)."""
    point: dict[str, list[float]] = {"auprc": [], "auroc": []}
    boot: dict[str, list[float]] = {"auprc": [], "auroc": []}
    n_pos = n_neg = 0
    n_boot = max(bootstrap // draws, 1) if bootstrap else 0
    for d in range(draws):
        idx = prevalence_subsample(y, p, seed=seed * 1000 + d)
        yy, ss = y[idx], s[idx]
        n_pos, n_neg = int(yy.sum()), int(len(yy) - yy.sum())
        for k, fn in (("auprc", auprc), ("auroc", auroc)):  # same seed: same resamples for both
            point[k].append(fn(yy, ss))
            boot[k].extend(bootstrap_stats(fn, yy, ss, n_boot, seed * 7919 + d).tolist())
    return {k: float(np.mean(v)) for k, v in point.items()}, boot, n_pos, n_neg


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
    tvr_prevalence: float = 0.04,
) -> dict[str, float]:
    """Metrics of subject scores on a held-out set.

    Returns, for every prevalence p: ``auprc_p{p}``, ``auroc_p{p}`` (mean over ``draws`` seeded
    subsets with exactly that prevalence), their ``_ci_low``/``_ci_high`` (percentile interval of
    the pooled bootstrap replicates, level ``ci``; only with ``bootstrap > 0``) and
    ``n_pos_p{p}``/``n_neg_p{p}`` (the subset size); ``auprc``/``auroc`` on the whole set; and, when
    ``tvr`` is given and there are at least 3 positives, ``auprc_tvr_{small,middle,large}`` and
    ``auroc_tvr_...``: the positives of one target-to-volume tertile with every negative,
    subsampled to ``tvr_prevalence`` like the prevalences above (a stratum too small for it is
    left out).
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
        "n_pos": float(y.sum()),
        "n_neg": float(len(y) - y.sum()),
    }
    alpha = (1 - ci) / 2
    for p in prevalences:
        means, boot, n_pos, n_neg = _at_prevalence(y, s, p, draws, seed, bootstrap)
        for k, mean in means.items():
            out[metric_name(k, p)] = mean
            if boot[k]:
                lo, hi = np.quantile(boot[k], [alpha, 1 - alpha])
                out[metric_name(k, p, "ci_low")] = float(lo)
                out[metric_name(k, p, "ci_high")] = float(hi)
        out[metric_name("n_pos", p)] = float(n_pos)
        out[metric_name("n_neg", p)] = float(n_neg)
    if tvr is not None and int(y.sum()) >= 3:
        for name, keep in tvr_strata(np.asarray(tvr, dtype=float), y).items():
            try:
                means, _, _, _ = _at_prevalence(y[keep], s[keep], tvr_prevalence, draws, seed, 0)
            except ValueError:  # too few subjects in this stratum for the prevalence
                continue
            for k, mean in means.items():
                out[f"{k}_tvr_{name}"] = mean
    return out
