"""Which ready tasks of a study graph start next: the longest remaining chain first.

List scheduling over a :class:`~salient.platform.graph.StudyGraph`: a node is ready when its
dependencies are done; whenever capacity is free, ready nodes start in order of their bottom level
(their own duration plus the longest chain of durations after them), each if it fits. The run
(:mod:`salient.platform.ray_graph`) releases its Ray tasks in this order, and ``platform plan``
(:mod:`salient.platform.schedule_sim`) simulates the same order. They differ where the run has
no slots to count: on a cluster every ready task is released at once (Ray places them), and a
data-parallel task holds no slot of the driver's (its workers are Ray Train's), while the plan
counts its W workers.

Why the run needs it: Ray starts ready tasks roughly first come, first served, per kind of task,
so a dose-0 trial (no inputs) took a slot before the generator chain of the larger seed size,
which then finished last (demo: that chain started 148 s late).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping

from salient.platform.graph import Node, StudyGraph

__all__ = ["ListScheduler"]


class ListScheduler:
    """Args:
    graph: the study graph.
    duration: seconds per node id (any consistent unit: only the order matters).
    capacity: workers (or slots) in all; None: unbounded (every ready node starts at once).
    weight: what a node occupies while it runs (0: nothing, e.g. a task whose own workers are
        elsewhere).
    done: nodes that need not run (outputs already there); their dependents count them as done.
    """

    def __init__(
        self,
        graph: StudyGraph,
        duration: Mapping[str, float],
        capacity: int | None,
        weight: Callable[[Node], int],
        done: Iterable[str] = (),
    ):
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1 or None, got {capacity}")
        self.graph, self.weight = graph, weight
        self.free = capacity
        finished = set(done)
        for node in graph.nodes.values():  # else a node would never be released, silently
            unknown = [d for d in node.deps if d not in graph.nodes]
            if unknown:
                raise ValueError(f"{node.id} depends on {unknown}, which are not nodes of the graph")
            if capacity is not None and node.id not in finished and weight(node) > capacity:
                raise ValueError(f"{node.id} occupies {weight(node)}, more than the capacity {capacity}")
        level = graph.bottom_levels(duration)
        position = {nid: i for i, nid in enumerate(graph.nodes)}
        self._key = {nid: (-level[nid], position[nid]) for nid in graph.nodes}
        self._after = graph.dependents()
        self._missing = {
            n.id: sum(d not in finished for d in n.deps) for n in graph.nodes.values() if n.id not in finished
        }
        self._ready = [(*self._key[nid], nid) for nid, m in self._missing.items() if m == 0]
        heapq.heapify(self._ready)
        self.running = 0

    @property
    def pending(self) -> bool:
        """Nodes are still ready to start or running."""
        return bool(self._ready) or self.running > 0

    def start(self) -> list[Node]:
        """The ready nodes to start now, highest priority first, each if it fits in the free capacity."""
        started, skipped = [], []
        while self._ready:
            item = heapq.heappop(self._ready)
            node = self.graph.nodes[item[2]]
            if self.free is not None and self.weight(node) > self.free:
                skipped.append(item)
                continue
            if self.free is not None:
                self.free -= self.weight(node)
            self.running += 1
            started.append(node)
        for item in skipped:
            heapq.heappush(self._ready, item)
        return started

    def finish(self, node_id: str) -> None:
        """A started node ended (done or failed): its capacity is free, its dependents may be ready."""
        node = self.graph.nodes[node_id]
        self.running -= 1
        if self.free is not None:
            self.free += self.weight(node)
        for dep in self._after[node_id]:
            if dep not in self._missing:
                continue
            self._missing[dep] -= 1
            if self._missing[dep] == 0:
                heapq.heappush(self._ready, (*self._key[dep], dep))
