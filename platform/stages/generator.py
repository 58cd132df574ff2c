"""A trained generator and what is drawn from it: the glue shared by a trial's pool stage,
``platform synth`` and ``platform tune-guidance``.

Synthetic pairs: a MaskVAE3D mask volume is sliced over a lesion extent taken from a seed subject
and placed in a healthy training host; each slice is synthesised by the diffusion model
conditioned on that mask and the host's neighbouring slices (anatomical context), and the frozen
UCMT teacher labels it. The pair (synthetic slice, pseudo-label) is a positive training slice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from salient.models.configs import DiffusionConfig, MaskVAEConfig, UCMTConfig
from salient.models.diffusion import ConditionalDiffusion
from salient.models.mask_vae import MaskVAE3D, slice_volume
from salient.models.ucmt import DeepLabV3Plus, predict_masks
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.errors import PlatformError
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages import GENERATOR_STAGES
from salient.platform.stages.slices import neighbour_stack, triplets
from salient.platform.study.schema import StagesSpec

__all__ = [
    "EmptyMasksError",
    "GeneratorRecord",
    "GeneratorSource",
    "LesionBlock",
    "Placement",
    "draw_lesion_blocks",
    "lesion_extents",
    "load_generators",
    "pair_dice",
    "placement_rule",
    "sample_blocks",
    "synthesize_pool",
    "ucmt_labels",
]


@dataclass(frozen=True)
class LesionBlock:
    """A run of consecutive synthetic slices placed in one healthy host.

    ``mask`` is the MaskVAE3D volume sliced to the block's length, (L, 1, H, W); ``lesion``
    marks the slices where that mask is non-empty; ``host`` indexes the host list.
    """

    host: int
    z0: int
    mask: torch.Tensor
    lesion: torch.Tensor


@dataclass(frozen=True)
class Placement:
    """Where a lesion mask may be put in a host: at least ``min_share`` of its voxels on host
    voxels with intensity in ``[low, high]`` (the preprocessed [-1, 1] scale) - for a mediastinal
    hematoma, soft tissue: not lung or air below, not contrast-filled vessels or bone above.

    A mask drawn for one torso can fall on another's lung or aorta; a hematoma there is not a
    hematoma. Built from HU bounds and the preprocessing window with :meth:`from_hu`.
    """

    low: float
    high: float
    min_share: float

    @classmethod
    def from_hu(cls, hu: tuple[float, float], window: tuple[float, float], min_share: float) -> Placement:
        lo, hi = window
        scale = lambda v: (v - lo) / (hi - lo) * 2 - 1  # noqa: E731  (the preprocessing's mapping)
        return cls(scale(hu[0]), scale(hu[1]), min_share)

    def fits(self, host: np.ndarray, mask: torch.Tensor) -> bool:
        """``host`` (L, H, W) slices under ``mask`` (L, 1, H, W)."""
        under = host[mask[:, 0].numpy() > 0.5]
        return bool(under.size) and float(((under >= self.low) & (under <= self.high)).mean()) >= self.min_share


def placement_rule(hu: Sequence[float] | None, window: tuple[float, float], share: float) -> Placement | None:
    """A study's (or a generator record's) placement rule: None (anywhere) without HU bounds."""
    return None if hu is None else Placement.from_hu((hu[0], hu[1]), window, share)


class EmptyMasksError(RuntimeError):
    """MaskVAE3D drew only empty masks in every allowed attempt (it is undertrained)."""


#: Hosts tried for one drawn mask before it is discarded (a placement check is in force).
HOSTS_PER_MASK = 8


def draw_lesion_blocks(
    vae: MaskVAE3D,
    hosts: list[PreprocessedSubject],
    extents: list[tuple[int, int]],
    g: torch.Generator,
    rng: np.random.Generator,
    *,
    min_lesion_slices: int = 0,
    min_blocks: int = 0,
    placement: Placement | None = None,
    counts: dict[str, int] | None = None,
) -> list[LesionBlock]:
    """Draw mask volumes until both minimums are met (blocks with only empty slices are skipped).

    Each block takes its axial extent from a seed lesion (``extents``: first slice, length) and
    its anatomy from a random host; with a ``placement`` rule, from the first of up to
    :data:`HOSTS_PER_MASK` random hosts where the mask fits (a mask that fits none is discarded
    and counted in ``counts["placement_rejected"]``). Gives up after 50 draws per requested item,
    so an undertrained VAE that only draws empty masks cannot loop forever.
    """
    if not hosts or not extents:
        raise ValueError("synthesis needs at least one host subject and one seed lesion extent")
    hw = hosts[0].image.shape[1:]
    blocks: list[LesionBlock] = []
    n_lesion, tries, rejected = 0, 0, 0
    while (n_lesion < min_lesion_slices or len(blocks) < min_blocks) and tries < 50 * max(
        min_lesion_slices, min_blocks, 1
    ):
        tries += 1
        vol = vae.sample(1, generator=g)[0]
        z0_seed, length_seed = extents[rng.integers(len(extents))]
        for _ in range(HOSTS_PER_MASK if placement is not None else 1):
            host = int(rng.integers(len(hosts)))
            length = min(length_seed, hosts[host].image.shape[0])
            z0 = max(0, min(z0_seed, hosts[host].image.shape[0] - length))
            m = slice_volume(vol, length, hw)  # (L, 1, H, W)
            lesion = m.flatten(1).amax(1) > 0.5
            if not lesion.any():
                break
            if placement is None or placement.fits(hosts[host].image[z0 : z0 + length], m):
                blocks.append(LesionBlock(host, z0, m, lesion))
                n_lesion += int(lesion.sum())
                break
        else:
            rejected += 1
            if counts is not None:
                counts["placement_rejected"] = counts.get("placement_rejected", 0) + 1
    if not blocks and not rejected:  # this call's rejections: ``counts`` adds up over a pool's rounds
        raise EmptyMasksError("MaskVAE3D produced only empty masks; it is undertrained (raise mask_vae.epochs)")
    return blocks  # empty when every mask was refused by the placement rule: counted, the caller decides


def sample_blocks(
    diffusion: ConditionalDiffusion,
    cfg: DiffusionConfig,
    blocks: list[LesionBlock],
    hosts: list[PreprocessedSubject],
    g: torch.Generator,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Synthesise every slice of every block, conditioned on its mask and the host's neighbouring
    slices (anatomical context), on the diffusion model's device; returns one (L, 1, H, W) CPU
    tensor per block, in [-1, 1]."""
    device = next(diffusion.parameters()).device
    masks = torch.cat([b.mask for b in blocks]).to(device)
    neigh = torch.cat(
        [
            torch.from_numpy(
                neighbour_stack(hosts[b.host].image, cfg.neighbour_offsets)[b.z0 : b.z0 + len(b.mask)]
            ).float()
            for b in blocks
        ]
    ).to(device)
    images = torch.cat(
        [
            diffusion.sample(masks[i : i + batch_size], neigh[i : i + batch_size], cfg.guidance, generator=g).cpu()
            for i in range(0, len(masks), batch_size)
        ]
    )
    return list(images.split([len(b.mask) for b in blocks]))


