"""EViT-style subject aggregator over per-slice embeddings (paper 3.5, 4.1; Islam et al. 2024).

Slice embeddings ordered by slice index are padded/truncated to ``max_len`` with a padding mask,
projected to ``d_model``, given learned positional embeddings and a CLS token, and passed through
a Transformer encoder. From the second layer on, each layer keeps the ``keep_rate`` fraction of
slice tokens the CLS token attends to most and fuses the rest into one token (their
attention-weighted mean), so the subject decision concentrates on informative slices. Padded
tokens are masked everywhere: their values can never change the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from salient.models.configs import AggregatorConfig
from torch import nn

__all__ = ["AggregatorTrainer", "EViTAggregator", "pad_sequences"]


def pad_sequences(seqs: Sequence[torch.Tensor], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (n_i, F) -> ((B, max_len, F), padding mask (B, max_len) True = padding).

    Longer sequences are subsampled evenly (the whole body stays covered, in slice order).
    """
    if not seqs:
        raise ValueError("need at least one sequence")
    feat = seqs[0].shape[1]
    out = torch.zeros(len(seqs), max_len, feat)
    pad = torch.ones(len(seqs), max_len, dtype=torch.bool)
    for i, s in enumerate(seqs):
        if s.ndim != 2 or s.shape[1] != feat or s.shape[0] == 0:
            raise ValueError(f"sequence {i} must be (n > 0, {feat}), got {tuple(s.shape)}")
        if s.shape[0] > max_len:
            s = s[torch.linspace(0, s.shape[0] - 1, max_len).round().long()]
        out[i, : s.shape[0]] = s
        pad[i, : s.shape[0]] = False
    return out, pad


class EViTLayer(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        out, w = self.attn(h, h, h, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
        x = x + out
        x = x + self.mlp(self.norm2(x))
        return x, w[:, 0, 1:]  # CLS -> slice token attention (B, L)


class EViTAggregator(nn.Module):
    """Args:
    in_dim: slice embedding size (2048 for ResNet-50).
    cfg: :class:`~salient.models.configs.AggregatorConfig`.

    ``forward(x (B, L, in_dim), pad (B, L) bool)`` -> subject logits (B,).
    """

    def __init__(self, in_dim: int, cfg: AggregatorConfig):
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim!r}")
        self.cfg = cfg
        self.proj = nn.Linear(in_dim, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_len, cfg.d_model))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.layers = nn.ModuleList(EViTLayer(cfg.d_model, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        if length != self.cfg.max_len or pad.shape != (b, length):
            raise ValueError(
                f"expected x (B, {self.cfg.max_len}, F) and pad (B, {self.cfg.max_len}), "
                f"got {tuple(x.shape)}, {tuple(pad.shape)}"
            )
        if pad.all(dim=1).any():
            raise ValueError("every subject needs at least one slice (a row of pad is all True)")
        tokens = self.proj(x) + self.pos
        tokens = tokens.masked_fill(pad.unsqueeze(-1), 0.0)  # padded values never enter the model
        h = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1)
        pad_all = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        for i, layer in enumerate(self.layers):
            h, cls_att = layer(h, pad_all)
            if i >= 1 and i < len(self.layers) - 1 and self.cfg.keep_rate < 1.0:
                h, pad_all = self._select(h, pad_all, cls_att)
        return self.head(self.norm(h[:, 0])).squeeze(1)

    def _select(
        self, h: torch.Tensor, pad_all: torch.Tensor, cls_att: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """EViT token selection: keep the top-k attended slice tokens, fuse the rest into one."""
        tokens, pad = h[:, 1:], pad_all[:, 1:]
        n = tokens.shape[1]
        k = max(1, math.ceil(self.cfg.keep_rate * n))
        if k >= n:
            return h, pad_all
        att = cls_att.masked_fill(pad, -1.0)  # padding sorts last and is never "kept" before real slices
        order = torch.argsort(att, dim=1, descending=True)
        keep, rest = order[:, :k], order[:, k:]
        gather = lambda t, idx: torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        kept, kept_pad = gather(tokens, keep), torch.gather(pad, 1, keep)
        rest_w = torch.gather(cls_att.masked_fill(pad, 0.0), 1, rest)
        rest_w = rest_w * (~torch.gather(pad, 1, rest))
        denom = rest_w.sum(dim=1, keepdim=True)
        fused = (gather(tokens, rest) * (rest_w / denom.clamp(min=1e-12)).unsqueeze(-1)).sum(dim=1, keepdim=True)
        fused_pad = denom <= 0  # nothing real left to fuse: the fused token is padding
        h = torch.cat([h[:, :1], kept, fused], dim=1)
        return h, torch.cat([pad_all[:, :1], kept_pad, fused_pad], dim=1)


class AggregatorTrainer:
    """Subject-level training with balanced batches; inputs from :func:`pad_sequences`.

    Every batch holds ``batch_size // 2`` positives and as many negatives (drawn with replacement
    within each class), whatever the class ratio of the training subjects - so the positive share
    is one half for every seed size and dose. An epoch is ``ceil(n / batch_size)`` batches, so the
    number of optimiser steps depends only on how many subjects it trains on.
    """

    def __init__(self, cfg: AggregatorConfig, x: torch.Tensor, pad: torch.Tensor, labels: torch.Tensor, seed: int = 0):
        torch.manual_seed(seed)
        self.cfg, self.x, self.pad, self.labels = cfg, x, pad, labels.float()
        self.model = EViTAggregator(x.shape[-1], cfg)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs)
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = self.steps = 0
        self.positives = torch.nonzero(self.labels > 0.5).flatten()
        self.negatives = torch.nonzero(self.labels <= 0.5).flatten()
        if len(self.positives) == 0 or len(self.negatives) == 0:
            raise ValueError(
                f"the aggregator needs positive and negative subjects, got {len(self.positives)} and "
                f"{len(self.negatives)}"
            )
        self.half = max(1, cfg.batch_size // 2)
        self.batches_per_epoch = math.ceil(len(self.labels) / (2 * self.half))

    def _batch(self) -> torch.Tensor:
        pick = lambda group: group[torch.randint(len(group), (self.half,), generator=self.generator)]  # noqa: E731
        return torch.cat([pick(self.positives), pick(self.negatives)])

    def train(self, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
        history = []
        while self.epoch < self.cfg.epochs:
            self.model.train()
            total = 0.0
            for _ in range(self.batches_per_epoch):
                b = self._batch()
                loss = nn.functional.binary_cross_entropy_with_logits(
                    self.model(self.x[b], self.pad[b]), self.labels[b]
                )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.steps += 1
                total += float(loss.detach()) / self.batches_per_epoch
            self.scheduler.step()
            self.epoch += 1
            history.append(total)
            if on_epoch is not None:
                on_epoch(self.epoch, {"loss": total})
        return history

    @torch.no_grad()
    def predict(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return torch.sigmoid(self.model(x, pad))
