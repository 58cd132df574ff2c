"""Evaluation metrics (paper 4.1-4.3): subject-level AUPRC/AUROC with bootstrap CIs, exact
prevalence subsampling, TVR strata, MS-SSIM for small images, Frechet distance with a named
feature extractor, mask Dice, wavelet band energies and saliency-mask overlap.

Pure functions of arrays/tensors; nothing here reads files except
:func:`load_feature_extractor`, which loads a checkpoint the *caller* names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from salient.models.wavelet import haar_dwt2
from scipy import linalg
from torch import nn

__all__ = [
    "FeatureExtractor",
    "attention_overlap",
    "auprc",
    "auroc",
    "band_energy_stats",
    "bootstrap_ci",
    "bootstrap_stats",
    "dice_score",
    "frechet_distance",
    "ms_ssim",
    "prevalence_subsample",
    "random_conv_extractor",
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


_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class MSSSIMResult:
    value: float
    scales: int
    kernel_size: int


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> MSSSIMResult:
    """MS-SSIM for (B, 1, H, W) images of any size >= 16 px, via MONAI.

    MONAI's default (11 px kernel, 5 scales) needs >= 176 px. For smaller slices the number of
    scales and the kernel are reduced to what fits and the standard weights of the kept scales
    are renormalised; the result records both so numbers are compared like for like.
    """
    from monai.metrics import MultiScaleSSIMMetric

    size = min(x.shape[-2:])
    if size < 16:
        raise ValueError(f"MS-SSIM needs images of at least 16 px, got {tuple(x.shape[-2:])}")
    for scales in range(5, 0, -1):
        kernel = 11 if size >= 10 * 2 ** (scales - 1) + 1 else 7
        if size > (kernel - 1) * 2 ** (scales - 1):
            break
    weights = np.array(_MS_SSIM_WEIGHTS[:scales])
    metric = MultiScaleSSIMMetric(
        spatial_dims=2, data_range=data_range, kernel_size=kernel, weights=tuple(weights / weights.sum())
    )
    value = float(torch.as_tensor(metric(x.float(), y.float())).mean())
    return MSSSIMResult(value, scales, kernel)


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (FID's formula)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two (N >= 2, D) feature arrays of equal D, got {f1.shape}, {f2.shape}")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@dataclass(frozen=True)
class FeatureExtractor:
    """A named image -> feature map; ``name`` is logged with every Frechet distance."""

    name: str
    net: nn.Module

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.net.eval()
        return self.net(images.float()).flatten(1).cpu().numpy()


def random_conv_extractor(seed: int = 0, dim: int = 64) -> FeatureExtractor:
    """The documented default: a fixed, randomly initialised conv net (seeded).

    No pretrained weights can be downloaded here, so Inception features (FID proper) are not
    available by default. Frechet distances over fixed random features still rank generators
    consistently, but they are NOT comparable to published FID values; the name says so.
    Supply a local TorchScript Inception/feature checkpoint with :func:`load_feature_extractor`.
    """
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, dim, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )
    for p in net.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(p[0].numel(), 1)) ** 0.5)
    return FeatureExtractor(f"random-conv-{dim}d-seed{seed}", net)


def load_feature_extractor(path: str) -> FeatureExtractor:
    """A local TorchScript feature network (e.g. an exported Inception-v3 pool3), named by its file."""
    net = torch.jit.load(path, map_location="cpu")
    return FeatureExtractor(f"torchscript:{path}", net)


def dice_score(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, eps: float = 1e-6) -> float:
    """Dice of two binary masks (mask fidelity of pseudo-labels vs conditioning masks)."""
    p, t = np.asarray(pred).astype(bool), np.asarray(target).astype(bool)
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p & t).sum() / (denom + eps))


def band_energy_stats(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Per slice: LL standard deviation and LH/HL/HH variance of the (unscaled) Haar bands."""
    w = haar_dwt2(images.float())
    return {
        "ll_std": w[:, 0].flatten(1).std(dim=1).numpy(),
        "lh_var": w[:, 1].flatten(1).var(dim=1).numpy(),
        "hl_var": w[:, 2].flatten(1).var(dim=1).numpy(),
        "hh_var": w[:, 3].flatten(1).var(dim=1).numpy(),
    }


def attention_overlap(attention: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Fraction of each saliency/attention map's mass inside the lesion mask (resized to it)."""
    m = nn.functional.adaptive_max_pool2d(mask.float(), attention.shape[-2:])
    a = attention.float().clamp(min=0)
    return ((a * m).flatten(1).sum(1) / a.flatten(1).sum(1).clamp(min=1e-12)).numpy()
