"""Data-parallel training with ``torch.distributed`` only: what a trainer needs to run the same
optimisation on several workers (DDP). No Ray here; the platform launches the workers.

The rule every data-parallel trainer follows, so that W workers optimise what one worker would:

* the **global** minibatch is drawn exactly as a single worker draws it (the same seeded index
  generator on every rank); rank ``r`` takes ``indices[r::W]``;
* each rank draws its own per-sample randomness (noise, timesteps, condition dropout) from a
  generator seeded by ``(seed, rank)``;
* DDP averages the gradients over ranks; each rank scales its loss by ``W * n_r / n`` so the
  average is the mean over the global batch even when ``n`` is not divisible by ``W``;
* the loss a trainer reports is the global batch mean (all-reduced);
* a checkpoint holds every rank's generator state, so a resumed run continues bit for bit.

One worker follows the same rule (W = 1: the whole batch, the rank-0 stream). So a 2-worker run
sees the same batches in the same order as a 1-worker run with the same global batch; only which
noise draw meets which sample differs (the same distribution, other draws).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DataParallel", "rank_seed", "world"]


def world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s per-sample generator (distinct per rank, fixed per seed)."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63 - 1)


class DataParallel:
    """The data-parallel side of one trainer.

    Args:
        module: what the loss is computed by (wrapped in DDP when there are several workers; a
            module whose ``forward`` returns the loss terms).
        seed: the trainer's seed (per-rank generators are derived from it).
        device: where the module lives (``cuda`` devices get their own DDP device id).
    """

    def __init__(self, module: nn.Module, seed: int, device: torch.device):
        self.size, self.rank = world()
        self.device = device
        self.generator = torch.Generator().manual_seed(rank_seed(seed, self.rank))
        self.module: nn.Module = module
        if self.size > 1:
            ids = [device.index] if device.type == "cuda" and device.index is not None else None
            self.module = nn.parallel.DistributedDataParallel(module, device_ids=ids)

    @property
    def active(self) -> bool:
        return self.size > 1

    def mine(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global minibatch ``indices`` (every rank draws the same)."""
        if len(indices) < self.size:
            raise ValueError(f"a global batch of {len(indices)} cannot be split over {self.size} workers")
        return indices[self.rank :: self.size]

    def scale(self, n_mine: int, n_global: int) -> float:
        """Factor on this rank's mean loss so DDP's gradient average is the global batch mean."""
        return self.size * n_mine / n_global

    def global_mean(self, value: torch.Tensor, n_mine: int, n_global: int) -> float:
        """The global batch mean of a per-rank mean ``value`` (all-reduced; every rank gets it)."""
        if not self.active:
            return float(value.detach())
        total = (value.detach().float() * (n_mine / n_global)).reshape(1).to(self.device)
        dist.all_reduce(total)
        return float(total.cpu())

    def generator_states(self) -> list[torch.Tensor]:
        """Every rank's generator state, in rank order (a collective: every rank must call it)."""
        if not self.active:
            return [self.generator.get_state()]
        states: list[Any] = [None] * self.size
        dist.all_gather_object(states, self.generator.get_state())
        return [torch.as_tensor(s) for s in states]

    def load_generator_states(self, states: list[torch.Tensor] | None) -> None:
        """Restore this rank's generator from a checkpoint written by as many workers; a checkpoint
        of another worker count leaves the freshly seeded one (training continues, other draws)."""
        if states is not None and len(states) == self.size:
            self.generator.set_state(states[self.rank])
