"""Typed, frozen configurations for every SALIENT model, and the named presets.

These dataclasses are the single source of truth for the "dials" of each stage. They are plain
Python (no pydantic import): the platform validates study files against them, the models read
them. Each ``__post_init__`` enforces the rules a constructor would, so an impossible value fails
where it is set, with the parameter name and value in the message.

Presets:
    ``tiny``  - seconds-to-minutes on a 2-core CPU (tests, the demo study on the phantom cohort).
    ``full``  - the paper's scale (512 px slices, ResNet-50, d=512 aggregator); needs a GPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "PRESETS",
    "STAGE_CONFIGS",
    "AggregatorConfig",
    "DetectorConfig",
    "DiffusionConfig",
    "GuidanceConfig",
    "MaskVAEConfig",
    "UCMTConfig",
    "WaveletLossConfig",
    "apply_overrides",
    "stage_config",
]

# Lets pydantic (used only by salient.platform) reject unknown keys, NaN and infinity when it
# validates these; ``_require_finite`` holds the same rule for configs built in Python.
_FORBID_EXTRA: dict[str, Any] = {"extra": "forbid", "allow_inf_nan": False}

NeiSchedule = Literal["constant", "linear", "cosine", "exponential"]


def _require_finite(config: Any) -> None:
    """Every float of a config (and of its tuples) must be finite: NaN passes every ``>``/``<``
    check below and infinity most of them, and either one trains a model to NaN."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        items = enumerate(value) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                name = f.name if i is None else f"{f.name}[{i}]"
                raise ValueError(f"{name} must be finite, got {item!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class GuidanceConfig:
    """Structured classifier-free guidance (paper eq. 16-18) and the sampler.

    Args:
        s_mask: constant scale of the mask branch, ``s_mask * (f(c_mask) - f(0))``.
        s_nei_start: neighbour scale ``s_nei(t)`` at the first (noisiest) sampling step.
        s_nei_end: neighbour scale at the last step.
        nei_schedule: decay shape of ``s_nei(t)`` between start and end.
        nei_decay_rate: rate of the exponential schedule (ignored by the others).
        sampler: ``ddim`` (strided, deterministic for eta=0) or ``ddpm`` (every timestep).
        sampling_steps: number of DDIM steps (DDPM always uses every timestep).
        eta: DDIM stochasticity (0 = deterministic).
    """

    __pydantic_config__ = _FORBID_EXTRA

    s_mask: float = 2.0
    s_nei_start: float = 1.5
    s_nei_end: float = 0.5
    nei_schedule: NeiSchedule = "cosine"
    nei_decay_rate: float = 4.0
    sampler: Literal["ddim", "ddpm"] = "ddim"
    sampling_steps: int = 20
    eta: float = 0.0

    def __post_init__(self) -> None:
        _require_finite(self)
        _non_negative("s_mask", self.s_mask)
        _non_negative("s_nei_start", self.s_nei_start)
        _non_negative("s_nei_end", self.s_nei_end)
        _positive("nei_decay_rate", self.nei_decay_rate)
        if self.sampling_steps < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.sampling_steps!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta!r}")


