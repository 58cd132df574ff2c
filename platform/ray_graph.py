"""Run a grid study on Ray: the stage graph as Ray tasks whose dependencies are ObjectRefs.

Every node of :class:`~salient.platform.graph.StudyGraph` is one Ray task with its stage's own
request (``resources.stages.<stage>``); an upstream task takes the ObjectRefs of its input stages
as arguments, a trial task those of its upstream outputs. The driver releases a task when its
inputs exist and a slot is free, longest remaining chain first
(:class:`~salient.platform.dispatch.ListScheduler`, with the cost model's estimates - the order
``platform plan`` simulates); Ray places, runs, retries and moves data. Released all at once, Ray
started ready tasks first come, first served per kind of task, and the dose-0 trials (no inputs)
took slots before the larger seed size's generator chain, which then ended the run late.

Tasks return small things (which key, reused or not, seconds); outputs go through the stage cache
in the output folder, and the trial's result through the trial store
(:mod:`salient.platform.trial_store`). The cohort is put in the object store once.

Guarantees, all from Ray's own primitives and the platform's files:

* retries: ``max_retries`` (a worker that died, e.g. SIGKILL) and ``retry_exceptions`` (a task
  that raised), both ``resources.retries``; a retried task reuses the stages that finished and
  continues an interrupted stage from its last in-stage checkpoint (stage cache);
* resume: a rerun submits only what is missing - upstream outputs in the stage cache and trials
  in the trial store are done; nothing is unpickled from the output folder;
* concurrency: on a local Ray, ``resources.max_concurrent`` is a custom Ray resource
  (:data:`SLOT_RESOURCE`) that every task takes one of; on a cluster, its resources bound it;
* live progress: tasks send stage events to a zero-CPU Ray actor the driver polls.

``scheduling: trial`` runs the former scheme on the same machinery for comparison: one task per
trial, no dependencies, the largest stage request, stages shared through the cache's lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.cost_model import node_costs
from salient.platform.dispatch import ListScheduler
from salient.platform.graph import TRIAL, Node, StudyGraph, graph_from_plans
from salient.platform.outcome import TrialOutcome
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages.trial import TrialPlan
from salient.platform.study.schema import StageResources, Study
from salient.platform.torch_runtime import configure_torch
from salient.platform.trial_exec import StageDone, TrialJob, run_trial_job, run_upstream_stage
from salient.platform.trial_store import TrialStore
from salient.platform.tune_adapter import SLOT_RESOURCE

__all__ = ["SLOT_RESOURCE", "GraphRun", "run_graph", "warm_workers"]

log = logging.getLogger(__name__)

POLL_S = 0.5


@ray.remote(num_cpus=0)
class _Progress:
    """Where tasks drop stage events; the driver drains them (a zero-CPU actor)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out


def _say(progress: Any, **event: Any) -> None:
    progress.put.remote({**event, "time": time.time(), "pid": os.getpid()})


def _upstream_task(
    plan: TrialPlan,
    stage: str,
    node: str,
    cohort: LoadedCohort,
    cache_root: str,
    resources: StageResources,
    retries: int,
    progress: Any,
    *deps: StageDone,
) -> dict[str, Any]:
    """One upstream stage output (its inputs are finished: ``deps``)."""
    started = time.time()
    _say(progress, kind="start", node=node, stage=stage)
    train = None
    if resources.workers > 1:
        from salient.platform.ray_train import train_data_parallel

        def train(p: TrialPlan, name: str, cache: StageCache) -> None:
            train_data_parallel(p, name, cohort, cache, resources, retries)

    else:
        configure_torch(max(1, int(resources.cpus)))
    done = run_upstream_stage(plan, stage, cohort, cache_root, train)
    _say(progress, kind="stage", node=node, stage=stage, reused=done.reused, seconds=done.seconds)
    return {**done.__dict__, "started": started, "ended": time.time()}


def _trial_task(job: TrialJob, node: str, cohort: LoadedCohort, progress: Any, *deps: Any) -> dict[str, Any]:
    """One trial: its own stages (upstream ones are in the cache by now) and its metrics."""
    started = time.time()
    configure_torch(job.threads)
    _say(progress, kind="start", node=node, stage=TRIAL, trial=job.trial_id)

    def on_stage(event: dict[str, Any]) -> None:
        _say(progress, kind="stage", node=node, trial=job.trial_id, **event)

    result = run_trial_job(job, cohort, on_stage)
    compute = sum(e["seconds"] for e in result["stages"] if not e["reused"])
    return {
        "node": node,
        "stage": TRIAL,
        "trial_key": result["trial_key"],
        "started": started,
        "ended": time.time(),
        "waited": sum(e["waited"] for e in result["stages"]),
        "compute_seconds": compute,
        "reused": False,
    }


