"""A trained generator and what is drawn from it: the glue shared by a trial's pool stage,
``platform synth`` and ``platform tune-guidance``.

Synthetic pairs: a MaskVAE3D mask volume is sliced over a lesion extent taken from a seed subject
and placed in a healthy training host; each slice is synthesised by the diffusion model
conditioned on that mask and the host's neighbouring slices (anatomical context), and the frozen
UCMT teacher labels it. The pair (synthetic slice, pseudo-label) is a positive training slice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
    "GeneratorRecord",
    "GeneratorSource",
    "LesionBlock",
    "draw_lesion_blocks",
    "lesion_extents",
    "load_generators",
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


def draw_lesion_blocks(
    vae: MaskVAE3D,
    hosts: list[PreprocessedSubject],
    extents: list[tuple[int, int]],
    g: torch.Generator,
    rng: np.random.Generator,
    *,
    min_lesion_slices: int = 0,
    min_blocks: int = 0,
) -> list[LesionBlock]:
    """Draw mask volumes until both minimums are met (blocks with only empty slices are skipped).

    Each block takes its axial extent from a seed lesion (``extents``: first slice, length) and
    its anatomy from a random host. Gives up after 50 draws per requested item, so an
    undertrained VAE that only draws empty masks cannot loop forever.
    """
    if not hosts or not extents:
        raise ValueError("synthesis needs at least one host subject and one seed lesion extent")
    hw = hosts[0].image.shape[1:]
    blocks: list[LesionBlock] = []
    n_lesion, tries = 0, 0
    while (n_lesion < min_lesion_slices or len(blocks) < min_blocks) and tries < 50 * max(
        min_lesion_slices, min_blocks, 1
    ):
        tries += 1
        vol = vae.sample(1, generator=g)[0]
        z0, length = extents[rng.integers(len(extents))]
        host = int(rng.integers(len(hosts)))
        length = min(length, hosts[host].image.shape[0])
        z0 = max(0, min(z0, hosts[host].image.shape[0] - length))
        m = slice_volume(vol, length, hw)  # (L, 1, H, W)
        lesion = m.flatten(1).amax(1) > 0.5
        if lesion.any():
            blocks.append(LesionBlock(host, z0, m, lesion))
            n_lesion += int(lesion.sum())
    if not blocks:
        raise RuntimeError("MaskVAE3D produced only empty masks; it is undertrained (raise mask_vae.epochs)")
    return blocks


def sample_blocks(
    diffusion: ConditionalDiffusion,
    cfg: DiffusionConfig,
    blocks: list[LesionBlock],
    hosts: list[PreprocessedSubject],
    g: torch.Generator,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Synthesise every slice of every block, conditioned on its mask and the host's neighbouring
    slices (anatomical context); returns one (L, 1, H, W) tensor per block, in [-1, 1]."""
    masks = torch.cat([b.mask for b in blocks])
    neigh = torch.cat(
        [
            torch.from_numpy(
                neighbour_stack(hosts[b.host].image, cfg.neighbour_offsets)[b.z0 : b.z0 + len(b.mask)]
            ).float()
            for b in blocks
        ]
    )
    images = torch.cat(
        [
            diffusion.sample(masks[i : i + batch_size], neigh[i : i + batch_size], cfg.guidance, generator=g)
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


def ucmt_labels(cfg: UCMTConfig, state: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Pseudo-label synthetic slices with the frozen UCMT teacher: (N, 1, H, W) -> (N, 1, H, W) in {0, 1}."""
    net = DeepLabV3Plus(cfg)
    net.load_state_dict(state)
    return predict_masks(net, images, cfg.threshold, batch_size=64)


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
) -> dict[str, torch.Tensor]:
    """Draw ``n_target`` paired synthetic slices (see the module docstring for the recipe): tensors
    ``image``, ``triplet`` (detector input), ``cond_mask`` (MaskVAE3D), ``pseudo_mask`` (UCMT)
    and ``block`` (which drawn lesion block each slice belongs to)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    diffusion, vae = load_generators(diff_cfg, diff_state, vae_cfg, vae_state)
    blocks = draw_lesion_blocks(vae, hosts, extents, g, rng, min_lesion_slices=n_target)
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
    image, trip_all, mask_all = torch.cat(images), torch.cat(trips), torch.cat(masks)
    pseudo = ucmt_labels(ucmt_cfg, ucmt_state, image)
    order = torch.randperm(len(image), generator=g)[:n_target]
    pool = {
        "image": image[order],
        "triplet": trip_all[order],
        "cond_mask": mask_all[order],
        "pseudo_mask": pseudo[order],
        "block": torch.cat(block_ids)[order],
    }
    return pool


@dataclass(frozen=True)
class GeneratorRecord:
    """A trained generator as the pool stage records it (``meta.json["generator"]``): the cache
    keys of its three models, their configs, the cohort spec, the host subjects and the seed
    lesion extents. Everything a later ``platform synth`` needs; no tensors."""

    mask_vae: str
    diffusion: str
    ucmt: str
    stages: dict[str, dict[str, Any]]
    cohort: dict[str, Any]
    hosts: list[str]
    extents: list[list[int]]
    trained_on: list[str] = dataclasses.field(default_factory=list)  # the labeled seed (positives)

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
