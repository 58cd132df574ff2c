"""Image artifacts for MLflow: a sample grid of synthetic pairs (PNG, written with Pillow)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["sample_grid_png"]


def _to_rgb(image: torch.Tensor, mask: torch.Tensor | None, colour: tuple[int, int, int]) -> np.ndarray:
    """(H, W) image in [-1, 1] -> (H, W, 3) uint8; ``mask`` outlines are drawn in ``colour``."""
    grey = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None:
        m = mask.bool().numpy()
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = colour
    return rgb


def sample_grid_png(pool: Mapping[str, torch.Tensor], path: Path, n: int = 8, scale: int = 3) -> Path | None:
    """Rows: synthetic slice | with its conditioning mask (green) | with the UCMT pseudo-label (red).

    Returns None when the pool is empty.
    """
    k = min(n, len(pool["image"]))
    if k == 0:
        return None
    rows = []
    for i in range(k):
        img = pool["image"][i, 0]
        rows.append(
            np.concatenate(
                [
                    _to_rgb(img, None, (0, 0, 0)),
                    _to_rgb(img, pool["cond_mask"][i, 0], (0, 220, 0)),
                    _to_rgb(img, pool["pseudo_mask"][i, 0], (230, 0, 0)),
                ],
                axis=1,
            )
        )
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST).save(path)
    return path