def load_generators(
    diff_cfg: DiffusionConfig,
    diff_state: Mapping[str, torch.Tensor],
    vae_cfg: MaskVAEConfig,
    vae_state: Mapping[str, torch.Tensor],
) -> tuple[ConditionalDiffusion, MaskVAE3D]:
    vae = MaskVAE3D(vae_cfg)
    vae.load_state_dict(vae_state)
    diffusion = ConditionalDiffusion(diff_cfg)
    diffusion.load_state_dict(diff_state)
    return diffusion.eval(), vae.eval()


def ucmt_labels(
    cfg: UCMTConfig, state: Mapping[str, torch.Tensor], images: torch.Tensor, device: torch.device | None = None
) -> torch.Tensor:
    """Pseudo-label synthetic slices with the frozen UCMT teacher (on ``device``, default the CPU):
    (N, 1, H, W) -> (N, 1, H, W) in {0, 1}, on the CPU."""
    net = DeepLabV3Plus(cfg)
    net.load_state_dict(state)
    device = device or torch.device("cpu")
    return predict_masks(net.to(device), images.to(device), cfg.threshold, batch_size=64).cpu()


#: Drawing stops after this many times the requested pairs (a generator whose pairs rarely agree
#: cannot loop forever; the pool then falls short and says so).
MAX_DRAW_FACTOR = 4


