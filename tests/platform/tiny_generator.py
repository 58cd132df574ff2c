"""A tiny trained generator (pool entry) for tests of `platform synth` and the model registry.

Trained in-process through the stage functions a trial runs (``plan_trial`` + ``run_stage``:
MaskVAE3D, diffusion, UCMT teacher, pool), without Ray or MLflow: about 25 s on 2 cores, once per
test session (the tests that use it only read it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

__all__ = ["TINY_GENERATOR_STUDY", "tiny_generator"]

TINY_GENERATOR_STUDY = {
    "name": "tiny_generator",
    "seed": 0,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 12, "n_positive": 6, "shape": [40, 40, 8], "spacing": [8.0, 8.0, 10.0], "seed": 1},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 8]},
    },
    "stages": {
        "preset": "tiny",
        "mask_vae": {"epochs": 2, "volume_size": [8, 16, 16]},
        "diffusion": {"train_steps": 2, "base_channels": 8, "guidance": {"sampling_steps": 2}},
        "ucmt": {"train_steps": 2},
    },
    # untrained tiny models fail the pool QC; the QC itself is tested in test_generator_signal.py
    "protocol": {"min_pair_dice": 0.0, "placement_hu": None},
    "search_space": {"dose": {"grid": [1.0]}, "seed_size": {"grid": [2]}},
    "sampler": {"name": "grid"},
    "evaluation": {"prevalences": [0.25], "test_fraction": 0.5, "bootstrap": 0, "prevalence_draws": 1},
}

_trained: dict[str, Path] = {}


def tiny_generator(factory: pytest.TempPathFactory, protocol: dict | None = None) -> Path:
    """The pool entry ``OUT/stage_cache/pool/<key>`` of a tiny trained generator (trained on first
    call; ``protocol`` replaces the study's protocol block, one generator per distinct block)."""
    name = json.dumps(protocol, sort_keys=True)
    if name in _trained:
        return _trained[name]
    from salient.platform.cohort.prepare import load_cohort
    from salient.platform.stage_cache import StageCache
    from salient.platform.stages import DIFFUSION, MASK_VAE, POOL, UCMT
    from salient.platform.stages.trial import plan_trial, run_stage
    from salient.platform.study import load_study

    root = factory.mktemp("tiny_generator")
    study_file = root / "study.yaml"
    spec = {**TINY_GENERATOR_STUDY, "output_dir": str(root / "out")}
    if protocol is not None:
        spec["protocol"] = protocol
    study_file.write_text(yaml.safe_dump(spec))
    study = load_study(study_file)
    cohort = load_cohort(study.cohort, study.output_dir)
    plan = plan_trial(study, {"dose": 1.0, "seed_size": 2}, 0, 1.0, cohort)
    cache = StageCache(study.output_dir / "stage_cache")
    for name in (MASK_VAE, DIFFUSION, UCMT, POOL):
        run_stage(plan, name, cohort, cache)
    _trained[name] = cache.entry(plan.keys[POOL])
    return _trained[name]