@dataclass(frozen=True)
class WaveletLossConfig:
    """Weights of the wavelet-aware objective (paper eq. 12-15).

    Args:
        band_weights: L1 weight of each band, in the order (LL, LH, HL, HH).
        boundary_weight: extra weight on coefficients within ``boundary_width`` of a lesion edge.
        boundary_width: half-width (in coefficient pixels) of the boundary band.
        hh_moderation: multiplier (<= 1) applied to the HH band inside the boundary band, so the
            boundary up-weighting does not amplify diagonal noise.
        lambda_mu, lambda_sigma: LL moment loss weights (mean, log-std), eq. 13.
        lambda_hf: log-variance loss weight per high band (LH, HL, HH), eq. 14.
        lambda_edge: pixel-space gradient (edge) alignment inside the dilated lesion.
        lambda_sat: pixel-space penalty on values beyond the normalised range (saturation).
    """

    __pydantic_config__ = _FORBID_EXTRA

    band_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.5)
    boundary_weight: float = 2.0
    boundary_width: int = 1
    hh_moderation: float = 0.5
    lambda_mu: float = 0.1
    lambda_sigma: float = 0.1
    lambda_hf: tuple[float, float, float] = (0.05, 0.05, 0.05)
    lambda_edge: float = 0.05
    lambda_sat: float = 0.05

    def __post_init__(self) -> None:
        _require_finite(self)
        if len(self.band_weights) != 4:
            raise ValueError(f"band_weights needs 4 values (LL, LH, HL, HH), got {self.band_weights!r}")
        if len(self.lambda_hf) != 3:
            raise ValueError(f"lambda_hf needs 3 values (LH, HL, HH), got {self.lambda_hf!r}")
        for i, w in enumerate(self.band_weights):
            _non_negative(f"band_weights[{i}]", w)
        for i, w in enumerate(self.lambda_hf):
            _non_negative(f"lambda_hf[{i}]", w)
        for name in ("boundary_weight", "lambda_mu", "lambda_sigma", "lambda_edge", "lambda_sat"):
            _non_negative(name, getattr(self, name))
        if self.boundary_width < 0:
            raise ValueError(f"boundary_width must be >= 0, got {self.boundary_width!r}")
        if not 0.0 <= self.hh_moderation <= 1.0:
            raise ValueError(f"hh_moderation must be in [0, 1], got {self.hh_moderation!r}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Wavelet-domain (SALIENT) or pixel-space (MedDDPM-style) conditional diffusion.

    Args:
        domain: ``wavelet`` (SALIENT) or ``pixel`` (the 2.5D baseline).
        base_channels: UNet width at the first level.
        channel_mults: width multiplier per level; four levels as in the paper.
        attention_levels: per level, whether it has self-attention (paper: the deepest ones).
        num_res_blocks: residual blocks per level.
        neighbour_offsets: axial offsets of the 2.5D context slices, e.g. (-1, 1).
        timesteps: diffusion steps T of the training process.
        p_drop_all: probability of dropping every condition at once during training: trains the
            unconditional branch ``f(x_t, t, 0)`` that structured CFG (eq. 16) subtracts.
        p_drop_mask: otherwise, probability of dropping the mask condition (CFG).
        p_drop_nei: otherwise, probability of dropping the neighbour condition (CFG).
            The unconditional branch is trained on ``p_drop_all + (1 - p_drop_all) * p_drop_mask *
            p_drop_nei`` of the samples (0.118 with the defaults; 0.02 without ``p_drop_all``), the
            mask-only branch on ``(1 - p_drop_all) * (1 - p_drop_mask) * p_drop_nei`` (0.162).
    """

    __pydantic_config__ = _FORBID_EXTRA

    domain: Literal["wavelet", "pixel"] = "wavelet"
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    attention_levels: tuple[bool, ...] = (False, False, True, True)
    num_res_blocks: int = 1
    neighbour_offsets: tuple[int, ...] = (-1, 1)
    timesteps: int = 1000
    p_drop_all: float = 0.1
    p_drop_mask: float = 0.1
    p_drop_nei: float = 0.2
    ema_decay: float = 0.999
    lr: float = 2e-4
    weight_decay: float = 1e-4
    train_steps: int = 300
    batch_size: int = 8
    loss: WaveletLossConfig = field(default_factory=WaveletLossConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        _require_finite(self)
        if self.base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {self.base_channels!r}")
        if len(self.channel_mults) < 1 or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be positive integers, got {self.channel_mults!r}")
        if len(self.attention_levels) != len(self.channel_mults):
            raise ValueError(
                "attention_levels must have one entry per level: "
                f"{len(self.attention_levels)} != len(channel_mults)={len(self.channel_mults)}"
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks!r}")
        if 0 in self.neighbour_offsets or len(set(self.neighbour_offsets)) != len(self.neighbour_offsets):
            raise ValueError(f"neighbour_offsets must be distinct and non-zero, got {self.neighbour_offsets!r}")
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {self.timesteps!r}")
        _probability("p_drop_all", self.p_drop_all)
        _probability("p_drop_mask", self.p_drop_mask)
        _probability("p_drop_nei", self.p_drop_nei)
        _probability("ema_decay", self.ema_decay)
        _positive("lr", self.lr)
        _non_negative("weight_decay", self.weight_decay)
        if self.train_steps < 1 or self.batch_size < 1:
            raise ValueError(f"train_steps and batch_size must be >= 1, got {self.train_steps!r}, {self.batch_size!r}")
        if self.guidance.sampler == "ddim" and self.guidance.sampling_steps > self.timesteps:
            raise ValueError(
                f"guidance.sampling_steps ({self.guidance.sampling_steps}) cannot exceed timesteps ({self.timesteps})"
            )


@dataclass(frozen=True)
class MaskVAEConfig:
    """MaskVAE3D (paper 3.3): binary lesion-mask volumes resampled to ``volume_size``.

    Args:
        volume_size: (D, H, W) of the resampled mask volume; each divisible by 2**len(channels).
        latent_dim: size of the Gaussian latent.
        free_bits: KL floor per latent dimension (nats) that is not penalised.
    """

    __pydantic_config__ = _FORBID_EXTRA

    volume_size: tuple[int, int, int] = (16, 32, 32)
    channels: tuple[int, ...] = (8, 16, 32)
    latent_dim: int = 16
    kl_weight: float = 1e-2
    free_bits: float = 0.05
    boundary_weight: float = 2.0
    dice_weight: float = 1.0
    lr: float = 1e-3
    epochs: int = 60
    batch_size: int = 4

    def __post_init__(self) -> None:
        _require_finite(self)
        factor = 2 ** len(self.channels)
        if len(self.volume_size) != 3 or any(s % factor or s <= 0 for s in self.volume_size):
            raise ValueError(
                f"volume_size must be 3 sizes divisible by 2**len(channels)={factor}, got {self.volume_size!r}"
            )
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim!r}")
        for name in ("kl_weight", "free_bits", "boundary_weight", "dice_weight"):
            _non_negative(name, getattr(self, name))
        _positive("lr", self.lr)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")


@dataclass(frozen=True)
class UCMTConfig:
    """UCMT semi-supervised segmentation (paper 3.4): two DeepLabv3+-style students, EMA teacher.

    Args:
        encoder_layers: ResNet basic-block counts per stage of each student's encoder.
        encoder_widths: channels per encoder stage.
        aspp_channels: output channels of the ASPP head.
        unsup_weight: maximum weight of the unlabeled (pseudo-supervision) losses.
        rampup_steps: sigmoid ramp-up length of ``unsup_weight``.
        umix_grid: UMix splits each image into ``umix_grid x umix_grid`` patches.
        umix_k: number of patches swapped per image (most uncertain <- most certain).
        augment_shift, augment_flip, augment_noise: augmentation of the labeled slices and their
            masks (as for the detector, see :mod:`salient.models.augment`).
    """

    __pydantic_config__ = _FORBID_EXTRA

    encoder_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    encoder_widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    stem_downsample: bool = False
    aspp_channels: int = 32
    ema_decay: float = 0.99
    unsup_weight: float = 1.0
    rampup_steps: int = 100
    umix_grid: int = 4
    umix_k: int = 2
    augment_shift: int = 4
    augment_flip: bool = True
    augment_noise: float = 0.03
    lr: float = 1e-3
    train_steps: int = 200
    batch_size: int = 8
    threshold: float = 0.5

    def __post_init__(self) -> None:
        _require_finite(self)
        if any(n < 1 for n in self.encoder_layers) or any(w < 1 for w in self.encoder_widths):
            raise ValueError("encoder_layers and encoder_widths must be positive")
        _probability("ema_decay", self.ema_decay)
        _non_negative("unsup_weight", self.unsup_weight)
        if self.augment_shift < 0:
            raise ValueError(f"augment_shift must be >= 0, got {self.augment_shift!r}")
        _non_negative("augment_noise", self.augment_noise)
        if self.umix_grid < 2:
            raise ValueError(f"umix_grid must be >= 2, got {self.umix_grid!r}")
        if not 0 <= self.umix_k <= self.umix_grid**2 // 2:
            raise ValueError(
                f"umix_k must be in [0, umix_grid**2 // 2 = {self.umix_grid**2 // 2}], got {self.umix_k!r}"
            )
        _positive("lr", self.lr)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")


@dataclass(frozen=True)
class DetectorConfig:
    """Mask-guided ResNet slice detector (paper 3.5).

    Args:
        layers: bottleneck blocks per ResNet stage; (3, 4, 6, 3) is ResNet-50.
        widths: planes per stage; (64, 128, 256, 512) is ResNet-50 (x4 expansion).
        stem_downsample: the standard ResNet stem (stride-2 7x7 conv + max pool); off for the
            small slices of the tiny preset.
        mask_guidance: ``False`` is the paper's "no mask guidance" ablation (alignment loss off).
        align_weight: weight of the MSE attention-mask alignment loss.
        focal_gamma, focal_alpha: focal loss parameters.
        input_mode: ``single`` slice or 2.5D ``triplet`` (slice and its two neighbours).
        schedule: ``matched`` (default): ``steps`` optimiser steps whatever the data, each batch
            ``batch_size / (1 + neg_per_pos)`` positives (real and synthetic lesion slices, drawn
            without replacement, epoch after epoch) and the rest negatives from a stream seeded
            apart from the positives - so detectors at every synthetic dose take the same steps and
            see the same negatives in the same order, and the dose changes only the positives' mix.
            ``epochs``: the paper's rule, ``epochs`` passes of every positive plus ``neg_per_pos`` x
            as many random negatives - a larger dose then also means more steps and more distinct
            negatives (compute and data are confounded with the dose; use for replication only).
        steps: optimiser steps of the ``matched`` schedule.
        epochs: passes of the ``epochs`` schedule.
        neg_per_pos: negatives per positive (both schedules).
        augment_shift: random translation of each training slice (and its mask) by up to this
            many pixels in each direction (padding with air, -1); 0 turns it off.
        augment_flip: random left-right flip of each training slice (and its mask).
        augment_noise: standard deviation of Gaussian noise added to each training slice
            (intensities in [-1, 1]); 0 turns it off. Without augmentation the tiny detector drove
            its training loss to ~0 on the few seed lesions (memorised them); on the phantom its
            test subject AUROC was ~0.60 without augmentation at 300 steps and 0.80-0.92 with it at
            1000 steps (benchmarks/learning_curve.py; steps and augmentation changed together).
        lr: AdamW peak learning rate (cosine decay to 0 over the schedule). The tiny default 2e-3:
            at 1e-3 and 800 steps the tiny detector was undertrained on the phantom (0x, seed 30,
            3 repeats: max-slice test AUROC 0.69; 1200 steps 0.80, 1600 steps 0.88), while 2e-3
            and 4e-3 at 800 steps gave 0.84 and 0.85 (benchmarks/learning_curve.py on phantom seed
            1, not the demo's cohort). The full preset keeps 1e-3 (not measured at that scale).
    """

    __pydantic_config__ = _FORBID_EXTRA

    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    stem_downsample: bool = False
    mask_guidance: bool = True
    align_weight: float = 0.5
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    input_mode: Literal["single", "triplet"] = "triplet"
    schedule: Literal["matched", "epochs"] = "matched"
    steps: int = 200
    neg_per_pos: float = 1.0
    augment_shift: int = 4
    augment_flip: bool = True
    augment_noise: float = 0.03
    lr: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 4
    batch_size: int = 16

    def __post_init__(self) -> None:
        _require_finite(self)
        if self.augment_shift < 0:
            raise ValueError(f"augment_shift must be >= 0, got {self.augment_shift!r}")
        _non_negative("augment_noise", self.augment_noise)
        if any(n < 1 for n in self.layers) or any(w < 1 for w in self.widths):
            raise ValueError(f"layers and widths must be positive, got {self.layers}, {self.widths}")
        _non_negative("align_weight", self.align_weight)
        _non_negative("focal_gamma", self.focal_gamma)
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha!r}")
        _positive("neg_per_pos", self.neg_per_pos)
        _positive("lr", self.lr)
        if self.epochs < 1 or self.batch_size < 1 or self.steps < 1:
            raise ValueError(
                f"steps, epochs and batch_size must be >= 1, got {self.steps}, {self.epochs}, {self.batch_size}"
            )
        if self.schedule == "matched" and self.batch_size < 2:
            raise ValueError(
                f"the matched schedule needs batch_size >= 2 (a positive and a negative), got {self.batch_size}"
            )


@dataclass(frozen=True)
class AggregatorConfig:
    """EViT-style subject aggregator over per-slice embeddings (paper 3.5, 4.1).

    Args:
        max_len: slices per subject after padding/truncation (paper: 500).
        d_model, heads, layers: Transformer encoder size (paper: 512, 8, 4).
        keep_rate: fraction of slice tokens kept by EViT token selection in each layer after the
            first; the rest are fused into one token weighted by their attention.
        epochs: passes over the training subjects (paper: 200). The tiny default 100: cross-fitted
            on ~47 validation subjects per fold, at 30 epochs (180 steps) it scored far below the
            max-slice score it should improve on (test AUROC 0.57 vs 0.69; phantom seed 1, 0x,
            seed size 30, 3 repeats, lr 1e-3 detectors), at 100 epochs at or above it (0.84-0.89
            vs 0.80-0.88 over the detector settings tried; benchmarks/learning_curve.py, README).
    """

    __pydantic_config__ = _FORBID_EXTRA

    max_len: int = 64
    d_model: int = 32
    heads: int = 4
    layers: int = 2
    keep_rate: float = 0.7
    dropout: float = 0.1
    lr: float = 1e-3
    epochs: int = 100
    batch_size: int = 8

    def __post_init__(self) -> None:
        _require_finite(self)
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len!r}")
        if self.d_model < 1 or self.heads < 1 or self.d_model % self.heads:
            raise ValueError(
                f"d_model must be a positive multiple of heads, got d_model={self.d_model}, heads={self.heads}"
            )
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers!r}")
        if not 0.0 < self.keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {self.keep_rate!r}")
        _probability("dropout", self.dropout)
        _positive("lr", self.lr)


STAGE_CONFIGS: dict[str, type] = {
    "mask_vae": MaskVAEConfig,
    "diffusion": DiffusionConfig,
    "ucmt": UCMTConfig,
    "detector": DetectorConfig,
    "aggregator": AggregatorConfig,
}

# Overrides on top of each dataclass's defaults (the defaults are the ``tiny`` values).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {name: {} for name in STAGE_CONFIGS},
    "full": {
        "mask_vae": {
            "volume_size": (32, 64, 64),
            "channels": (16, 32, 64, 128),
            "latent_dim": 64,
            "epochs": 300,
            "batch_size": 8,
        },
        "diffusion": {
            "base_channels": 64,
            "channel_mults": (1, 2, 4, 8),
            "num_res_blocks": 2,
            "neighbour_offsets": (-2, -1, 1, 2),
            "train_steps": 200_000,
            "batch_size": 16,
            "guidance": {"sampling_steps": 50},
        },
        "ucmt": {
            "encoder_layers": (3, 4, 6, 3),
            "encoder_widths": (64, 128, 256, 512),
            "aspp_channels": 256,
            "stem_downsample": True,
            "train_steps": 40_000,
            "rampup_steps": 4_000,
            "ema_decay": 0.999,
            "umix_grid": 8,
            "umix_k": 8,
            "batch_size": 16,
        },
        "detector": {
            "layers": (3, 4, 6, 3),
            "widths": (64, 128, 256, 512),
            "stem_downsample": True,
            "steps": 10_000,
            "epochs": 40,
            "batch_size": 32,
            "lr": 1e-3,
        },
        "aggregator": {"max_len": 500, "d_model": 512, "heads": 8, "layers": 4, "epochs": 200, "lr": 1e-4},
    },
}


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of a (possibly nested) config dataclass with ``overrides`` applied.

    Nested dataclass fields take a mapping of their own fields. Unknown names raise ``KeyError``
    naming the field; values are checked by the dataclasses' own ``__post_init__``.
    """
    names = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise KeyError(f"{type(config).__name__} has no field {key!r}; fields: {sorted(names)}")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = apply_overrides(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            changes[key] = tuple(value)
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def stage_config(stage: str, preset: str = "tiny", overrides: dict[str, Any] | None = None) -> Any:
    """Build the config of ``stage`` from a named preset plus overrides."""
    if stage not in STAGE_CONFIGS:
        raise ValueError(f"stage must be one of {sorted(STAGE_CONFIGS)}, got {stage!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    config = apply_overrides(STAGE_CONFIGS[stage](), PRESETS[preset][stage])
    return apply_overrides(config, overrides or {})
