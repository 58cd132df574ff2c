"""How long a study takes on N workers, for ``platform plan``: the stage graph vs one trial per slot.

Both are list-scheduling simulations over the same node costs (seconds on one worker,
:mod:`salient.platform.cost_model`):

* **graph** (what ``scheduling: graph`` runs, in the same order: :mod:`salient.platform.dispatch`):
  a node is ready when its dependencies are done; whenever workers are free, the ready node with
  the longest remaining chain (its cost plus the longest path after it) that fits starts. A
  data-parallel node (``workers: W``) occupies W workers for ``cost / W``.
* **trial per slot** (``scheduling: trial``, the former scheme): trials take a free worker in plan
  order and run their stages one after the other on it; a generator stage another trial is
  computing is waited for on that worker (its lock), a finished one is reused. Data-parallel
  training is not available to it (a trial is one process).

The lower bound is ``max(critical path, work / N)``: no schedule on N workers can be faster.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

from salient.platform.dispatch import ListScheduler
from salient.platform.graph import TRIAL, StudyGraph

__all__ = ["Estimate", "estimate", "lower_bound", "simulate_graph", "simulate_trial_per_slot"]


@dataclass(frozen=True)
class Estimate:
    """Makespans (seconds) on ``workers`` workers and their utilisation (work / (workers x makespan))."""

    workers: int
    work: float
    critical_path: float
    graph: float
    trial_per_slot: float

    @property
    def lower_bound(self) -> float:
        return max(self.critical_path, self.work / self.workers)

    def utilisation(self, makespan: float) -> float:
        return self.work / (self.workers * makespan) if makespan > 0 else 1.0


def lower_bound(graph: StudyGraph, cost: Mapping[str, float], workers: int) -> float:
    duration = graph.durations(cost)
    return max(graph.critical_path(duration)[0], sum(cost.values()) / workers)


def simulate_graph(graph: StudyGraph, cost: Mapping[str, float], workers: int) -> float:
    """Makespan of the stage graph on ``workers`` workers, in the run's order
    (:class:`~salient.platform.dispatch.ListScheduler`)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    duration = graph.durations(cost)
    for node in graph.nodes.values():
        if node.slots > workers:
            raise ValueError(f"{node.id} asks for {node.slots} data-parallel workers; only {workers} exist")
    scheduler = ListScheduler(graph, duration, workers, weight=lambda n: n.slots)
    running: list[tuple[float, str]] = []
    now = end = 0.0
    while scheduler.pending:
        for node in scheduler.start():
            heapq.heappush(running, (now + duration[node.id], node.id))
        now, nid = heapq.heappop(running)
        end = max(end, now)
        scheduler.finish(nid)
    return end


def simulate_trial_per_slot(graph: StudyGraph, cost: Mapping[str, float], workers: int) -> float:
    """Makespan of one trial per worker, trials in plan order, sharing upstream stages through
    their locks (see the module docstring). Every stage runs on the trial's one worker."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    slots = [0.0] * workers
    heapq.heapify(slots)
    finished: dict[str, float] = {}  # upstream node -> when the trial that claimed it finishes it
    for trial in graph.trials:
        t = heapq.heappop(slots)
        for dep in _upstream_in_order(graph, trial.id):
            if dep in finished:
                t = max(t, finished[dep])  # reuse it, after waiting for its lock if it is running
            else:
                t += cost[dep]  # this trial computes it (on one worker)
                finished[dep] = t
        t += cost[trial.id]
        heapq.heappush(slots, t)
    return max(slots)


def _upstream_in_order(graph: StudyGraph, trial_id: str) -> list[str]:
    """The upstream nodes a trial needs, in the order its stages run (graph order)."""
    needed: set[str] = set()
    stack = list(graph.nodes[trial_id].deps)
    while stack:
        nid = stack.pop()
        if nid not in needed:
            needed.add(nid)
            stack.extend(graph.nodes[nid].deps)
    return [nid for nid in graph.nodes if nid in needed and graph.nodes[nid].stage != TRIAL]


def estimate(graph: StudyGraph, cost: Mapping[str, float], workers: int) -> Estimate:
    duration = graph.durations(cost)
    return Estimate(
        workers=workers,
        work=sum(cost.values()),
        critical_path=graph.critical_path(duration)[0],
        graph=simulate_graph(graph, cost, workers),
        trial_per_slot=simulate_trial_per_slot(graph, cost, workers),
    )