_REMOTE_UPSTREAM = ray.remote(_upstream_task)
_REMOTE_TRIAL = ray.remote(_trial_task)


def _warm() -> int:
    """Nothing but the imports a task needs (unpickling this function imports this module, and with
    it torch, MONAI and the stages) and the torch setup; returns the worker's pid."""
    configure_torch(1)
    return os.getpid()


def warm_workers(n: int) -> list[Any]:
    """Start ``n`` local worker processes and import what tasks need, without waiting for them: the
    driver goes on (loading the cohort) and the graph's first tasks find warm workers."""
    opts: dict[str, Any] = {"num_cpus": 1}
    if SLOT_RESOURCE in ray.cluster_resources():
        opts["resources"] = {SLOT_RESOURCE: 1}
    return [ray.remote(_warm).options(**opts).remote() for _ in range(max(1, n))]


@dataclass
class GraphRun:
    """What a graph run did: finished trials, failed trials (with why), and one record per task
    (node, stage, wall-clock start/end in the worker, compute seconds) for the benchmarks."""

    outcomes: list[TrialOutcome] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    submitted: int = 0
    skipped: int = 0  # upstream outputs already in the cache, trials already in the trial store


def _options(res: StageResources, retries: int, slots: bool, name: str) -> dict[str, Any]:
    data_parallel = res.workers > 1  # the task only coordinates; its Ray Train workers hold the resources
    opts: dict[str, Any] = {
        "num_cpus": 0 if data_parallel else res.cpus,
        "num_gpus": 0 if data_parallel else res.gpus,
        "max_retries": retries,
        "retry_exceptions": True,
        "name": name,
    }
    if slots and not data_parallel:
        opts["resources"] = {SLOT_RESOURCE: 1}
    return opts


def _trial_graph(plans: dict[str, TrialPlan], study: Study) -> StudyGraph:
    """``scheduling: trial``: one node per trial, no dependencies, the largest stage request."""
    per_trial = study.resources.per_trial()
    nodes = {
        f"{TRIAL}/{tid}": Node(f"{TRIAL}/{tid}", TRIAL, (), (tid,), per_trial, plan) for tid, plan in plans.items()
    }
    return StudyGraph(nodes)


def _durations(graph: StudyGraph, study: Study, plans: dict[str, TrialPlan], cache: StageCache) -> dict[str, float]:
    """Estimated seconds per node (the stage cache's measured ones where it has them), for the
    release order only."""
    pool_dose = max((float(p.params.get("dose", 0.0)) for p in plans.values()), default=0.0)
    try:
        costs = node_costs(graph, study, pool_dose, cache)
    except Exception as exc:  # an estimate only orders the release; it must not stop a run
        log.warning("no cost estimates (%s: %s); tasks are released by chain length", type(exc).__name__, exc)
        return dict.fromkeys(graph.nodes, 1.0)
    return graph.durations({nid: c.seconds for nid, c in costs.items()})


