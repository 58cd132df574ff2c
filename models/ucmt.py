"""UCMT semi-supervised lesion segmentation (paper 3.4; Shen et al., IJCAI 2023).

Two DeepLabv3+-style students (MONAI ResNet encoder, MONAI SimpleASPP on the deepest features,
a decoder that fuses a low-level skip) and an EMA teacher (the moving average of student A).
Per step:

* supervised Dice + BCE of both students on labeled slices;
* on unlabeled slices, UMix first: in each image the ``umix_k`` most uncertain patches (teacher
  entropy) are replaced by the ``umix_k`` most certain patches of another image of the batch,
  and the teacher's pseudo-labels are mixed identically;
* cross pseudo supervision (each student learns the other's hard labels) and teacher-to-student
  supervision on the mixed slices, weighted by a sigmoid ramp-up of ``unsup_weight``.

After training the frozen teacher labels synthetic slices, giving paired CT + mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from monai.networks.blocks import SimpleASPP
from salient.models.augment import augment
from salient.models.backbone import ResNetEncoder
from salient.models.configs import UCMTConfig
from salient.models.distributed import DataParallel, world
from salient.models.ema import EMA
from salient.models.mask_vae import dice_loss
from salient.models.training import ResumableTrainer
from torch import nn
from torch.nn import functional as F

__all__ = ["DeepLabV3Plus", "UCMTTrainer", "patch_uncertainty", "predict_masks", "rampup", "umix"]


class DeepLabV3Plus(nn.Module):
    """Binary segmentation network; (B, 1, H, W) -> (B, 1, H, W) logits."""

    def __init__(self, cfg: UCMTConfig):
        super().__init__()
        self.encoder = ResNetEncoder("basic", cfg.encoder_layers, cfg.encoder_widths, 1, cfg.stem_downsample)
        low, deep = self.encoder.channels[0], self.encoder.channels[3]
        branches = 4
        self.aspp = SimpleASPP(
            2, deep, cfg.aspp_channels // branches, kernel_sizes=(1, 3, 3, 3), dilations=(1, 2, 4, 6)
        )
        aspp_out = (cfg.aspp_channels // branches) * branches
        self.low_proj = nn.Sequential(nn.Conv2d(low, max(low // 2, 4), 1), nn.BatchNorm2d(max(low // 2, 4)), nn.ReLU())
        self.head = nn.Sequential(
            nn.Conv2d(aspp_out + max(low // 2, 4), cfg.aspp_channels, 3, padding=1),
            nn.BatchNorm2d(cfg.aspp_channels),
            nn.ReLU(),
            nn.Conv2d(cfg.aspp_channels, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        deep = self.aspp(feats[3])
        low = self.low_proj(feats[0])
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(torch.cat([deep, low], dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def rampup(step: int, length: int) -> float:
    """Sigmoid ramp-up exp(-5 (1 - step/length)^2), from ~0.007 to 1 at ``length``."""
    if length <= 0:
        return 1.0
    p = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - p) ** 2)


def patch_uncertainty(prob: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean binary entropy of each of the grid x grid patches: (B, 1, H, W) -> (B, grid*grid)."""
    p = prob.clamp(1e-6, 1 - 1e-6)
    ent = -(p * p.log() + (1 - p) * (1 - p).log())
    return F.adaptive_avg_pool2d(ent, grid).flatten(1)


def _patch_slices(index: int, grid: int, h: int, w: int) -> tuple[slice, slice]:
    r, c = divmod(index, grid)
    ph, pw = h // grid, w // grid
    return slice(r * ph, (r + 1) * ph), slice(c * pw, (c + 1) * pw)


