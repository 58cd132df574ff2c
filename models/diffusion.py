"""Mask-conditioned diffusion in the wavelet domain (SALIENT) or pixel space (the baseline).

SALIENT (paper 3.2): a slice ``x`` in [-1, 1] is mapped to scaled Haar bands ``w0`` (4, H/2, W/2);
the forward process is ``w_t = sqrt(abar_t) w0 + sqrt(1 - abar_t) eps`` with the cosine schedule;
the UNet sees ``[FSA(w_t) || c_z]`` and predicts ``w0`` directly (x0 prediction). ``c_z`` holds
the down-sampled mask and the wavelet bands of the neighbour slices at ``neighbour_offsets``,
each with an indicator plane so "dropped" (classifier-free guidance) differs from "empty".

The pixel-space baseline (MedDDPM-style, paper 4.2) is the same module with ``domain="pixel"``:
no DWT, no FSA, neighbours as raw slices, a plain x0 MSE loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from salient.models.configs import DiffusionConfig, GuidanceConfig
from salient.models.distributed import DataParallel, world
from salient.models.ema import EMA
from salient.models.fsa import FrequencyScaling
from salient.models.losses import pixel_aux_loss, wavelet_loss
from salient.models.schedules import cosine_alphas_cumprod, ddim_timesteps, nei_scale
from salient.models.training import ResumableTrainer
from salient.models.unet import FiLMUNet
from salient.models.wavelet import HaarDWT
from torch import nn
from torch.nn import functional as F

__all__ = ["ConditionalDiffusion", "DiffusionBatch", "DiffusionTrainer", "structured_cfg"]


def structured_cfg(
    f_uncond: torch.Tensor, f_mask: torch.Tensor, f_full: torch.Tensor, s_mask: float, s_nei: float
) -> torch.Tensor:
    """Paper eq. 16-18: f(0) + s_mask [f(c_mask) - f(0)] + s_nei [f(c_mask+nei) - f(c_mask)]."""
    return f_uncond + s_mask * (f_mask - f_uncond) + s_nei * (f_full - f_mask)


@dataclass(frozen=True)
class DiffusionBatch:
    """Training data as tensors. image, mask: (N, 1, H, W); neighbours: (N, S, H, W)."""

    image: torch.Tensor
    mask: torch.Tensor
    neighbours: torch.Tensor

    def __post_init__(self) -> None:
        n = self.image.shape[0]
        if (
            self.mask.shape != self.image.shape
            or self.neighbours.shape[0] != n
            or self.neighbours.shape[-2:] != self.image.shape[-2:]
        ):
            raise ValueError(
                f"image {tuple(self.image.shape)}, mask {tuple(self.mask.shape)} and neighbours "
                f"{tuple(self.neighbours.shape)} must share N, H, W (image and mask (N, 1, H, W))"
            )


class ConditionalDiffusion(nn.Module):
    """Args:
    cfg: :class:`~salient.models.configs.DiffusionConfig`; ``cfg.domain`` picks SALIENT or baseline.
    """

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.wavelet = cfg.domain == "wavelet"
        n_nei = len(cfg.neighbour_offsets)
        self.data_channels = 4 if self.wavelet else 1
        cond_channels = (1 + 1) + (self.data_channels * n_nei + 1)  # mask+flag, neighbours+flag
        self.dwt = HaarDWT() if self.wavelet else None
        self.fsa = FrequencyScaling(4) if self.wavelet else None
        self.unet = FiLMUNet(
            self.data_channels + cond_channels,
            self.data_channels,
            cfg.base_channels,
            cfg.channel_mults,
            cfg.attention_levels,
            cfg.num_res_blocks,
        )
        self.alphas_cumprod: torch.Tensor
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(cfg.timesteps).float())

    # -- domain maps -------------------------------------------------------------------------
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) image -> model domain (scaled bands or the image itself)."""
        return self.dwt(image) if self.dwt is not None else image

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwt.inverse(x) if self.dwt is not None else x

    def _mask_at(self, mask: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(mask, 2) if self.wavelet else mask

    def condition(
        self, mask: torch.Tensor, neighbours: torch.Tensor, keep_mask: torch.Tensor, keep_nei: torch.Tensor
    ) -> torch.Tensor:
        """c_z: (B, C_cond, h, w). keep_*: (B,) 1 keeps the condition, 0 drops it (CFG null)."""
        km, kn = keep_mask.view(-1, 1, 1, 1).float(), keep_nei.view(-1, 1, 1, 1).float()
        m = self._mask_at(mask)
        nei = self.dwt.split(neighbours) if self.dwt is not None else neighbours
        ones = torch.ones_like(m)
        return torch.cat([m * km, ones * km, nei * kn, ones * kn], dim=1)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        neighbours: torch.Tensor,
        keep_mask: torch.Tensor,
        keep_nei: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the clean sample x0 (model domain) from the noisy ``x_t`` at timesteps ``t``."""
        h = self.fsa(x_t, self._mask_at(mask) * keep_mask.view(-1, 1, 1, 1).float()) if self.fsa is not None else x_t
        return self.unet(torch.cat([h, self.condition(mask, neighbours, keep_mask, keep_nei)], dim=1), t)

    # -- training -----------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def loss(self, batch: DiffusionBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training loss on a minibatch, with condition dropout for guidance. Returns named terms."""
        x0 = self.encode(batch.image)
        b, dev = x0.shape[0], x0.device
        t = torch.randint(0, self.cfg.timesteps, (b,), generator=generator, device="cpu").to(dev)
        noise = torch.randn(x0.shape, generator=generator, device="cpu").to(dev)
        # Condition dropout: all conditions at once (the unconditional branch), else each alone.
        keep_any = torch.rand(b, generator=generator) >= self.cfg.p_drop_all
        keep_mask = (keep_any & (torch.rand(b, generator=generator) >= self.cfg.p_drop_mask)).to(dev)
        keep_nei = (keep_any & (torch.rand(b, generator=generator) >= self.cfg.p_drop_nei)).to(dev)
        pred = self(self.q_sample(x0, t, noise), t, batch.mask, batch.neighbours, keep_mask, keep_nei)
        if not self.wavelet:
            mse = F.mse_loss(pred, x0)
            return {"mse": mse, "total": mse}
        terms = wavelet_loss(pred, x0, (F.max_pool2d(batch.mask, 2) > 0).float(), self.cfg.loss)
        aux = pixel_aux_loss(self.decode(pred), batch.image, batch.mask, self.cfg.loss)
        return {**terms, **aux, "total": terms["total"] + aux["aux"]}

    # -- sampling -----------------------------------------------------------------------------
    def guided_x0(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        neighbours: torch.Tensor,
        s_mask: float,
        s_nei: float,
    ) -> torch.Tensor:
        """Structured CFG: the three branches (uncond, mask, mask+nei) in ONE batched forward."""
        b = x_t.shape[0]
        keep_mask = torch.cat([torch.zeros(b), torch.ones(b), torch.ones(b)]).to(x_t.device)
        keep_nei = torch.cat([torch.zeros(b), torch.zeros(b), torch.ones(b)]).to(x_t.device)
        out = self(
            x_t.repeat(3, 1, 1, 1),
            t.repeat(3),
            mask.repeat(3, 1, 1, 1),
            neighbours.repeat(3, 1, 1, 1),
            keep_mask,
            keep_nei,
        )
        f_uncond, f_mask, f_full = out.chunk(3)
        return structured_cfg(f_uncond, f_mask, f_full, s_mask, s_nei)

    @torch.no_grad()
    def sample(
        self,
        mask: torch.Tensor,
        neighbours: torch.Tensor,
        guidance: GuidanceConfig,
        generator: torch.Generator | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Synthesize slices for (B, 1, H, W) masks and (B, S, H, W) neighbours -> (B, 1, H, W) in [-1, 1].

        DDIM (strided, ``guidance.sampling_steps``) or ancestral DDPM over every timestep. Both
        are written out here: MONAI's DDPMScheduler.step assumes consecutive timesteps.
        """
        b, _, hh, ww = mask.shape
        size = (hh // 2, ww // 2) if self.wavelet else (hh, ww)
        x = torch.randn((b, self.data_channels, *size), generator=generator).to(mask.device)
        steps = (
            ddim_timesteps(self.cfg.timesteps, guidance.sampling_steps)
            if guidance.sampler == "ddim"
            else list(range(self.cfg.timesteps - 1, -1, -1))
        )
        ab = self.alphas_cumprod
        for i, t in enumerate(steps):
            progress = i / max(len(steps) - 1, 1)
            s_nei = nei_scale(
                guidance.nei_schedule, progress, guidance.s_nei_start, guidance.s_nei_end, guidance.nei_decay_rate
            )
            tt = torch.full((b,), t, device=mask.device, dtype=torch.long)
            x0 = self.guided_x0(x, tt, mask, neighbours, guidance.s_mask, s_nei).clamp(-1, 1)
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            ab_t = ab[t]
            ab_prev = ab[t_prev] if t_prev >= 0 else ab.new_tensor(1.0)
            if guidance.sampler == "ddim":
                eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
                sigma = guidance.eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).clamp(min=0).sqrt()
                x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
                if t_prev >= 0 and guidance.eta > 0:
                    x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
            else:
                alpha_t = ab_t / ab_prev
                mean = (ab_prev.sqrt() * (1 - alpha_t) * x0 + alpha_t.sqrt() * (1 - ab_prev) * x) / (1 - ab_t)
                var = (1 - alpha_t) * (1 - ab_prev) / (1 - ab_t)
                x = mean + (var.sqrt() * torch.randn(x.shape, generator=generator).to(x.device) if t_prev >= 0 else 0)
            if on_step is not None:
                on_step(i + 1, len(steps))
        return self.decode(x).clamp(-1, 1)


class _LossTerms(nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it (DDP syncs
    gradients only through its own forward)."""

    def __init__(self, model: ConditionalDiffusion):
        super().__init__()
        self.model = model

    def forward(self, batch: DiffusionBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.model.loss(batch, generator)


class DiffusionTrainer(ResumableTrainer):
    """AdamW + cosine learning-rate decay + EMA over in-memory tensors; resumable via state dicts.

    Data-parallel when a ``torch.distributed`` process group is initialised (DDP; see
    :mod:`salient.models.distributed` for the rule): ``cfg.batch_size`` is the global batch,
    drawn as one worker draws it and split over the workers; the loss it returns is the global
    batch mean.

    Args:
        model: the diffusion model to train.
        data: all training slices; minibatches are drawn with replacement, seeded.
        seed: seeds the minibatch draws (one generator) and, per worker, the timesteps, noise and
            condition dropout (a second one, :func:`~salient.models.distributed.rank_seed`).
        device: where to train (default: the CPU; under a process group, the worker's CUDA device
            when it has one). ``data`` stays where it is; each minibatch is moved.
    """

    _progress = "step"

    def __init__(
        self, model: ConditionalDiffusion, data: DiffusionBatch, seed: int = 0, device: str | torch.device | None = None
    ):
        size, _ = world()
        if device is None:
            gpu = size > 1 and torch.cuda.is_available()
            device = torch.device("cuda", torch.cuda.current_device()) if gpu else "cpu"
        self.device = torch.device(device)
        if size > 1 and model.cfg.batch_size % size:
            raise ValueError(
                f"batch_size {model.cfg.batch_size} (the global batch) must be divisible by the {size} workers"
            )
        self.model, self.data, self.cfg = model.to(self.device), data, model.cfg
        self.ema = EMA(model, model.cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.cfg.train_steps)
        self.generator = torch.Generator().manual_seed(seed)
        self.parallel = DataParallel(_LossTerms(model), seed, self.device)
        self.step = 0

    def _batch(self, idx: torch.Tensor) -> DiffusionBatch:
        d, dev = self.data, self.device
        return DiffusionBatch(d.image[idx].to(dev), d.mask[idx].to(dev), d.neighbours[idx].to(dev))

    def train(
        self, steps: int | None = None, on_step: Callable[[int, dict[str, float]], None] | None = None
    ) -> list[float]:
        """Run ``steps`` more optimisation steps (default: up to ``cfg.train_steps``); returns losses
        (the global batch mean of each step)."""
        end = self.cfg.train_steps if steps is None else min(self.step + steps, self.cfg.train_steps)
        losses = []
        self.model.train()
        n = self.data.image.shape[0]
        dp = self.parallel
        while self.step < end:
            idx = torch.randint(0, n, (min(self.cfg.batch_size, n),), generator=self.generator)
            mine = dp.mine(idx)  # this rank's share (all of it on one worker)
            terms = dp.module(self._batch(mine), dp.generator)  # per-sample randomness: the rank's own stream
            scale = dp.scale(len(mine), len(idx))
            self.optimizer.zero_grad(set_to_none=True)
            (terms["total"] * scale if scale != 1.0 else terms["total"]).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update(self.model)
            self.step += 1
            total = dp.global_mean(terms["total"], len(mine), len(idx))
            losses.append(total)
            if on_step is not None:
                on_step(self.step, {**{k: float(v.detach()) for k, v in terms.items()}, "total": total})
        return losses

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # every rank's noise stream (a collective under DDP), so a resumed run continues bit for bit
        state["rank_generators"] = self.parallel.generator_states()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.parallel.load_generator_states(state.get("rank_generators"))

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "ema": self.ema.module}
