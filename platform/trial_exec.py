"""What a worker does for one task of a study: compute one upstream stage, or run one trial and
write it to the trial store. Ray-free: the same functions run inside Ray tasks
(:mod:`salient.platform.ray_graph`) and Tune trainables (:mod:`salient.platform.tune_adapter`).

Every stage goes through the stage cache, so a retried task reuses the stages that finished and
continues an interrupted stage from its last in-stage checkpoint. Per stage the trial records the
seconds it took, whether it was reused and the seconds it **waited** on another process's lock
(a stage it needed was being computed elsewhere): in the graph scheme that is ~0 by construction,
in the trial-per-slot scheme it is the slot time lost to a shared generator.

Test hook (fault-injection tests only; never set in production): :data:`FAIL_ONCE_ENV` names a
marker file; while it does not exist, the first task that reaches :data:`FAIL_AT_ENV` creates it
and fails (:data:`FAIL_MODE_ENV`: ``raise`` an exception, or ``kill`` the worker process with
SIGKILL, like the OOM killer). ``FAIL_AT`` is ``STAGE`` (after that stage finished; default
``detector``) or ``STAGE:checkpoint`` (in the middle of that stage, right after its first in-stage
checkpoint was saved). When a stage later resumes from a checkpoint, a line
``resumed STAGE at PROGRESS`` is appended to the marker, so a test can see where the retry started.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.trial_store import TrialStore

if TYPE_CHECKING:
    from salient.platform.cohort.prepare import LoadedCohort
    from salient.platform.stages.base import StageEvent
    from salient.platform.stages.trial import TrialPlan

__all__ = [
    "FAIL_AT_ENV",
    "FAIL_MODE_ENV",
    "FAIL_ONCE_ENV",
    "StageDone",
    "TrialJob",
    "run_trial_job",
    "run_upstream_stage",
    "stage_cache",
]

log = logging.getLogger(__name__)

FAIL_ONCE_ENV = "SALIENT_FAIL_ONCE"
FAIL_MODE_ENV = "SALIENT_FAIL_MODE"
FAIL_AT_ENV = "SALIENT_FAIL_AT"


def _fail_now(where: str) -> None:
    """Fire the test hook once (see the module docstring)."""
    marker = os.environ.get(FAIL_ONCE_ENV)
    if not marker or Path(marker).exists():
        return
    Path(marker).write_text(f"failed at {where} (pid {os.getpid()}, {time.time():.3f})\n")
    if os.environ.get(FAIL_MODE_ENV) == "kill":  # no exception, no cleanup
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at {where} ({FAIL_ONCE_ENV}={marker})")


def _fail_at() -> tuple[str, bool]:
    """``(stage, mid_stage)`` of the test hook."""
    stage, _, when = os.environ.get(FAIL_AT_ENV, "detector").partition(":")
    return stage, when == "checkpoint"


class _HookedCache(StageCache):
    """The stage cache with the test hook: fails right after a stage's first in-stage checkpoint,
    and notes in the marker file where a resumed stage continues."""

    def save_checkpoint(self, key: StageKey, state: Any) -> None:
        super().save_checkpoint(key, state)
        stage, mid_stage = _fail_at()
        if mid_stage and key.stage == stage:
            _fail_now(f"{stage}:checkpoint (progress {_progress(state)})")

    def load_checkpoint(self, key: StageKey) -> Any | None:
        state = super().load_checkpoint(key)
        marker = os.environ.get(FAIL_ONCE_ENV)
        if state is not None and marker and Path(marker).exists():
            with open(marker, "a") as fh:
                fh.write(f"resumed {key.stage} at {_progress(state)}\n")
        return state


def _progress(state: Any) -> int | None:
    if isinstance(state, dict):
        for name in ("step", "epoch"):
            if name in state:
                return int(state[name])
    return None


def stage_cache(root: str | Path) -> StageCache:
    """The stage cache a task uses (with the test hook only when its variable is set)."""
    return _HookedCache(root) if os.environ.get(FAIL_ONCE_ENV) else StageCache(root)


@dataclass(frozen=True)
class StageDone:
    """What a task that computed (or found) one upstream stage output returns to the driver."""

    node: str
    stage: str
    reused: bool
    seconds: float
    waited: float
    compute_seconds: float | None = None


def run_upstream_stage(
    plan: TrialPlan,
    stage: str,
    cohort: LoadedCohort,
    cache_root: str,
    train: Callable[[TrialPlan, str, StageCache], None] | None = None,
) -> StageDone:
    """Compute (or reuse) one upstream stage output of ``plan``; its inputs are in the cache.

    ``train``: an alternative way to compute it into the cache (data-parallel training)."""
    from salient.platform.stages.trial import run_stage

    started = time.perf_counter()
    cache = stage_cache(cache_root)
    key = plan.keys[stage]
    if train is not None and not cache.has(key):
        train(plan, stage, cache)
        reused = False
    else:
        _, reused = run_stage(plan, stage, cohort, cache)
    compute = None if reused else cache.meta(key).get("compute_seconds")
    return StageDone(str(key), stage, reused, time.perf_counter() - started, cache.lock_wait_s, compute)


@dataclass
class TrialJob:
    """One trial to run: its plan, where its outputs go, and what to call per finished stage.

    Args:
        trial_id: the name the driver shows and logs (``trial_0003``, ``trial_0001-4``).
        plan: the resolved trial.
        cache_root: the stage cache folder.
        store_root: the trial store folder (``OUTPUT_DIR/trials``).
        threads: torch threads of the worker.
    """

    trial_id: str
    plan: TrialPlan
    cache_root: str
    store_root: str
    threads: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)


def run_trial_job(
    job: TrialJob, cohort: LoadedCohort, on_stage: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run every stage of the trial (reusing cached ones), write the finished trial to the trial
    store, and return its result JSON (metrics, stage events, ``trial_key``).

    ``on_stage``: called with each stage event (``stage``, ``key``, ``reused``, ``seconds``,
    ``waited``) as the stage finishes - progress, or a Tune report."""
    from salient.platform.artifacts import write_trial_artifacts
    from salient.platform.stages.trial import run_trial

    started = time.perf_counter()
    cache = stage_cache(job.cache_root)
    stop_stage, mid_stage = _fail_at()
    waited_before = 0.0

    def report(event: StageEvent) -> None:
        nonlocal waited_before
        waited = cache.lock_wait_s - waited_before
        waited_before = cache.lock_wait_s
        record = {
            "stage": event.stage,
            "key": str(event.key),
            "reused": event.reused,
            "seconds": event.seconds,
            "waited": waited,
        }
        job.events.append(record)
        if on_stage is not None:
            on_stage(record)
        if event.stage == stop_stage and not mid_stage:
            _fail_now(f"after the {stop_stage} stage of {job.trial_id}")

    result = run_trial(job.plan, cohort, cache, report)
    seconds = time.perf_counter() - started
    store = TrialStore(job.store_root)
    store.write(job.plan.trial_key, lambda folder: write_trial_artifacts(folder, job.plan, result, job.events, seconds))
    return {"trial_key": job.plan.trial_key, "metrics": result.metrics, "stages": job.events}
