"""Mask-guided ResNet slice detector (paper 3.5).

A MONAI ResNet (bottleneck blocks; (3, 4, 6, 3) x (64, 128, 256, 512) is ResNet-50) with two
mask-guided attention (MGA) blocks, after the intermediate stage (layer 2) and the deep stage
(layer 4). Each MGA block predicts a spatial map ``a = sigmoid(conv(f))`` and re-weights its
features ``f * (1 + a)``. Training: focal loss on the slice label plus, weighted by
``align_weight``, the MSE between each max-normalised attention map and the lesion mask resized
to its resolution, on slices that have a lesion. ``mask_guidance=False`` turns the alignment off
(the paper's "no mask guidance" ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from salient.models.augment import augment
from salient.models.backbone import ResNetEncoder
from salient.models.configs import DetectorConfig
from salient.models.training import ResumableTrainer
from torch import nn
from torch.nn import functional as F

__all__ = [
    "DetectorTrainer",
    "IndexStream",
    "MaskGuidedAttention",
    "MaskGuidedResNet",
    "attention_alignment_loss",
    "augment",
    "balanced_indices",
    "focal_loss",
]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Binary focal loss, mean over the batch: -alpha_t (1 - p_t)^gamma log p_t."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * ce).mean()


class MaskGuidedAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, max(channels // 8, 4), 1), nn.ReLU(), nn.Conv2d(max(channels // 8, 4), 1, 1)
        )

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.sigmoid(self.score(f))
        return f * (1 + a), a


def attention_alignment_loss(att: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between the max-normalised attention map and the mask resized to it (lesion slices only)."""
    has_lesion = mask.flatten(1).amax(dim=1) > 0
    if not has_lesion.any():
        return att.sum() * 0.0
    a = att[has_lesion]
    a = a / (a.flatten(1).amax(dim=1).view(-1, 1, 1, 1) + 1e-6)
    m = F.adaptive_avg_pool2d(mask[has_lesion], (a.shape[-2], a.shape[-1]))
    m = m / (m.flatten(1).amax(dim=1).view(-1, 1, 1, 1) + 1e-6)
    return F.mse_loss(a, m)