def pair_dice(pseudo: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Dice of each pseudo-label against its conditioning mask: (N, 1, H, W) x2 -> (N,)."""
    p, c = pseudo.flatten(1) > 0.5, cond.flatten(1) > 0.5
    inter, total = (p & c).sum(1).float(), (p.sum(1) + c.sum(1)).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def _synthesize_blocks(
    diffusion: ConditionalDiffusion,
    diff_cfg: DiffusionConfig,
    blocks: list[LesionBlock],
    hosts: list[PreprocessedSubject],
    g: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Every lesion slice of ``blocks``: ``image``, ``triplet``, ``cond_mask`` and ``block`` index."""
    synthetic = sample_blocks(diffusion, diff_cfg, blocks, hosts, g)
    images, trips, masks, block_ids = [], [], [], []
    for i, (block, syn) in enumerate(zip(blocks, synthetic, strict=True)):
        # Detector triplets: synthetic neighbours inside the block, the host's outside it.
        zs = np.arange(block.z0, block.z0 + len(syn))
        trip = torch.from_numpy(triplets(hosts[block.host].image)[zs]).float()
        trip[:, 1] = syn[:, 0]
        trip[1:, 0] = syn[:-1, 0]
        trip[:-1, 2] = syn[1:, 0]
        images.append(syn[block.lesion])
        trips.append(trip[block.lesion])
        masks.append(block.mask[block.lesion])
        block_ids.append(torch.full((int(block.lesion.sum()),), i))
    return {
        "image": torch.cat(images),
        "triplet": torch.cat(trips),
        "cond_mask": torch.cat(masks),
        "block": torch.cat(block_ids),
    }


def synthesize_pool(
    diff_cfg: DiffusionConfig,
    diff_state: Mapping[str, torch.Tensor],
    vae_cfg: MaskVAEConfig,
    vae_state: Mapping[str, torch.Tensor],
    ucmt_cfg: UCMTConfig,
    ucmt_state: Mapping[str, torch.Tensor],
    hosts: list[PreprocessedSubject],
    extents: list[tuple[int, int]],
    n_target: int,
    seed: int,
    min_pair_dice: float = 0.0,
    placement: Placement | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Draw ``n_target`` paired synthetic slices that agree (see the module docstring for the
    recipe), and the counts of what was drawn and rejected.

    A pair is kept only when the UCMT pseudo-label - the mask the detector trains on - overlaps
    the conditioning mask with Dice >= ``min_pair_dice``: a pair whose label is elsewhere (or
    empty) would teach the detector a lesion where the image has none. Blocks are drawn until
    ``n_target`` pairs are kept or :data:`MAX_DRAW_FACTOR` x ``n_target`` pairs were drawn.

    Returns the pool (``image``, ``triplet`` (detector input), ``cond_mask`` (MaskVAE3D),
    ``pseudo_mask`` (UCMT), ``block`` (lesion block index), ``pair_dice``; kept pairs only, in a
    seeded random order) and counts: ``n_drawn``, ``n_kept``, ``n_rejected_empty`` (empty
    pseudo-label), ``n_rejected_low_dice``, ``drawn_mask_dice`` (mean over every drawn pair:
    the generator's agreement before the check) and ``placement_rejected`` (masks that fit no tried
    host, see :class:`Placement`).
    """
    if not 0.0 <= min_pair_dice <= 1.0:
        raise ValueError(f"min_pair_dice must be in [0, 1], got {min_pair_dice!r}")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    diffusion, vae = load_generators(diff_cfg, diff_state, vae_cfg, vae_state)
    diffusion = diffusion.to(device or torch.device("cpu"))  # sampling is the costly part; the VAE stays put
    kept: list[dict[str, torch.Tensor]] = []
    n_kept = n_drawn = n_empty = n_low = 0
    drawn_dice: list[torch.Tensor] = []
    placed: dict[str, int] = {"placement_rejected": 0}
    offset = 0  # block indices stay distinct across rounds
    while n_kept < n_target and n_drawn < MAX_DRAW_FACTOR * n_target:
        # Ask for what is still missing, inflated by the acceptance rate seen so far.
        rate = n_kept / n_drawn if n_drawn else 1.0
        need = min(MAX_DRAW_FACTOR * n_target - n_drawn, max(1, math.ceil((n_target - n_kept) / max(rate, 0.1))))
        blocks = draw_lesion_blocks(
            vae, hosts, extents, g, rng, min_lesion_slices=need, placement=placement, counts=placed
        )
        if not blocks:  # no mask fits any host: the pool stays short (counted, never filled otherwise)
            break
        drawn = _synthesize_blocks(diffusion, diff_cfg, blocks, hosts, g)
        drawn["block"] = drawn["block"] + offset
        offset += len(blocks)
        drawn["pseudo_mask"] = ucmt_labels(ucmt_cfg, ucmt_state, drawn["image"], device)
        drawn["pair_dice"] = pair_dice(drawn["pseudo_mask"], drawn["cond_mask"])
        # min_pair_dice 0 turns the check off: every pair is kept, even one with an empty label
        empty = (drawn["pseudo_mask"].flatten(1).amax(1) <= 0.5) & (min_pair_dice > 0)
        ok = ~empty & (drawn["pair_dice"] >= min_pair_dice)
        n_drawn += len(ok)
        n_empty += int(empty.sum())
        n_low += int((~empty & ~ok).sum())
        drawn_dice.append(drawn["pair_dice"])
        kept.append({k: v[ok] for k, v in drawn.items()})
        n_kept += int(ok.sum())
    if not kept:  # an empty pool with the shapes of a full one
        h, w = hosts[0].image.shape[1:]
        kept = [
            {
                "image": torch.zeros(0, 1, h, w),
                "triplet": torch.zeros(0, 3, h, w),
                "cond_mask": torch.zeros(0, 1, h, w),
                "block": torch.zeros(0, dtype=torch.long),
                "pseudo_mask": torch.zeros(0, 1, h, w),
                "pair_dice": torch.zeros(0),
            }
        ]
        drawn_dice.append(torch.zeros(0))
    pool = {k: torch.cat([part[k] for part in kept]) for k in kept[0]}
    order = torch.randperm(len(pool["image"]), generator=g)[:n_target]
    pool = {k: v[order] for k, v in pool.items()}
    counts = {
        "n_drawn": n_drawn,
        "n_kept": len(order),
        "n_rejected_empty": n_empty,
        "n_rejected_low_dice": n_low,
        "drawn_mask_dice": float(torch.cat(drawn_dice).mean()) if n_drawn else None,
        "min_pair_dice": min_pair_dice,
        **placed,
    }
    return pool, counts


@dataclass(frozen=True)
class GeneratorRecord:
    """A trained generator as the pool stage records it (``meta.json["generator"]``): the cache
    keys of its three models, their configs, the cohort spec, the host subjects, the seed lesion
    extents and the pair check and placement rule its pool applied (``platform synth`` applies the
    same). Everything a later ``platform synth`` needs; no tensors. Records written before the
    checks were recorded read as "no check" (``min_pair_dice`` 0, ``placement_hu`` None)."""

    mask_vae: str
    diffusion: str
    ucmt: str
    stages: dict[str, dict[str, Any]]
    cohort: dict[str, Any]
    hosts: list[str]
    extents: list[list[int]]
    trained_on: list[str] = dataclasses.field(default_factory=list)  # the labeled seed (positives)
    min_pair_dice: float = 0.0
    placement_hu: list[float] | None = None  # [low, high] HU, or None: anywhere
    placement_share: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GeneratorRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class GeneratorSource:
    """A trained generator found in a stage cache: the pool entry that recorded it and its record."""

    entry: Path  # OUTPUT_DIR/stage_cache/pool/<key>
    record: GeneratorRecord

    @property
    def cache(self) -> StageCache:
        return StageCache(self.entry.parent.parent)

    @property
    def output_dir(self) -> Path:
        """The study output folder that holds the stage cache (and the phantom / slice caches)."""
        return self.entry.parent.parent.parent

    @property
    def stages(self) -> StagesSpec:
        """The generator's model configs (MaskVAE3D, diffusion, UCMT; the rest are defaults)."""
        return StagesSpec.model_validate(self.record.stages)

    def load(self, model: str) -> Any:
        """The cached output of one of the generator's models: ``mask_vae``, ``diffusion`` or ``ucmt``."""
        if model not in GENERATOR_STAGES:
            raise ValueError(f"model must be one of {GENERATOR_STAGES}, got {model!r}")
        key = StageKey(*getattr(self.record, model).split("/"))
        if not self.cache.has(key):
            raise PlatformError(f"the generator's {model} output {self.cache.entry(key)} is missing")
        return self.cache.load(key)


def lesion_extents(masks: list[np.ndarray]) -> list[tuple[int, int]]:
    """(first slice, number of slices) of each seed lesion along z."""
    out = []
    for m in masks:
        zs = np.nonzero(m.reshape(m.shape[0], -1).any(axis=1))[0]
        if len(zs):
            out.append((int(zs.min()), int(zs.max() - zs.min() + 1)))
    return out
