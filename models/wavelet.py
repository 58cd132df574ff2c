"""Single-level 2D Haar DWT / IDWT in torch (paper eq. 1, 5).

Band order is (LL, LH, HL, HH) and matches ``pywt.dwt2(x, "haar")`` returning
``(cA, (cH, cV, cD))``: LL = cA, LH = cH (horizontal detail), HL = cV (vertical detail),
HH = cD (diagonal detail). For a 2x2 block ``[[a, b], [c, d]]``::

    LL = (a + b + c + d) / 2      LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2      HH = (a - b - c + d) / 2

The transform is orthonormal, so the inverse is the transposed convolution with the same
filters and reconstruction is exact up to float rounding.

Diffusion range: for an image in [-1, 1] every band spans [-2, 2] (LL of a constant 1 image is
2). Samplers clip the predicted clean sample to [-1, 1], which would clip LL, so
:class:`HaarDWT` multiplies every band by ``band_scale`` (default 0.5): the scaled bands lie in
[-1, 1] exactly and :meth:`HaarDWT.inverse` undoes the scale.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BANDS", "HaarDWT", "haar_dwt2", "haar_idwt2"]

BANDS = ("LL", "LH", "HL", "HH")


def _filters(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    f = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],
            [[1.0, 1.0], [-1.0, -1.0]],
            [[1.0, -1.0], [1.0, -1.0]],
            [[1.0, -1.0], [-1.0, 1.0]],
        ],
        dtype=dtype,
    )
    return (f / 2.0).unsqueeze(1)  # (4, 1, 2, 2)


def _check_even(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(
            f"Haar DWT needs even height and width, got {tuple(x.shape[-2:])}; "
            "crop or pad the slices (study: cohort.preprocessing.roi) to even sizes"
        )


def haar_dwt2(x: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), channels ordered (c0: LL, LH, HL, HH, c1: ...)."""
    _check_even(x)
    b, c, h, w = x.shape
    f = (filters if filters is not None else _filters(x.dtype)).to(x)
    out = F.conv2d(x.reshape(b * c, 1, h, w), f, stride=2)
    return out.reshape(b, 4 * c, h // 2, w // 2)


def haar_idwt2(w: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4C, h, w) -> (B, C, 2h, 2w); the exact inverse of :func:`haar_dwt2`."""
    if w.ndim != 4 or w.shape[1] % 4:
        raise ValueError(f"expected (B, 4C, h, w) wavelet bands, got shape {tuple(w.shape)}")
    b, c4, h, ww = w.shape
    f = (filters if filters is not None else _filters(w.dtype)).to(w)
    out = F.conv_transpose2d(w.reshape(b * c4 // 4, 4, h, ww), f, stride=2)
    return out.reshape(b, c4 // 4, 2 * h, 2 * ww)


class HaarDWT(nn.Module):
    """Scaled Haar transform used by the wavelet diffusion model.

    Args:
        band_scale: multiplier per band (LL, LH, HL, HH) applied after the DWT; 0.5 maps an image
            in [-1, 1] to bands in [-1, 1] (see module docstring).
    """

    def __init__(self, band_scale: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5)):
        super().__init__()
        if len(band_scale) != 4 or any(s <= 0 for s in band_scale):
            raise ValueError(f"band_scale must be 4 positive values, got {band_scale!r}")
        self.filters: torch.Tensor
        self.band_scale: torch.Tensor
        self.register_buffer("filters", _filters())
        self.register_buffer("band_scale", torch.tensor(band_scale).view(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) image -> (B, 4, H/2, W/2) scaled bands."""
        if x.shape[1] != 1:
            raise ValueError(f"HaarDWT expects single-channel slices, got {x.shape[1]} channels")
        return haar_dwt2(x, self.filters) * self.band_scale

    def inverse(self, w: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) scaled bands -> (B, 1, 2h, 2w) image."""
        return haar_idwt2(w / self.band_scale, self.filters)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a multi-slice stack (B, S, H, W) into (B, 4S, H/2, W/2) scaled bands."""
        b, s, h, w = x.shape
        return self(x.reshape(b * s, 1, h, w)).reshape(b, 4 * s, h // 2, w // 2)
