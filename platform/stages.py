"""The stages of one trial, each cached by content (see :mod:`salient.platform.stage_cache`).

    split -> MaskVAE3D -> diffusion -> UCMT -> synthetic pool -> detector(dose) -> aggregator
          -> evaluation at every prevalence

Generators (MaskVAE3D, diffusion, UCMT) train on the labeled seed only (UCMT also sees
unlabeled training slices, never test slices). The synthetic pool is drawn once per generator at
the study's largest dose and shuffled once; a detector at dose d takes the first
``round(d * real positive slices)`` pairs, so doses are nested subsets of one pool.

Synthetic pairs: a MaskVAE3D mask volume is sliced over a lesion extent taken from a seed
subject and placed in a healthy training host; each slice is synthesised by the diffusion model
conditioned on that mask and the host's neighbouring slices (anatomical context), and the frozen
UCMT teacher labels it. The pair (synthetic slice, pseudo-label) is a positive training slice.

Nothing here knows about Ray or MLflow: ``report`` is a plain callback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from salient.models.aggregator import AggregatorTrainer, pad_sequences
from salient.models.configs import AggregatorConfig, DetectorConfig, DiffusionConfig, MaskVAEConfig, UCMTConfig
from salient.models.detector import DetectorTrainer, MaskGuidedResNet
from salient.models.diffusion import ConditionalDiffusion, DiffusionBatch, DiffusionTrainer
from salient.models.mask_vae import MaskVAE3D, MaskVAETrainer, mask_to_volume, slice_volume
from salient.models.metrics import (
    attention_overlap,
    band_energy_stats,
    dice_score,
    frechet_distance,
    ms_ssim,
    random_conv_extractor,
)
from salient.models.training import ResumableTrainer
from salient.models.ucmt import DeepLabV3Plus, UCMTTrainer, predict_masks
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.cohort.preprocess import PreprocessedSubject
from salient.platform.evaluation import evaluate_subjects
from salient.platform.slices import SliceSet, neighbour_stack, slice_set, triplets
from salient.platform.splits import Split, make_split
from salient.platform.stage_cache import StageCache, StageKey, stage_key
from salient.platform.study.plan import apply_params
from salient.platform.study.schema import StagesSpec, Study

__all__ = [
    "GeneratorRecord",
    "LesionBlock",
    "StageEvent",
    "TrialPlan",
    "TrialResult",
    "configure_torch",
    "derive_seed",
    "diffusion_training_config",
    "draw_lesion_blocks",
    "load_generators",
    "plan_trial",
    "run_trial",
    "sample_blocks",
    "ucmt_labeled_slices",
    "ucmt_labels",
    "ucmt_unlabeled_slices",
]

log = logging.getLogger(__name__)
PREVIEW_PAIRS = 8  # synthetic pairs returned with a trial's result for its sample grid
CHECKPOINTS_PER_STAGE = 5  # partial-state saves per stage: a retried stage loses at most 1/5


@dataclass(frozen=True)
class StageEvent:
    stage: str
    key: StageKey
    reused: bool
    seconds: float


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, float]
    stage_keys: dict[str, str]
    split_fingerprint: str
    n_real_positive_slices: int
    n_synthetic: int
    #: the first synthetic pairs this trial trained on (pool tensors, at most PREVIEW_PAIRS), or None
    preview: dict[str, torch.Tensor] | None = None
    #: real lesion slices of the labeled seed (``image``, ``mask``; at most PREVIEW_PAIRS), to
    #: show next to the synthetic ones
    real_preview: dict[str, torch.Tensor] | None = None


def configure_torch(threads: int) -> None:
    """Process-wide torch settings for a trial worker.

    oneDNN is turned off on the CPU: torch 2.13's oneDNN AVX-512 1x1-convolution
    backward-weights kernel (``jit_avx512_common_1x1_convolution_bwd_weights_t``) segfaults on
    some inputs on our CPU machines (seen in UCMT training; gdb backtrace in the commit message).
    The native kernels are slower but correct. GPUs are unaffected (cuDNN does not use it).
    """
    torch.set_num_threads(max(1, threads))
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module-level flag


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any tuple of parts (study seed, repeat, stage name, ...)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def _asdict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _resume(trainer: ResumableTrainer, cache: StageCache, key: StageKey, total: int) -> Callable[[int, Any], None]:
    """Load the stage's partial checkpoint into ``trainer`` if one exists; return the progress
    callback (step or epoch) that saves a new one ``CHECKPOINTS_PER_STAGE`` times over ``total``."""
    if (state := cache.load_checkpoint(key)) is not None:
        trainer.load_state_dict(state)
    every = max(1, math.ceil(total / CHECKPOINTS_PER_STAGE))

    def save(progress: int, _: Any) -> None:
        if progress % every == 0:
            cache.save_checkpoint(key, trainer.state_dict())

    return save


# -- generator stages ---------------------------------------------------------------------------


def train_mask_vae(
    cfg: MaskVAEConfig, masks: list[np.ndarray], seed: int, cache: StageCache, key: StageKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    vols = [v for v in (mask_to_volume(m, cfg.volume_size) for m in masks) if v is not None]
    if not vols:
        raise ValueError("MaskVAE3D needs at least one seed subject with a non-empty mask")
    torch.manual_seed(seed)  # weight init: never depend on what ran before in this process
    trainer = MaskVAETrainer(MaskVAE3D(cfg), torch.from_numpy(np.stack(vols)), seed=seed)
    losses = trainer.train(on_epoch=_resume(trainer, cache, key, cfg.epochs))
    return {"ema": trainer.ema.module.state_dict()}, {
        "n_volumes": len(vols),
        "final_loss": losses[-1] if losses else None,
    }


def train_diffusion(
    cfg: DiffusionConfig, data: SliceSet, seed: int, cache: StageCache, key: StageKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    torch.manual_seed(seed)  # weight init: never depend on what ran before in this process
    model = ConditionalDiffusion(cfg)
    trainer = DiffusionTrainer(model, DiffusionBatch(data.image, data.mask, data.neighbours), seed=seed)
    losses = trainer.train(on_step=_resume(trainer, cache, key, cfg.train_steps))
    first = float(np.mean(losses[: max(1, len(losses) // 10)])) if losses else None
    last = float(np.mean(losses[-max(1, len(losses) // 10) :])) if losses else None
    return {"ema": trainer.ema.module.state_dict()}, {"n_slices": len(data), "loss_first": first, "loss_last": last}


def train_ucmt(
    cfg: UCMTConfig, labeled: SliceSet, unlabeled: torch.Tensor, seed: int, cache: StageCache, key: StageKey
) -> tuple[dict[str, Any], dict[str, Any]]:
    trainer = UCMTTrainer(cfg, (labeled.image, labeled.mask), unlabeled, seed=seed)
    losses = trainer.train(on_step=_resume(trainer, cache, key, cfg.train_steps))
    return {"teacher": trainer.teacher.module.state_dict()}, {
        "n_labeled": len(labeled),
        "n_unlabeled": int(unlabeled.shape[0]),
        "final_loss": losses[-1] if losses else None,
    }


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
    real_lesion_slices: torch.Tensor,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Draw ``n_target`` paired synthetic slices (see the module docstring for the recipe)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    diffusion, vae = load_generators(diff_cfg, diff_state, vae_cfg, vae_state)
    blocks = draw_lesion_blocks(vae, hosts, extents, g, rng, min_lesion_slices=n_target)
    synthetic = sample_blocks(diffusion, diff_cfg, blocks, hosts, g)
    images, trips, masks = [], [], []
    for block, syn in zip(blocks, synthetic, strict=True):
        # Detector triplets: synthetic neighbours inside the block, the host's outside it.
        zs = np.arange(block.z0, block.z0 + len(syn))
        trip = torch.from_numpy(triplets(hosts[block.host].image)[zs]).float()
        trip[:, 1] = syn[:, 0]
        trip[1:, 0] = syn[:-1, 0]
        trip[:-1, 2] = syn[1:, 0]
        images.append(syn[block.lesion])
        trips.append(trip[block.lesion])
        masks.append(block.mask[block.lesion])
    image, trip_all, mask_all = torch.cat(images), torch.cat(trips), torch.cat(masks)
    pseudo = ucmt_labels(ucmt_cfg, ucmt_state, image)
    order = torch.randperm(len(image), generator=g)[:n_target]
    pool = {
        "image": image[order],
        "triplet": trip_all[order],
        "cond_mask": mask_all[order],
        "pseudo_mask": pseudo[order],
    }
    return pool, _realism(pool, real_lesion_slices)


def _realism(pool: Mapping[str, torch.Tensor], real: torch.Tensor) -> dict[str, Any]:
    """Mask fidelity, wavelet band energies and a Frechet distance, synthetic vs real lesion slices."""
    syn = pool["image"]
    fidelity = [dice_score(p, c) for p, c in zip(pool["pseudo_mask"], pool["cond_mask"], strict=True)]
    extractor = random_conv_extractor()
    out: dict[str, Any] = {
        "n_synthetic": len(syn),
        "mask_dice": float(np.mean(fidelity)) if fidelity else None,
        "feature_extractor": extractor.name,
    }
    if len(syn) >= 2 and len(real) >= 2:
        out["frechet_distance"] = frechet_distance(extractor(real), extractor(syn))
        if min(syn.shape[-2:]) >= 16:  # MS-SSIM of synthetic vs real lesion slices, paired in order
            k = min(len(syn), len(real))
            score = ms_ssim(syn[:k], real[:k])
            out.update({"ms_ssim": score.value, "ms_ssim_scales": score.scales, "ms_ssim_kernel": score.kernel_size})
        for name, arr in band_energy_stats(syn).items():
            out[f"synthetic_{name}"] = float(np.mean(arr))
        for name, arr in band_energy_stats(real).items():
            out[f"real_{name}"] = float(np.mean(arr))
    return out


# -- detector stages -----------------------------------------------------------------------------


def _detector_input(cfg: DetectorConfig, s: SliceSet) -> torch.Tensor:
    return s.triplet if cfg.input_mode == "triplet" else s.image


def train_detector(
    cfg: DetectorConfig,
    real: SliceSet,
    synthetic: Mapping[str, torch.Tensor] | None,
    seed: int,
    cache: StageCache,
    key: StageKey,
) -> tuple[dict[str, Any], dict[str, Any]]:
    x, y, m = _detector_input(cfg, real), real.has_lesion.float(), real.mask
    n_syn = 0
    if synthetic is not None and len(synthetic["image"]):
        xs = synthetic["triplet"] if cfg.input_mode == "triplet" else synthetic["image"]
        n_syn = len(xs)
        x, y, m = torch.cat([x, xs]), torch.cat([y, torch.ones(n_syn)]), torch.cat([m, synthetic["pseudo_mask"]])
    trainer = DetectorTrainer(cfg, x, y, m, seed=seed)
    history = trainer.train(on_epoch=_resume(trainer, cache, key, cfg.epochs))
    return {"model": trainer.model.state_dict()}, {"n_slices": len(x), "n_synthetic": n_syn, "loss": history}


def _subject_embeddings(
    det: MaskGuidedResNet, cfg: DetectorConfig, data: SliceSet, ids: tuple[str, ...]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    x = _detector_input(cfg, data)
    emb = det.embed(x)
    with torch.no_grad():  # the slice head on the same embeddings: no second pass over the slices
        prob = torch.sigmoid(det.fc(emb).squeeze(1))
    subj = np.asarray(data.subject)
    seqs = [emb[torch.from_numpy(subj == sid)] for sid in ids]
    max_slice = torch.stack([prob[torch.from_numpy(subj == sid)].max() for sid in ids])
    return seqs, max_slice


def train_aggregator(
    cfg: AggregatorConfig,
    det_cfg: DetectorConfig,
    det_state: Mapping[str, torch.Tensor],
    train: SliceSet,
    train_ids: tuple[str, ...],
    train_labels: torch.Tensor,
    test: SliceSet,
    test_ids: tuple[str, ...],
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    det = MaskGuidedResNet(det_cfg)
    det.load_state_dict(det_state)
    det.eval()
    seqs, _ = _subject_embeddings(det, det_cfg, train, train_ids)
    x, pad = pad_sequences(seqs, cfg.max_len)
    trainer = AggregatorTrainer(cfg, x, pad, train_labels, seed=seed)
    history = trainer.train()
    test_seqs, test_max = _subject_embeddings(det, det_cfg, test, test_ids)
    xt, padt = pad_sequences(test_seqs, cfg.max_len)
    scores = trainer.predict(xt, padt)
    # Saliency check: how much of the deep attention falls inside the lesion on test lesion slices.
    lesion = test.has_lesion
    overlap = float("nan")
    if lesion.any():
        with torch.no_grad():
            _, att = det(_detector_input(det_cfg, test)[lesion][:128])
        overlap = float(np.mean(attention_overlap(att[-1], test.mask[lesion][:128])))
    return ({"scores": scores, "max_slice": test_max}, {"loss": history, "attention_overlap": overlap})


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


# -- the trial --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialPlan:
    """Everything that determines a trial, resolved before anything trains (plan, then execute)."""

    params: dict[str, Any]
    repeat: int
    stages: StagesSpec
    split: Split
    n_real_positive: int  # lesion slices of the labeled seed
    n_synthetic: int  # requested: round(dose * n_real_positive)
    n_pool: int  # pool size: round(pool_dose * n_real_positive)
    keys: dict[str, StageKey]

    @property
    def trial_key(self) -> str:
        """Identity of the trial's result (last stage key + its values), to find it again in MLflow."""
        text = self.keys["aggregator"].key + repr(sorted((k, repr(v)) for k, v in self.params.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def plan_trial(
    study: Study, params: Mapping[str, Any], repeat: int, pool_dose: float, cohort: LoadedCohort
) -> TrialPlan:
    """Resolve a trial's configs, split and stage cache keys without training anything.

    Args:
        params: the trial's search-space values (``dose``, ``seed_size``, ``STAGE.FIELD`` ...).
        pool_dose: the largest dose of the study: the synthetic pool is sized for it.
        cohort: the manifest records and every preprocessed subject (see :class:`LoadedCohort`).
    """
    stages = apply_params(study.stages, dict(params))
    dose = float(params.get("dose", 0.0))
    if dose < 0 or dose > pool_dose:
        raise ValueError(f"dose {dose} must be within [0, pool_dose={pool_dose}]")
    seed_size = int(params["seed_size"]) if "seed_size" in params else _all_train_positives(cohort, repeat, study)
    split = make_split(cohort.records, seed_size, repeat, study.seed, study.evaluation.test_fraction)
    n_real_pos = sum(
        int(cohort.subjects[s].mask.reshape(cohort.subjects[s].mask.shape[0], -1).any(axis=1).sum())
        for s in split.seed_positive
    )
    n_syn, n_pool = round(dose * n_real_pos), round(pool_dose * n_real_pos)
    base = {"cohort": cohort.fingerprint, "repeat": repeat, "seed": study.seed}
    keys: dict[str, StageKey] = {}
    upstream: tuple[StageKey, ...] = ()
    if n_syn > 0:
        keys["mask_vae"] = stage_key("mask_vae", _asdict(stages.mask_vae), data=split.seed_positive, **base)
        keys["diffusion"] = stage_key(
            "diffusion", diffusion_training_config(stages.diffusion), data=split.seed_positive, **base
        )
        keys["ucmt"] = stage_key(
            "ucmt", _asdict(stages.ucmt), data=(split.seed_positive, split.unlabeled, split.train_negative), **base
        )
        keys["pool"] = stage_key(
            "pool",
            {"guidance": _asdict(stages.diffusion.guidance), "n": n_pool},
            (keys["mask_vae"], keys["diffusion"], keys["ucmt"]),
            hosts=split.train_negative,
            **base,
        )
        upstream = (keys["pool"],)
    keys["detector"] = stage_key(
        "detector", _asdict(stages.detector), upstream, data=split.labeled, n_synthetic=n_syn, **base
    )
    keys["aggregator"] = stage_key(
        "aggregator",
        {"aggregator": _asdict(stages.aggregator), "evaluation": study.evaluation.model_dump(mode="json")},
        (keys["detector"],),
        test=split.test,
        **base,
    )
    return TrialPlan(dict(params), repeat, stages, split, n_real_pos, n_syn, n_pool, keys)


def run_trial(
    study: Study,
    trial: TrialPlan,
    cohort: LoadedCohort,
    cache: StageCache,
    report: Callable[[StageEvent], None] | None = None,
) -> TrialResult:
    """Run (or reuse) every stage of a planned trial and return its metrics."""
    subjects, split, stages, keys, repeat = cohort.subjects, trial.split, trial.stages, trial.keys, trial.repeat
    split.assert_disjoint()

    def stage(name: str, compute: Callable[[], tuple[Any, dict[str, Any]]]) -> Any:
        start = time.perf_counter()
        out, reused = cache.get_or_compute(keys[name], compute)
        if report is not None:
            report(StageEvent(name, keys[name], reused, time.perf_counter() - start))
        return out

    seed_set = slice_set(subjects, split.seed_positive, stages.diffusion.neighbour_offsets)
    lesion_slices = seed_set.select(torch.nonzero(seed_set.has_lesion).flatten())
    pool: dict[str, torch.Tensor] | None = None
    n_syn = 0
    if "pool" in keys:
        vae = stage(
            "mask_vae",
            lambda: train_mask_vae(
                stages.mask_vae,
                [subjects[s].mask for s in split.seed_positive],
                derive_seed(study.seed, repeat, "mask_vae"),
                cache,
                keys["mask_vae"],
            ),
        )
        diff = stage(
            "diffusion",
            lambda: train_diffusion(
                stages.diffusion, seed_set, derive_seed(study.seed, repeat, "diffusion"), cache, keys["diffusion"]
            ),
        )
        ucmt = stage(
            "ucmt",
            lambda: train_ucmt(
                stages.ucmt,
                ucmt_labeled_slices(seed_set, repeat, study.seed),
                ucmt_unlabeled_slices(
                    subjects,
                    split.unlabeled + split.train_negative,
                    derive_seed(study.seed, repeat, "ucmt-unlabeled"),
                    8 * max(trial.n_real_positive, 16),
                ),
                derive_seed(study.seed, repeat, "ucmt"),
                cache,
                keys["ucmt"],
            ),
        )
        hosts = [subjects[s] for s in split.train_negative] or [subjects[s] for s in split.seed_positive]
        extents = _lesion_extents([subjects[s].mask for s in split.seed_positive])

        def make_pool() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            pool, meta = synthesize_pool(
                stages.diffusion,
                diff["ema"],
                stages.mask_vae,
                vae["ema"],
                stages.ucmt,
                ucmt["teacher"],
                hosts,
                extents,
                trial.n_pool,
                derive_seed(study.seed, repeat, "pool"),
                lesion_slices.image,
            )
            # What `platform synth` needs to draw more pairs from this generator later.
            meta["generator"] = GeneratorRecord(
                mask_vae=str(keys["mask_vae"]),
                diffusion=str(keys["diffusion"]),
                ucmt=str(keys["ucmt"]),
                stages={
                    "mask_vae": _asdict(stages.mask_vae),
                    "diffusion": _asdict(stages.diffusion),
                    "ucmt": _asdict(stages.ucmt),
                },
                cohort=study.cohort.model_dump(mode="json"),
                hosts=[h.subject for h in hosts],
                extents=[list(e) for e in extents],
                trained_on=list(split.seed_positive),
            ).to_json()
            return pool, meta

        full_pool = stage("pool", make_pool)
        pool = {k: v[: trial.n_synthetic] for k, v in full_pool.items()}  # nested subsets of one pool
        n_syn = len(pool["image"])  # the pool can fall short if the mask VAE draws empty masks
    labeled = slice_set(subjects, split.labeled, stages.diffusion.neighbour_offsets)
    det = stage(
        "detector",
        lambda: train_detector(
            stages.detector, labeled, pool, derive_seed(study.seed, repeat, "detector"), cache, keys["detector"]
        ),
    )
    test = slice_set(subjects, split.test, stages.diffusion.neighbour_offsets)
    train_labels = torch.tensor([float(subjects[s].label) for s in split.labeled])
    agg = stage(
        "aggregator",
        lambda: train_aggregator(
            stages.aggregator,
            stages.detector,
            det["model"],
            labeled,
            split.labeled,
            train_labels,
            test,
            split.test,
            derive_seed(study.seed, repeat, "aggregator"),
        ),
    )
    ev = study.evaluation
    y = np.array([subjects[s].label for s in split.test])
    tvr = np.array([subjects[s].tvr or 0.0 for s in split.test])
    eval_seed = derive_seed(study.seed, repeat, "evaluation")
    metrics = evaluate_subjects(
        y,
        agg["scores"].numpy(),
        ev.prevalences,
        draws=ev.prevalence_draws,
        bootstrap=ev.bootstrap,
        ci=ev.ci,
        seed=eval_seed,
        tvr=tvr,
    )
    max_slice = evaluate_subjects(
        y, agg["max_slice"].numpy(), ev.prevalences, draws=ev.prevalence_draws, bootstrap=0, ci=ev.ci, seed=eval_seed
    )
    metrics.update({f"maxslice_{k}": v for k, v in max_slice.items() if k.startswith(("auprc", "auroc"))})
    metrics["attention_overlap"] = cache.meta(keys["aggregator"])["attention_overlap"]
    if "pool" in keys:
        pool_meta = cache.meta(keys["pool"])
        metrics.update(
            {
                k if k.startswith(("synthetic_", "real_")) else f"pool_{k}": v
                for k, v in pool_meta.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        )
    metrics.update({"n_real_positive_slices": float(trial.n_real_positive), "n_synthetic": float(n_syn)})
    preview = {k: v[:PREVIEW_PAIRS] for k, v in pool.items()} if pool is not None else None
    real_preview = {"image": lesion_slices.image[:PREVIEW_PAIRS], "mask": lesion_slices.mask[:PREVIEW_PAIRS]}
    stage_keys = {k: str(v) for k, v in keys.items()}
    return TrialResult(metrics, stage_keys, split.fingerprint(), trial.n_real_positive, n_syn, preview, real_preview)


def _all_train_positives(cohort: LoadedCohort, repeat: int, study: Study) -> int:
    """Default seed size when the study does not search it: every positive training subject."""
    probe = make_split(cohort.records, 0, repeat, study.seed, study.evaluation.test_fraction)
    marked_unlabeled = {r.subject for r in cohort.records if r.split == "unlabeled"}
    return len([s for s in probe.unlabeled if s not in marked_unlabeled])


def ucmt_labeled_slices(seed_set: SliceSet, repeat: int, study_seed: int) -> SliceSet:
    """Lesion slices of the seed plus as many lesion-free slices (so empty masks are learned too)."""
    lesion = torch.nonzero(seed_set.has_lesion).flatten()
    clear = torch.nonzero(~seed_set.has_lesion).flatten()
    g = torch.Generator().manual_seed(derive_seed(study_seed, repeat, "ucmt-labeled"))
    chosen = torch.cat([lesion, clear[torch.randperm(len(clear), generator=g)[: max(len(lesion), 1)]]])
    return seed_set.select(chosen)


def ucmt_unlabeled_slices(
    subjects: Mapping[str, PreprocessedSubject], ids: Sequence[str], seed: int, cap: int
) -> torch.Tensor:
    """At most ``cap`` slices of the given subjects, drawn without replacement: UCMT's unlabeled set."""
    if ids:
        images = np.concatenate([subjects[s].image for s in ids])[:, None]
    else:
        images = np.zeros((0, 1, *next(iter(subjects.values())).image.shape[1:]), np.float32)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(images[rng.permutation(len(images))[:cap]]).float()


def diffusion_training_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """What a diffusion model's training depends on: everything but guidance, which only affects
    sampling (generators that differ only in guidance share one training)."""
    return {k: v for k, v in _asdict(cfg).items() if k != "guidance"}


def _lesion_extents(masks: list[np.ndarray]) -> list[tuple[int, int]]:
    """(first slice, number of slices) of each seed lesion along z."""
    out = []
    for m in masks:
        zs = np.nonzero(m.reshape(m.shape[0], -1).any(axis=1))[0]
        if len(zs):
            out.append((int(zs.min()), int(zs.max() - zs.min() + 1)))
    return out
