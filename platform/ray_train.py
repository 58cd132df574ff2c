"""Data-parallel stage training on Ray Train (TorchTrainer, DDP): the glue, kept out of the models.

A stage whose request says ``workers: W`` (``resources.stages.diffusion: {workers: 4, gpus: 1}``)
is trained by W Ray Train workers, each asking for the stage's ``cpus``/``gpus``. Every worker
runs the stage's own ``run`` (the same code as a single-worker stage); the trainers see the
process group Ray Train set up and train data-parallel (:mod:`salient.models.distributed`: the
config's batch is the global batch, split over the workers; same seeds).

Checkpoints are the stage cache's own (``checkpoint.pt`` next to the entry, written by rank 0,
loaded by every rank with ``weights_only=True``): a worker group restarted by Ray Train
(``FailureConfig``), a retried task or a rerun after a kill continues from the last one. Ray
Train's own checkpoints and ``TorchTrainer.restore`` (which unpickles from the storage folder) are
not used. Rank 0 stores the output (moved to the CPU, so any machine can load it).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import torch
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages.trial import TrialPlan
from salient.platform.study.schema import DATA_PARALLEL_STAGES, StageResources
from salient.platform.trial_exec import stage_cache

__all__ = ["train_data_parallel"]

log = logging.getLogger(__name__)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


class _RankCache(StageCache):
    """The stage cache as one rank sees it: only rank 0 writes checkpoints (every rank still builds
    the state, which gathers every rank's generator), every rank reads them."""

    def __init__(self, inner: StageCache, rank: int):
        super().__init__(inner.root)
        self.inner, self.rank = inner, rank

    def save_checkpoint(self, key: StageKey, state: Any) -> None:
        if self.rank == 0:
            self.inner.save_checkpoint(key, state)

    def load_checkpoint(self, key: StageKey) -> Any | None:
        return self.inner.load_checkpoint(key)


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: run the stage; rank 0 stores its output."""
    import ray
    from ray import train
    from salient.platform.stages.base import StageRun, TrialData
    from salient.platform.stages.registry import STAGE_BY_NAME
    from salient.platform.torch_runtime import configure_torch

    context = train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    configure_torch(config["threads"])
    plan: TrialPlan = config["plan"]
    name: str = config["stage"]
    cohort: LoadedCohort = ray.get(config["cohort"])
    cache = _RankCache(stage_cache(config["cache_root"]), rank)
    started = time.perf_counter()
    run = StageRun(name, plan, cohort, cache, TrialData(cohort, plan), {})
    output, meta = STAGE_BY_NAME[name].run(run)
    if rank == 0:
        meta = {**meta, "workers": size, "compute_seconds": time.perf_counter() - started}
        cache.inner.get_or_compute(plan.keys[name], lambda: (_to_cpu(output), meta))


def train_data_parallel(
    plan: TrialPlan, stage: str, cohort: LoadedCohort, cache: StageCache, resources: StageResources, retries: int = 2
) -> None:
    """Train ``stage`` of ``plan`` on ``resources.workers`` Ray Train workers into ``cache``.

    Args:
        plan: the resolved trial whose stage output this is (its inputs are in the cache).
        stage: a stage in :data:`~salient.platform.study.schema.DATA_PARALLEL_STAGES`.
        cohort: the study's cohort (put in the object store for the workers).
        cache: the stage cache; the output is stored under ``plan.keys[stage]``.
        resources: ``workers``, and ``cpus``/``gpus`` per worker.
        retries: worker-group restarts Ray Train makes after a failure (each resumes from the
            stage's last checkpoint).

    Raises:
        ValueError: a stage that cannot train data-parallel, or a batch the workers do not divide.
        RuntimeError: the training failed after its retries.
    """
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if stage not in DATA_PARALLEL_STAGES:
        raise ValueError(f"stage must be one of {DATA_PARALLEL_STAGES} to train data-parallel, got {stage!r}")
    batch = getattr(plan.stages, stage).batch_size
    if batch % resources.workers:
        raise ValueError(f"{stage}.batch_size {batch} must be divisible by workers={resources.workers}")
    per_worker: dict[str, float] = {"CPU": resources.cpus}
    if resources.gpus:
        per_worker["GPU"] = resources.gpus
    output_dir = cache.root.parent
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "plan": plan,
            "stage": stage,
            "cohort": ray.put(cohort),
            "cache_root": str(cache.root),
            "threads": max(1, int(resources.cpus)),
        },
        scaling_config=ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            # a fresh folder per run: Ray Train writes there, nothing reads it back
            name=f"{stage}-{plan.keys[stage].key[:12]}-{uuid.uuid4().hex[:8]}",
            storage_path=str((output_dir / "ray_results" / "train").resolve()),
            failure_config=FailureConfig(max_failures=retries),
        ),
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise RuntimeError(f"data-parallel {stage} training failed: {result.error}")
    if not cache.has(plan.keys[stage]):
        raise RuntimeError(f"data-parallel {stage} training finished without storing {plan.keys[stage]}")