def umix(
    x: torch.Tensor, y: torch.Tensor, uncertainty: torch.Tensor, grid: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
    """Uncertainty-guided mixing.

    For image ``i`` (partner ``j = (i + 1) % B``) the ``k`` most uncertain patches of ``i`` are
    overwritten by the ``k`` most certain patches of ``j``, in ``x`` and in the labels ``y``
    alike. Returns the mixed tensors and, per image, the (destination, source) patch pairs.
    H and W must be divisible by ``grid``.
    """
    b, _, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {(h, w)} must be divisible by umix_grid={grid}")
    xm, ym = x.clone(), y.clone()
    pairs: list[list[tuple[int, int]]] = []
    for i in range(b):
        j = (i + 1) % b
        worst = torch.argsort(uncertainty[i], descending=True)[:k].tolist()
        best = torch.argsort(uncertainty[j])[:k].tolist()
        for dst, src in zip(worst, best, strict=True):
            (dr, dc), (sr, sc) = _patch_slices(dst, grid, h, w), _patch_slices(src, grid, h, w)
            xm[i, :, dr, dc] = x[j, :, sr, sc]
            ym[i, :, dr, dc] = y[j, :, sr, sc]
        pairs.append(list(zip(worst, best, strict=True)))
    return xm, ym, pairs


@torch.no_grad()
def predict_masks(net: nn.Module, images: torch.Tensor, threshold: float, batch_size: int = 32) -> torch.Tensor:
    """Binary masks from a segmentation net in eval mode: (N, 1, H, W) -> (N, 1, H, W); N may be 0."""
    net.eval()
    if len(images) == 0:
        return images.new_zeros(images.shape)
    return torch.cat(
        [
            (torch.sigmoid(net(images[i : i + batch_size])) > threshold).float()
            for i in range(0, len(images), batch_size)
        ]
    )


class _StudentLosses(nn.Module):
    """Both students' losses on one step's batches as a module's forward, so DistributedDataParallel
    can wrap them (DDP syncs gradients only through its own forward)."""

    def __init__(self, cfg: UCMTConfig, student_a: DeepLabV3Plus, student_b: DeepLabV3Plus):
        super().__init__()
        self.cfg, self.student_a, self.student_b = cfg, student_a, student_b

    def forward(
        self, xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor, t_prob: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        la, lb = self.student_a(xl), self.student_b(xl)
        sup = sum(F.binary_cross_entropy_with_logits(lg, yl) + dice_loss(torch.sigmoid(lg), yl) for lg in (la, lb))
        ua, ub = self.student_a(xu), self.student_b(xu)
        cps = F.binary_cross_entropy_with_logits(ua, (ub.detach() > 0).float()) + F.binary_cross_entropy_with_logits(
            ub, (ua.detach() > 0).float()
        )
        t_hard = (t_prob > self.cfg.threshold).float()
        t2s = F.binary_cross_entropy_with_logits(ua, t_hard) + F.binary_cross_entropy_with_logits(ub, t_hard)
        return {"sup": torch.as_tensor(sup), "cps": cps, "t2s": t2s}


class UCMTTrainer(ResumableTrainer):
    """Trains two students and the EMA teacher on labeled + unlabeled slices; resumable.

    Data-parallel when a ``torch.distributed`` process group is initialised (DDP; the rule of
    :mod:`salient.models.distributed`): ``cfg.batch_size`` is the global batch of labeled and of
    unlabeled slices, drawn as one worker draws them and split over the workers; UMix mixes
    within each worker's share; BatchNorm statistics are per worker (synchronised on CUDA).

    Args:
        labeled: (N_l, 1, H, W) slices and their (N_l, 1, H, W) masks.
        unlabeled: (N_u, 1, H, W) slices without masks.
        device: where to train (default: the CPU; under a process group, the worker's CUDA device
            when it has one). The data stays where it is; each minibatch is moved.
    """

    _progress = "step"

    def __init__(
        self,
        cfg: UCMTConfig,
        labeled: tuple[torch.Tensor, torch.Tensor],
        unlabeled: torch.Tensor,
        seed: int = 0,
        device: str | torch.device | None = None,
    ):
        if labeled[0].shape != labeled[1].shape or labeled[0].shape[0] < 1:
            raise ValueError(
                f"labeled images and masks must match, got {tuple(labeled[0].shape)}, {tuple(labeled[1].shape)}"
            )
        if unlabeled.shape[0] < 2:
            raise ValueError(f"UCMT needs at least 2 unlabeled slices, got {unlabeled.shape[0]}")
        size, _ = world()
        if size > 1 and cfg.batch_size % size:
            raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the {size} workers")
        if device is None:
            gpu = size > 1 and torch.cuda.is_available()
            device = torch.device("cuda", torch.cuda.current_device()) if gpu else "cpu"
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.cfg = cfg
        self.student_a, self.student_b = DeepLabV3Plus(cfg), DeepLabV3Plus(cfg)
        students = _StudentLosses(cfg, self.student_a, self.student_b)
        if size > 1 and self.device.type == "cuda":
            students = nn.SyncBatchNorm.convert_sync_batchnorm(students)
            self.student_a, self.student_b = students.student_a, students.student_b
        students.to(self.device)
        self.teacher = EMA(self.student_a, cfg.ema_decay)
        params = list(self.student_a.parameters()) + list(self.student_b.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.train_steps)
        self.labeled, self.unlabeled = labeled, unlabeled
        self.generator = torch.Generator().manual_seed(seed)
        self.parallel = DataParallel(students, seed, self.device)
        self.step = 0

    def _draw(self, n: int) -> torch.Tensor:
        return torch.randint(0, n, (min(self.cfg.batch_size, n),), generator=self.generator)

    def train(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
        """Train up to ``cfg.train_steps``; returns the losses (the global batch mean of each step)."""
        losses = []
        self.student_a.train()
        self.student_b.train()
        dp, dev = self.parallel, self.device
        while self.step < self.cfg.train_steps:
            li_all = self._draw(self.labeled[0].shape[0])
            ui_all = self._draw(self.unlabeled.shape[0])
            li, ui = dp.mine(li_all), dp.mine(ui_all)  # this rank's share (all of it on one worker)
            # Augment the whole global batch on every worker (the same draws everywhere, so the
            # shared generator stays in step), then keep this worker's share.
            cfg = self.cfg
            xl, yl = augment(
                self.labeled[0][li_all],
                self.labeled[1][li_all],
                self.generator,
                shift=cfg.augment_shift,
                flip=cfg.augment_flip,
                noise=cfg.augment_noise,
            )
            xl, yl = dp.mine(xl), dp.mine(yl)
            xl, yl = xl.to(dev), yl.to(dev)
            xu = self.unlabeled[ui].to(dev)
            with torch.no_grad():
                t_prob = torch.sigmoid(self.teacher.module(xu))
            if self.cfg.umix_k > 0 and xu.shape[0] > 1:
                xu, t_prob, _ = umix(
                    xu, t_prob, patch_uncertainty(t_prob, self.cfg.umix_grid), self.cfg.umix_grid, self.cfg.umix_k
                )
            terms = dp.module(xl, yl, xu, t_prob)
            weight = self.cfg.unsup_weight * rampup(self.step, self.cfg.rampup_steps)
            sup_scale, unsup_scale = dp.scale(len(li), len(li_all)), dp.scale(len(ui), len(ui_all))
            total = terms["sup"] + weight * (terms["cps"] + terms["t2s"])
            scaled = terms["sup"] * sup_scale + weight * (terms["cps"] + terms["t2s"]) * unsup_scale
            self.optimizer.zero_grad(set_to_none=True)
            (total if dp.size == 1 else scaled).backward()
            self.optimizer.step()
            self.scheduler.step()
            self.teacher.update(self.student_a)
            self.step += 1
            sup = dp.global_mean(terms["sup"], len(li), len(li_all))
            unsup = dp.global_mean(terms["cps"] + terms["t2s"], len(ui), len(ui_all))
            losses.append(sup + weight * unsup if dp.active else float(total.detach()))
            if on_step is not None:
                on_step(
                    self.step,
                    {
                        "sup": float(terms["sup"].detach()),
                        "cps": float(terms["cps"].detach()),
                        "t2s": float(terms["t2s"].detach()),
                        "total": losses[-1],
                    },
                )
        return losses

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["rank_generators"] = self.parallel.generator_states()  # a collective under DDP
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.parallel.load_generator_states(state.get("rank_generators"))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Binary pseudo-label masks from the frozen teacher: (N, 1, H, W) -> (N, 1, H, W)."""
        return predict_masks(self.teacher.module, images, self.cfg.threshold, batch_size)

    def _checkpoint_modules(self) -> dict[str, nn.Module]:
        return {"a": self.student_a, "b": self.student_b, "teacher": self.teacher.module}
