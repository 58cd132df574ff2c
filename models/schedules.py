"""Pure schedule functions: the cosine noise schedule and the neighbour-guidance decay s_nei(t)."""

from __future__ import annotations

import math

import torch

__all__ = ["NEI_SCHEDULES", "cosine_alphas_cumprod", "ddim_timesteps", "nei_scale"]

NEI_SCHEDULES = ("constant", "linear", "cosine", "exponential")


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 (Nichol & Dhariwal 2021), float64, clipped betas."""
    if timesteps < 2:
        raise ValueError(f"timesteps must be >= 2, got {timesteps!r}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """Evenly strided timesteps from T-1 down to 0, ``steps`` of them (DDIM sampling)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in [1, {timesteps}], got {steps!r}")
    return sorted({round(x) for x in torch.linspace(0, timesteps - 1, steps).tolist()}, reverse=True)


def nei_scale(schedule: str, progress: float, start: float, end: float, rate: float = 4.0) -> float:
    """Neighbour guidance scale s_nei at sampling ``progress`` in [0, 1] (0 = first, noisiest step).

    Every decaying schedule equals ``start`` at progress 0 and ``end`` at progress 1; ``constant``
    is ``start`` throughout. Strong neighbour guidance early sets global anatomy; weaker guidance
    late lets the mask branch refine the lesion (paper 3.2.6).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "exponential":
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        decay = (math.exp(-rate * progress) - math.exp(-rate)) / (1 - math.exp(-rate))
        return end + (start - end) * decay
    raise ValueError(f"schedule must be one of {NEI_SCHEDULES}, got {schedule!r}")
