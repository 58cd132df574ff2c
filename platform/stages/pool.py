"""Pool stage: the synthetic pairs of one generator, drawn once for the study's largest dose.

Only pairs whose UCMT pseudo-label agrees with the conditioning mask (Dice >=
``protocol.min_pair_dice``) are kept; how many were drawn and rejected, and why, is recorded, and
a dose is never filled with rejected pairs (the pool falls short instead, and the trial's
``n_added_slices`` says by how much).

The pool also records how real it looks next to the seed's lesion slices (mask fidelity of the
UCMT pseudo-labels vs the conditioning masks, Frechet distance, MS-SSIM, wavelet band energies)
and the :class:`~salient.platform.stages.generator.GeneratorRecord` that ``platform synth`` uses
to draw more pairs from the same generator later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from salient.models.metrics import band_energy_stats, dice_score, frechet_distance, ms_ssim, random_conv_extractor
from salient.platform.stages import DIFFUSION, MASK_VAE, POOL, UCMT
from salient.platform.stages.base import Output, Stage, StageRun, stage_device
from salient.platform.stages.generator import (
    GeneratorRecord,
    Placement,
    lesion_extents,
    placement_rule,
    synthesize_pool,
)

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = ["STAGE", "realism"]


def realism(pool: Mapping[str, torch.Tensor], real: torch.Tensor) -> dict[str, Any]:
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


def _run(run: StageRun) -> Output:
    plan, subjects, split, stages = run.plan, run.cohort.subjects, run.plan.split, run.plan.stages
    hosts = [subjects[s] for s in split.train_negative] or [subjects[s] for s in split.seed_positive]
    extents = lesion_extents([subjects[s].mask for s in split.seed_positive])
    pool, counts = synthesize_pool(
        stages.diffusion,
        run.inputs[DIFFUSION]["ema"],
        stages.mask_vae,
        run.inputs[MASK_VAE]["ema"],
        stages.ucmt,
        run.inputs[UCMT]["teacher"],
        hosts,
        extents,
        plan.n_pool,
        run.seed,
        min_pair_dice=plan.study.protocol.min_pair_dice,
        placement=placement(plan),
        device=stage_device(),
    )
    meta = {**realism(pool, run.data.seed_lesions.image), **counts}
    meta["generator"] = GeneratorRecord(
        mask_vae=str(plan.keys[MASK_VAE]),
        diffusion=str(plan.keys[DIFFUSION]),
        ucmt=str(plan.keys[UCMT]),
        stages={name: dataclasses.asdict(getattr(stages, name)) for name in (MASK_VAE, DIFFUSION, UCMT)},
        cohort=plan.study.cohort.model_dump(mode="json"),
        hosts=[h.subject for h in hosts],
        extents=[list(e) for e in extents],
        trained_on=list(split.seed_positive),
        min_pair_dice=plan.study.protocol.min_pair_dice,
        placement_hu=list(plan.study.protocol.placement_hu) if plan.study.protocol.placement_hu else None,
        placement_share=plan.study.protocol.placement_share,
    ).to_json()
    return pool, meta


def placement(plan: TrialPlan) -> Placement | None:
    """The study's placement rule for lesion masks in healthy hosts (None: anywhere)."""
    protocol = plan.study.protocol
    return placement_rule(protocol.placement_hu, plan.study.cohort.preprocessing.hu_window, protocol.placement_share)


def _config(plan: TrialPlan) -> Any:
    protocol = plan.study.protocol
    return {
        "guidance": dataclasses.asdict(plan.stages.diffusion.guidance),
        "n": plan.n_pool,
        "min_pair_dice": protocol.min_pair_dice,
        "placement": [protocol.placement_hu, protocol.placement_share],
    }


STAGE = Stage(
    name=POOL,
    config=_config,
    data=lambda plan: {"hosts": plan.split.train_negative},
    run=_run,
    inputs=(MASK_VAE, DIFFUSION, UCMT),
    active=lambda plan: plan.uses_generator,
)
