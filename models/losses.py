"""Wavelet-aware training objective (paper eq. 12-15) and the pixel-space auxiliary terms.

All functions are pure: tensors in, a dict of named scalar terms out (``total`` included), so the
platform can log every term. Each term is zero when the prediction equals the target.
"""

from __future__ import annotations

import torch
from salient.models.configs import WaveletLossConfig
from torch.nn import functional as F

__all__ = ["boundary_map", "dilate", "pixel_aux_loss", "wavelet_loss"]

_EPS = 1e-6


def dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Binary dilation of (B, 1, H, W) masks by a square of half-width ``width``."""
    return F.max_pool2d(mask, 2 * width + 1, stride=1, padding=width) if width > 0 else mask


def boundary_map(mask: torch.Tensor, width: int) -> torch.Tensor:
    """1 within ``width`` pixels of a lesion edge (dilation minus erosion), else 0."""
    if width == 0:
        return torch.zeros_like(mask)
    eroded = -dilate(-mask, width)
    return dilate(mask, width) - eroded


def _log_std(x: torch.Tensor) -> torch.Tensor:
    """Per-sample log standard deviation over (H, W): (B, C, H, W) -> (B, C)."""
    return torch.log(x.flatten(2).std(dim=-1, unbiased=False) + _EPS)


def wavelet_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: WaveletLossConfig
) -> dict[str, torch.Tensor]:
    """Args:
    pred, target: (B, 4, h, w) predicted and clean bands (LL, LH, HL, HH).
    mask: (B, 1, h, w) lesion mask at band resolution.
    cfg: weights; ``band_weights`` and the boundary weighting form W of eq. 12.

    Returns ``{"wavelet", "ll", "hf", "total"}`` (``total`` excludes the pixel terms).
    """
    if pred.shape != target.shape or pred.shape[1] != 4:
        raise ValueError(f"pred and target must both be (B, 4, h, w), got {tuple(pred.shape)}, {tuple(target.shape)}")
    band_w = pred.new_tensor(cfg.band_weights).view(1, 4, 1, 1)
    edge = boundary_map(mask, cfg.boundary_width)
    weight = band_w * (1 + (cfg.boundary_weight - 1) * edge)
    # HH moderation: inside the boundary band, damp the diagonal band's up-weighting (eq. 12).
    hh = torch.ones_like(weight)
    hh[:, 3:4] = 1 - (1 - cfg.hh_moderation) * edge
    l_wavelet = (weight * hh * (pred - target).abs()).mean()

    ll_p, ll_t = pred[:, :1], target[:, :1]
    l_mu = (ll_p.mean(dim=(2, 3)) - ll_t.mean(dim=(2, 3))).pow(2).mean()
    l_sigma = (_log_std(ll_p) - _log_std(ll_t)).pow(2).mean()
    l_ll = cfg.lambda_mu * l_mu + cfg.lambda_sigma * l_sigma

    hf_w = pred.new_tensor(cfg.lambda_hf).view(1, 3)
    l_hf = (hf_w * (_log_std(pred[:, 1:]) - _log_std(target[:, 1:])).pow(2)).sum(dim=1).mean()
    return {"wavelet": l_wavelet, "ll": l_ll, "hf": l_hf, "total": l_wavelet + l_ll + l_hf}


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def pixel_aux_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cfg: WaveletLossConfig, width: int = 2
) -> dict[str, torch.Tensor]:
    """Mild pixel-space constraints in the lesion and peri-lesional region (paper 3.2.5).

    Args:
        pred, target: (B, 1, H, W) reconstructed and real slices in [-1, 1].
        mask: (B, 1, H, W) lesion mask; the region is the mask dilated by ``width`` pixels.

    Returns ``{"edge", "saturation", "aux"}`` with ``aux = lambda_edge*edge + lambda_sat*saturation``.
    """
    region = dilate(mask, width)
    (pgx, pgy), (tgx, tgy) = _gradients(pred), _gradients(target)
    rx, ry = region[..., :, 1:] * region[..., :, :-1], region[..., 1:, :] * region[..., :-1, :]
    denom = rx.sum() + ry.sum() + _EPS
    edge = ((rx * (pgx - tgx).abs()).sum() + (ry * (pgy - tgy).abs()).sum()) / denom
    # Saturation: values pushed beyond the window's range where the target is not there.
    over = F.relu(pred.abs() - 1.0) * region
    saturation = over.pow(2).sum() / (region.sum() + _EPS)
    return {"edge": edge, "saturation": saturation, "aux": cfg.lambda_edge * edge + cfg.lambda_sat * saturation}
