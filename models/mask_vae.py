"""MaskVAE3D: a 3D VAE over binary lesion-mask volumes (paper 3.3).

Contiguous axial mask slices are stacked and resampled to a fixed ``volume_size``; the encoder
maps a volume to a Gaussian latent, the decoder reconstructs mask logits. Reconstruction =
Dice + boundary-weighted BCE; KL with free bits (each latent dimension's KL below ``free_bits``
nats is not penalised, which keeps the latent from collapsing). Sampling decodes prior draws and
thresholds them; :func:`slice_volume` turns sampled volumes back into 2D conditioning masks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from salient.models.configs import MaskVAEConfig
from salient.models.ema import EMA
from salient.models.training import ResumableTrainer
from torch import nn
from torch.nn import functional as F

__all__ = ["MaskVAE3D", "MaskVAETrainer", "dice_loss", "mask_to_volume", "slice_volume", "vae_loss"]


def mask_to_volume(mask_zhw: np.ndarray, size: tuple[int, int, int]) -> np.ndarray | None:
    """Stack the contiguous lesion slices of a (Z, H, W) mask and resample to ``size`` (D, H, W).

    The in-plane field of view is kept (lesion position matters for conditioning); only the
    lesion's axial extent is stretched to D. Returns None for an empty mask.
    """
    zs = np.nonzero(mask_zhw.reshape(mask_zhw.shape[0], -1).any(axis=1))[0]
    if len(zs) == 0:
        return None
    stack = torch.from_numpy(mask_zhw[zs.min() : zs.max() + 1].astype(np.float32))[None, None]
    vol = F.interpolate(stack, size=size, mode="trilinear", align_corners=False)
    return (vol[0, 0] > 0.5).numpy().astype(np.uint8)


def slice_volume(volume: torch.Tensor, n_slices: int, hw: tuple[int, int]) -> torch.Tensor:
    """(D, H, W) binary volume -> (n_slices, 1, *hw) binary 2D conditioning masks."""
    if volume.ndim != 3:
        raise ValueError(f"volume must be (D, H, W), got {tuple(volume.shape)}")
    out = F.interpolate(volume.float()[None, None], size=(n_slices, *hw), mode="trilinear", align_corners=False)
    return (out[0, 0] > 0.5).float().unsqueeze(1)


def dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    return (1 - (2 * inter + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def _boundary3d(mask: torch.Tensor) -> torch.Tensor:
    dil = F.max_pool3d(mask, 3, stride=1, padding=1)
    ero = -F.max_pool3d(-mask, 3, stride=1, padding=1)
    return dil - ero


def vae_loss(
    logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, cfg: MaskVAEConfig
) -> dict[str, torch.Tensor]:
    """Dice + boundary-weighted BCE + free-bits KL. logits/target: (B, 1, D, H, W)."""
    weight = 1 + (cfg.boundary_weight - 1) * _boundary3d(target)
    bce = (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).mean()
    dice = dice_loss(torch.sigmoid(logits), target)
    kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(dim=0)  # (latent,)
    kl = torch.clamp(kl_per_dim, min=cfg.free_bits).sum()
    total = cfg.dice_weight * dice + bce + cfg.kl_weight * kl
    return {"dice": dice, "bce": bce, "kl": kl, "total": total}


class MaskVAE3D(nn.Module):
    """Args:
    cfg: :class:`~salient.models.configs.MaskVAEConfig`. Input/output volumes are
        (B, 1, *cfg.volume_size); each level halves every spatial size.
    """

    def __init__(self, cfg: MaskVAEConfig):
        super().__init__()
        self.cfg = cfg
        enc: list[nn.Module] = []
        ch = 1
        for width in cfg.channels:
            enc += [nn.Conv3d(ch, width, 3, stride=2, padding=1), nn.GroupNorm(min(4, width), width), nn.SiLU()]
            ch = width
        self.encoder = nn.Sequential(*enc)
        factor = 2 ** len(cfg.channels)
        self.bottom = (ch, *(s // factor for s in cfg.volume_size))
        flat = int(np.prod(self.bottom))
        self.to_mu = nn.Linear(flat, cfg.latent_dim)
        self.to_logvar = nn.Linear(flat, cfg.latent_dim)
        self.from_z = nn.Linear(cfg.latent_dim, flat)
        dec: list[nn.Module] = []
        widths = list(reversed(cfg.channels))
        for i, width in enumerate(widths):
            out = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            dec += [nn.ConvTranspose3d(width, out, 4, stride=2, padding=1), nn.GroupNorm(min(4, out), out), nn.SiLU()]
        dec.append(nn.Conv3d(widths[-1], 1, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[2:]) != tuple(self.cfg.volume_size):
            raise ValueError(f"volumes must be (B, 1, {self.cfg.volume_size}), got {tuple(x.shape)}")
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_z(z).view(-1, *self.bottom))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        return self.decode(mu + eps * (0.5 * logvar).exp()), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Decode ``n`` prior draws -> (n, D, H, W) binary (0/1 float) volumes."""
        z = torch.randn((n, self.cfg.latent_dim), generator=generator) * temperature
        return (torch.sigmoid(self.decode(z.to(self.to_mu.weight.device)))[:, 0] > 0.5).float()


class MaskVAETrainer(ResumableTrainer):
    """Epochs over in-memory mask volumes (N, D, H, W); AdamW + cosine decay + EMA; resumable."""

    _progress = "epoch"

    def __init__(self, model: MaskVAE3D, volumes: torch.Tensor, seed: int = 0, ema_decay: float = 0.99):
        if volumes.ndim != 4 or volumes.shape[0] < 1:
            raise ValueError(f"volumes must be (N, D, H, W) with N >= 1, got {tuple(volumes.shape)}")
        self.model, self.volumes, self.cfg = model, volumes.float(), model.cfg
        self.ema = EMA(model, ema_decay)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.cfg.epochs)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0

    def train(self, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
        losses = []
        self.model.train()
        while self.epoch < self.cfg.epochs:
            order = torch.randperm(len(self.volumes), generator=self.generator)
            epoch_terms: dict[str, float] = {}
            for start in range(0, len(order), self.cfg.batch_size):
                x = self.volumes[order[start : start + self.cfg.batch_size]].unsqueeze(1)
                logits, mu, logvar = self.model(x, self.generator)
                terms = vae_loss(logits, x, mu, logvar, self.cfg)
                self.optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                self.optimizer.step()
                self.ema.update(self.model)
                for k, v in terms.items():
                    epoch_terms[k] = epoch_terms.get(k, 0.0) + float(v.detach()) * len(x) / len(order)
            self.scheduler.step()
            self.epoch += 1
            losses.append(epoch_terms["total"])
            if on_epoch is not None:
                on_epoch(self.epoch, epoch_terms)
        return losses

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "ema": self.ema.module}
