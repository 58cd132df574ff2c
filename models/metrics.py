"""Image and generator metrics (paper 4.2): MS-SSIM for small images, Frechet distance with a
named feature extractor, mask Dice, wavelet band energies and saliency-mask overlap. (Subject-level
detection statistics - AUPRC, AUROC, bootstrap, prevalence subsampling - are in
:mod:`salient.dashboards.stats`.)

Pure functions of arrays/tensors; nothing here reads files except
:func:`load_feature_extractor`, which loads a checkpoint the *caller* names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from salient.models.wavelet import haar_dwt2
from scipy import linalg
from torch import nn

__all__ = [
    "FeatureExtractor",
    "attention_overlap",
    "band_energy_stats",
    "dice_score",
    "frechet_distance",
    "ms_ssim",
    "ms_ssim_plan",
    "random_conv_extractor",
]


_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class MSSSIMResult:
    value: float
    scales: int
    kernel_size: int


def ms_ssim_plan(size: int) -> tuple[int, int]:
    """(scales, kernel) of MS-SSIM for ``size`` px: the most scales (at most 5), then the larger
    kernel (11, else 7), such that the coarsest scale (``size // 2**(scales-1)``) still holds the
    kernel and MONAI's own size rule (``size // max(1, scales-1)**2 > kernel - 1``) holds."""
    for scales in range(5, 0, -1):
        for kernel in (11, 7):
            coarsest = size // 2 ** (scales - 1)  # >= kernel also gives size > (kernel-1) * 2**(scales-1)
            if coarsest >= kernel and size // max(1, scales - 1) ** 2 > kernel - 1:
                return scales, kernel
    raise ValueError(f"MS-SSIM needs images of at least 16 px, got {size}")


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
    scales, kernel = ms_ssim_plan(size)
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
