"""The stages of one trial, each cached by content (see :mod:`salient.platform.stage_cache`).

    split -> mask_vae -> diffusion -> ucmt -> pool -> detector(dose) -> aggregator -> evaluation
             \\_____ generator (trained once per seed, repeat, config) _____/

Generators (MaskVAE3D, diffusion, UCMT) train on the labeled seed only (UCMT also sees
unlabeled training slices, never test slices). The synthetic pool is drawn once per generator at
the study's largest dose; a detector at dose d takes its first ``round(d * real lesion slices)``
pairs, so doses are nested subsets of one pool.

One module per stage holds its training glue and its :class:`~salient.platform.stages.base.Stage`
description (name, cache-key parts, inputs, run); :mod:`~salient.platform.stages.registry` lists
them in order, and :mod:`~salient.platform.stages.trial` plans and runs a trial as a loop over
that list. The generator glue shared by trials, ``platform synth`` and ``platform tune-guidance``
lives in :mod:`~salient.platform.stages.generator`. Nothing in this package knows about Ray or
MLflow.

This ``__init__`` holds only the stage names (importing it loads no torch), so that study
validation can refer to them.
"""

from __future__ import annotations

__all__ = ["AGGREGATOR", "DETECTOR", "DIFFUSION", "GENERATOR_STAGES", "MASK_VAE", "POOL", "STAGE_NAMES", "UCMT"]

MASK_VAE, DIFFUSION, UCMT, POOL, DETECTOR, AGGREGATOR = (
    "mask_vae",
    "diffusion",
    "ucmt",
    "pool",
    "detector",
    "aggregator",
)
#: Every stage, in the order a trial runs them.
STAGE_NAMES = (MASK_VAE, DIFFUSION, UCMT, POOL, DETECTOR, AGGREGATOR)
#: The trained models that make up a generator (shared by every dose that uses it).
GENERATOR_STAGES = (MASK_VAE, DIFFUSION, UCMT)
