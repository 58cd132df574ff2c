"""Time-conditioned residual UNet with FiLM scale-shift (paper 3.2.3).

Four-level encoder-decoder with residual blocks, symmetric skip connections and self-attention
(MONAI's :class:`~monai.networks.blocks.SABlock`) at the deepest levels. The sinusoidal timestep
embedding modulates every residual block by FiLM: ``h = norm(h) * (1 + scale) + shift``. (MONAI's
DiffusionModelUNet only adds the embedding, hence this module.)
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import SABlock
from torch import nn
from torch.nn import functional as F

__all__ = ["FiLMUNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class FiLMResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        assert self.conv2.bias is not None
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class Attention2d(nn.Module):
    """Spatial self-attention over the h*w positions of a feature map (MONAI SABlock)."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        heads = math.gcd(channels, heads) or 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attn = SABlock(hidden_size=channels, num_heads=heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)  # (B, hw, C)
        return x + self.attn(seq).transpose(1, 2).reshape(b, c, h, w)


class FiLMUNet(nn.Module):
    """Args:
    in_channels: input channels, e.g. 4 noisy bands + conditioning channels.
    out_channels: predicted clean channels (4 wavelet bands, or 1 pixel slice).
    base_channels: width of level 0; level ``i`` has ``base_channels * channel_mults[i]``.
    channel_mults: one multiplier per level (the paper uses four levels).
    attention_levels: per level, whether its blocks are followed by self-attention.
    num_res_blocks: residual blocks per level in the encoder (decoder: one more, for the skip).

    Input (B, in_channels, H, W) with H and W divisible by 2**(levels-1); output
    (B, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2, 2, 4),
        attention_levels: tuple[bool, ...] = (False, False, True, True),
        num_res_blocks: int = 1,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if len(attention_levels) != len(channel_mults):
            raise ValueError(
                f"attention_levels ({len(attention_levels)}) must match channel_mults ({len(channel_mults)})"
            )
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks!r}")
        self.levels = len(channel_mults)
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]

        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths, ch = [], base_channels
        for i, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(FiLMResBlock(ch, width, emb_dim))
                ch = width
            self.down.append(blocks)
            self.down_attn.append(Attention2d(ch) if attention_levels[i] else nn.Identity())
            skip_widths.append(ch)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i < self.levels - 1 else nn.Identity())

        self.mid1 = FiLMResBlock(ch, ch, emb_dim)
        self.mid_attn = Attention2d(ch)
        self.mid2 = FiLMResBlock(ch, ch, emb_dim)

        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            width = widths[i]
            self.up.append(
                nn.ModuleList(
                    [FiLMResBlock(ch + skip_widths[i], width, emb_dim)]
                    + [FiLMResBlock(width, width, emb_dim) for _ in range(num_res_blocks - 1)]
                )
            )
            ch = width
            self.up_attn.append(Attention2d(ch) if attention_levels[i] else nn.Identity())
            self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1) if i > 0 else nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by {factor} ({self.levels} levels)")
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        skips = []
        for blocks, attn, down in zip(self.down, self.down_attn, self.downsample, strict=True):
            for block in blocks:  # type: ignore[attr-defined]  # a ModuleList
                h = block(h, emb)
            h = attn(h)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blocks, attn, up in zip(self.up, self.up_attn, self.upsample, strict=True):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:  # type: ignore[attr-defined]  # a ModuleList
                h = block(h, emb)
            h = attn(h)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(h)