def run_graph(
    study: Study,
    trials: list[tuple[str, TrialPlan]],
    cohort: LoadedCohort,
    output_dir: Path,
    on_event: Callable[[str, str, dict[str, Any]], None],
    on_done: Callable[[TrialOutcome], None],
    upstream_only: bool = False,
) -> GraphRun:
    """Run the trials (``(trial id, resolved plan)``) as a stage graph on the initialised Ray.

    ``on_event(trial_id, status, info)`` feeds the live view; ``on_done(outcome)`` gets each
    trial as it finishes (also the ones a previous run finished). ``upstream_only``: compute the
    trials' upstream outputs (generators, pools) and no trial (a sampled search's generators)."""
    cache_root = str((output_dir / "stage_cache").resolve())
    store_root = str((output_dir / "trials").resolve())
    cache, store = StageCache(cache_root), TrialStore(store_root)
    run = GraphRun()
    todo: dict[str, TrialPlan] = {}
    for trial_id, plan in trials:
        finished = None if upstream_only else store.outcome(plan.trial_key, trial_id, plan.repeat)
        if finished is not None:  # a previous run finished it: nothing is retrained
            run.skipped += 1
            run.outcomes.append(finished)
            on_event(trial_id, "done", {"cell": trial_id, "restored": True})
            on_done(finished)
        else:
            todo[trial_id] = plan
    if not todo:
        return run
    graph = (
        graph_from_plans(todo, study.resources) if study.resources.scheduling == "graph" else _trial_graph(todo, study)
    )
    resources = ray.cluster_resources()
    slots = SLOT_RESOURCE in resources
    progress = _Progress.remote()  # type: ignore[attr-defined]
    cohort_ref = ray.put(cohort)
    retries = study.resources.retries
    done = {n.id for n in graph.nodes.values() if n.stage != TRIAL and cache.has(StageKey(*n.id.split("/", 1)))}
    if upstream_only:
        done |= {n.id for n in graph.trials}
    run.skipped += sum(n.stage != TRIAL for n in graph.nodes.values() if n.id in done)
    # Tasks are released longest-remaining-chain first, each when its inputs exist and a slot is
    # free (on a cluster without slots, as soon as its inputs exist); Ray places and retries them.
    # scheduling: trial keeps the former scheme's plan order (equal costs tie by graph order)
    by_cost = study.resources.scheduling == "graph"
    scheduler = ListScheduler(
        graph,
        _durations(graph, study, todo, cache) if by_cost else dict.fromkeys(graph.nodes, 1.0),
        int(resources[SLOT_RESOURCE]) if slots else None,
        weight=lambda n: int(slots and n.resources.workers <= 1),
        done=done,
    )
    refs: dict[str, Any] = {}
    waiting: dict[Any, Node] = {}
    starts: dict[str, int] = {}
    while scheduler.pending:
        for node in scheduler.start():
            deps = [refs[d] for d in node.deps if d in refs]
            if node.stage == TRIAL:
                trial_id = node.trials[0]
                job = TrialJob(trial_id, node.info, cache_root, store_root, max(1, int(node.resources.cpus)))
                ref = _REMOTE_TRIAL.options(**_options(node.resources, retries, slots, trial_id)).remote(
                    job, node.id, cohort_ref, progress, *deps
                )
            else:
                ref = _REMOTE_UPSTREAM.options(**_options(node.resources, retries, slots, node.id)).remote(
                    node.info, node.stage, node.id, cohort_ref, cache_root, node.resources, retries, progress, *deps
                )
            refs[node.id] = ref
            waiting[ref] = node
            run.submitted += 1
        if not waiting:  # weights are 0 or 1 and capacity >= 1, so a ready task always fits
            raise RuntimeError("tasks are ready but none fits the free slots")
        ready, _ = ray.wait(list(waiting), num_returns=1, timeout=POLL_S)
        _relay(ray.get(progress.drain.remote()), graph, starts, on_event)
        for ref in ready:
            node = waiting.pop(ref)
            _finished(ref, node, graph, store, run, on_event, on_done)
            scheduler.finish(node.id)
    _relay(ray.get(progress.drain.remote()), graph, starts, on_event)
    ray.kill(progress)
    return run


def _relay(
    events: list[dict[str, Any]],
    graph: StudyGraph,
    starts: dict[str, int],
    on_event: Callable[[str, str, dict[str, Any]], None],
) -> None:
    """Stage events from the tasks -> the live view's trial rows (an upstream event goes to every
    trial that needs the output)."""
    for e in events:
        node = graph.nodes.get(e["node"])
        if node is None:
            continue
        if e["kind"] == "start":
            starts[node.id] = starts.get(node.id, 0) + 1
            status = "retrying" if starts[node.id] > 1 else "running"
            info: dict[str, Any] = {"stage": None}
        else:
            status = "running"
            info = {"stage": e["stage"], "reused": e.get("reused", False), "seconds": e.get("seconds")}
        for trial_id in node.trials:
            if node.stage != TRIAL and e["kind"] == "start":
                continue  # an upstream stage starting: the trial itself is still waiting for its pool
            on_event(trial_id, status, {"cell": trial_id, **info})


def _finished(
    ref: Any,
    node: Node,
    graph: StudyGraph,
    store: TrialStore,
    run: GraphRun,
    on_event: Callable[[str, str, dict[str, Any]], None],
    on_done: Callable[[TrialOutcome], None],
) -> None:
    try:
        record = ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayError) as exc:
        if node.stage == TRIAL:
            reason = _reason(exc)
            run.failed.append(f"{node.trials[0]}: {reason}")
            on_event(node.trials[0], "failed", {"cell": node.trials[0]})
        else:
            log.warning("%s failed after its retries: %s", node.id, _reason(exc))
        return
    run.tasks.append(record)
    if node.stage != TRIAL:
        return
    trial_id = node.trials[0]
    plan: TrialPlan = node.info
    outcome = store.outcome(plan.trial_key, trial_id, plan.repeat)
    if outcome is None:
        run.failed.append(f"{trial_id}: finished but its entry in {store.root} is missing or unreadable")
        on_event(trial_id, "failed", {"cell": trial_id})
        return
    run.outcomes.append(outcome)
    on_event(trial_id, "done", {"cell": trial_id})
    on_done(outcome)


def _reason(exc: BaseException) -> str:
    """One line: what failed (the root cause, not Ray's wrapping)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    line = next((ln for ln in reversed(text) if ln.strip()), type(cause).__name__)
    return f"{type(cause).__name__}: {line[:200]}" if not line.startswith(type(cause).__name__) else line[:200]