class MaskGuidedResNet(nn.Module):
    """Args:
    cfg: :class:`~salient.models.configs.DetectorConfig`. Input (B, 1 or 3, H, W) per
        ``cfg.input_mode``; ``forward`` returns (logits (B,), [attention maps]).
    """

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.in_channels = 3 if cfg.input_mode == "triplet" else 1
        self.encoder = ResNetEncoder("bottleneck", cfg.layers, cfg.widths, self.in_channels, cfg.stem_downsample)
        self.mga_mid = MaskGuidedAttention(self.encoder.channels[1])
        self.mga_deep = MaskGuidedAttention(self.encoder.channels[3])
        self.embed_dim = self.encoder.channels[3]
        self.fc = nn.Linear(self.embed_dim, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input_mode={self.cfg.input_mode!r} expects {self.in_channels} channels, got {x.shape[1]}"
            )
        net = self.encoder.net
        h = net.layer2(net.layer1(self.encoder.stem(x)))
        h, a_mid = self.mga_mid(h)
        h = net.layer4(net.layer3(h))
        h, a_deep = self.mga_deep(h)
        return h.mean(dim=(2, 3)), [a_mid, a_deep]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        emb, att = self.features(x)
        return self.fc(emb).squeeze(1), att

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Per-slice embeddings (N, embed_dim) for the subject aggregator (2048-D at ResNet-50),
        computed on the model's device and returned on the CPU."""
        self.eval()
        device = self.fc.weight.device
        return torch.cat(
            [self.features(x[i : i + batch_size].to(device))[0].cpu() for i in range(0, len(x), batch_size)]
        )

    def loss(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, att = self(x)
        focal = focal_loss(logits, y, self.cfg.focal_gamma, self.cfg.focal_alpha)
        align = (
            sum(attention_alignment_loss(a, mask) for a in att) / len(att)
            if self.cfg.mask_guidance
            else logits.sum() * 0.0
        )
        return {"focal": focal, "align": align, "total": focal + self.cfg.align_weight * align}


def balanced_indices(labels: torch.Tensor, neg_per_pos: float, generator: torch.Generator) -> torch.Tensor:
    """One epoch of the ``epochs`` schedule: every positive slice plus ``neg_per_pos`` x as many
    random negatives, shuffled."""
    pos = torch.nonzero(labels > 0.5).flatten()
    neg = torch.nonzero(labels <= 0.5).flatten()
    n_neg = min(len(neg), max(1, round(neg_per_pos * max(len(pos), 1))))
    chosen = torch.cat([pos, neg[torch.randperm(len(neg), generator=generator)[:n_neg]]])
    return chosen[torch.randperm(len(chosen), generator=generator)]


class IndexStream:
    """Indices ``0..n-1`` without replacement, reshuffled (seeded) each time they run out: one
    pass over the data is an epoch of this stream. Its state (generator, order, position) is
    checkpointed, so a resumed stream continues exactly."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"an index stream needs n >= 1 items, got {n}")
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.order, self.position = torch.randperm(n, generator=self.generator), 0

    def take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.position == self.n:
                self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
            m = min(k, self.n - self.position)
            out.append(self.order[self.position : self.position + m])
            self.position, k = self.position + m, k - m
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], int(state["position"])


class DetectorTrainer(ResumableTrainer):
    """Trains a :class:`MaskGuidedResNet` on (N, C, H, W) slices, labels (N,), masks (N, 1, H, W).

    ``synthetic`` (N,) bool marks synthetic positives (for the counts in :attr:`seen`). With
    ``cfg.schedule == "matched"`` the progress unit is the optimiser step, else the epoch (see
    :class:`~salient.models.configs.DetectorConfig`).
    """

    def __init__(
        self,
        cfg: DetectorConfig,
        images: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
        seed: int = 0,
        synthetic: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
    ):
        if not images.shape[0] == labels.shape[0] == masks.shape[0]:
            raise ValueError(
                f"images {tuple(images.shape)}, labels {tuple(labels.shape)}, masks {tuple(masks.shape)} must share N"
            )
        torch.manual_seed(seed)
        self.cfg, self.images, self.labels, self.masks = cfg, images, labels.float(), masks.float()
        self.synthetic = torch.zeros(len(labels), dtype=torch.bool) if synthetic is None else synthetic.bool()
        self.device = torch.device(device)
        self.model = MaskGuidedResNet(cfg).to(self.device)  # the data stays on the CPU; batches move
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        matched = cfg.schedule == "matched"
        self._progress = "step" if matched else "epoch"
        self.total = cfg.steps if matched else cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = self.epoch = 0
        self.positives = torch.nonzero(self.labels > 0.5).flatten()
        self.negatives = torch.nonzero(self.labels <= 0.5).flatten()
        if matched and (len(self.positives) == 0 or len(self.negatives) == 0):
            raise ValueError(
                f"the matched schedule needs positive and negative slices, got {len(self.positives)} and "
                f"{len(self.negatives)}"
            )
        # Separate streams, each seeded apart from the data's size: the negatives a detector sees,
        # and their order, do not depend on how many (synthetic) positives it has.
        self.pos_stream = IndexStream(max(len(self.positives), 1), seed * 2 + 1)
        self.neg_stream = IndexStream(max(len(self.negatives), 1), seed * 2 + 2)
        self.n_pos_batch = max(1, round(cfg.batch_size / (1 + cfg.neg_per_pos)))
        #: slices drawn so far: real positives, synthetic positives, negatives
        self.seen = {"real_positive": 0, "synthetic_positive": 0, "negative": 0}

    def _update(self, b: torch.Tensor) -> float:
        cfg = self.cfg
        x, m = augment(
            self.images[b],
            self.masks[b],
            self.generator,
            shift=cfg.augment_shift,
            flip=cfg.augment_flip,
            noise=cfg.augment_noise,
        )
        terms = self.model.loss(x.to(self.device), self.labels[b].to(self.device), m.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        positive, synthetic = self.labels[b] > 0.5, self.synthetic[b]
        self.seen["synthetic_positive"] += int((positive & synthetic).sum())
        self.seen["real_positive"] += int((positive & ~synthetic).sum())
        self.seen["negative"] += int((~positive).sum())
        return float(terms["total"].detach())

    def train(self, on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
        """Train to the end of the schedule; returns the loss per step (matched) or per epoch.
        ``on_epoch(progress, {"loss"})`` is called after every step (matched) or epoch."""
        if self.cfg.schedule == "matched":
            return self._train_matched(on_epoch)
        history = []
        while self.epoch < self.cfg.epochs:
            self.model.train()
            idx = balanced_indices(self.labels, self.cfg.neg_per_pos, self.generator)
            total = 0.0
            for start in range(0, len(idx), self.cfg.batch_size):
                b = idx[start : start + self.cfg.batch_size]
                if len(b) < 2:  # BatchNorm needs more than one sample
                    continue
                total += self._update(b) * len(b) / len(idx)
                self.step += 1
            self.scheduler.step()
            self.epoch += 1
            history.append(total)
            if on_epoch is not None:
                on_epoch(self.epoch, {"loss": total})
        return history

    def _train_matched(self, on_step: Callable[[int, dict[str, float]], None] | None) -> list[float]:
        history = []
        self.model.train()
        while self.step < self.cfg.steps:
            b = torch.cat(
                [
                    self.positives[self.pos_stream.take(self.n_pos_batch)],
                    self.negatives[self.neg_stream.take(self.cfg.batch_size - self.n_pos_batch)],
                ]
            )
            loss = self._update(b)
            self.scheduler.step()
            self.step += 1
            history.append(loss)
            if on_step is not None:
                on_step(self.step, {"loss": loss})
        return history

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "pos_stream": self.pos_stream.state_dict(),
            "neg_stream": self.neg_stream.state_dict(),
            "seen": dict(self.seen),
            "step_count": self.step,
            "epoch_count": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pos_stream.load_state_dict(state["pos_stream"])
        self.neg_stream.load_state_dict(state["neg_stream"])
        self.seen = {k: int(v) for k, v in state["seen"].items()}
        self.step, self.epoch = int(state["step_count"]), int(state["epoch_count"])

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Slice probabilities (N,), on the CPU."""
        self.model.eval()
        return torch.cat(
            [
                torch.sigmoid(self.model(images[i : i + batch_size].to(self.device))[0]).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}
