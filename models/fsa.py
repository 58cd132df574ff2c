"""Mask-gated frequency scaling (FSA, paper 3.2.3).

Noisy wavelet coefficients are rescaled band by band before they enter the UNet, with separate
learnable scales inside the lesion and in the background; the down-sampled mask gates between
them::

    w~ = w * (m * exp(a_lesion) + (1 - m) * exp(a_background))      per band

Log-parametrised so scales stay positive; initialised to 1 (identity).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FrequencyScaling"]


class FrequencyScaling(nn.Module):
    """Args:
    bands: number of wavelet bands (4 for single-level Haar of one slice).
    """

    def __init__(self, bands: int = 4):
        super().__init__()
        if bands < 1:
            raise ValueError(f"bands must be >= 1, got {bands!r}")
        self.log_scale_lesion = nn.Parameter(torch.zeros(1, bands, 1, 1))
        self.log_scale_background = nn.Parameter(torch.zeros(1, bands, 1, 1))

    def forward(self, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """w: (B, bands, h, w); mask: (B, 1, h, w) in [0, 1] at the bands' resolution."""
        if mask.shape[-2:] != w.shape[-2:] or mask.shape[1] != 1:
            raise ValueError(f"mask must be (B, 1, {w.shape[-2]}, {w.shape[-1]}), got {tuple(mask.shape)}")
        gate = mask * self.log_scale_lesion.exp() + (1 - mask) * self.log_scale_background.exp()
        return w * gate

    def scales(self) -> dict[str, list[float]]:
        """Current per-band scales, for logging."""
        return {
            "lesion": self.log_scale_lesion.detach().exp().flatten().tolist(),
            "background": self.log_scale_background.detach().exp().flatten().tolist(),
        }
