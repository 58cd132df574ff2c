"""A study as a graph of tasks: each distinct upstream stage output once, then the dose trials.

Why: with one trial per slot, trials that share a generator wait on its lock while holding their
slot, so most slots idle while the first generator trains (issue #16). As a graph, each distinct
generator stage output (per seed size x repeat x generator config - exactly the distinct stage
keys) is one task with that stage's own resource request, started as soon as its inputs exist,
and a dose trial (detector, aggregator, metrics) starts when its pool exists.

Nodes:

* **upstream stages** (:data:`UPSTREAM_STAGES`: MaskVAE3D, diffusion, UCMT, pool): one node per
  distinct output; its dependencies are its input stages. MaskVAE3D, diffusion and UCMT of one
  generator have no inputs, so they run side by side.
* **trials**: one node per trial, depending on its upstream outputs; it runs the trial's own
  stages (every stage not upstream) and its metrics, asking for the largest of their requests.

This module is Ray-free: the same graph is run on Ray (:mod:`salient.platform.ray_graph`) and
simulated by ``platform plan`` (:mod:`salient.platform.schedule_sim`). Two builders: from resolved
trial plans (exact stage keys; what a run executes) and from the study alone (node identity from
the parameters that reach each stage; what ``platform plan`` uses when the cohort is not at hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from salient.platform.stages import DIFFUSION, MASK_VAE, POOL, STAGE_NAMES, UCMT
from salient.platform.study.params import AXES
from salient.platform.study.plan import Plan
from salient.platform.study.schema import ResourceSpec, StageResources, Study

if TYPE_CHECKING:
    from salient.platform.stages.trial import TrialPlan

__all__ = [
    "STAGE_INPUTS",
    "TRIAL",
    "UPSTREAM_STAGES",
    "Node",
    "StudyGraph",
    "graph_from_plans",
    "graph_from_study",
]

#: Stages computed once per distinct output, as their own tasks (the generator and its pool).
UPSTREAM_STAGES = (MASK_VAE, DIFFUSION, UCMT, POOL)
#: The inputs of each upstream stage (the registry's ``Stage.inputs``, repeated here so that this
#: module and ``platform plan`` import no torch); tests check that they agree.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {MASK_VAE: (), DIFFUSION: (), UCMT: (), POOL: (MASK_VAE, DIFFUSION, UCMT)}
#: The stage name of trial nodes.
TRIAL = "trial"


@dataclass(frozen=True)
class Node:
    """One task of the graph.

    Args:
        id: ``STAGE/KEY`` for an upstream stage (its stage-cache key), ``trial/TRIAL_ID`` for a trial.
        stage: the stage name, or :data:`TRIAL`.
        deps: ids of the nodes that must finish first.
        trials: ids of the trials that need this node's output.
        resources: what the task asks for (``workers`` > 1: data-parallel training).
        info: what a cost model needs about the node (the trial plan or parameter values).
    """

    id: str
    stage: str
    deps: tuple[str, ...]
    trials: tuple[str, ...]
    resources: StageResources
    info: Any = None

    @property
    def slots(self) -> int:
        """Workers the task occupies while it runs."""
        return max(1, self.resources.workers)


@dataclass(frozen=True)
class StudyGraph:
    """Nodes in a topological order (dependencies first)."""

    nodes: dict[str, Node]

    def of_stage(self, stage: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.stage == stage]

    @property
    def trials(self) -> list[Node]:
        return self.of_stage(TRIAL)

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for dep in node.deps:
                out[dep].append(node.id)
        return out

    def durations(self, cost: Mapping[str, float]) -> dict[str, float]:
        """Per node: wall seconds from its cost on one worker (a data-parallel node splits it over its workers)."""
        return {n.id: cost[n.id] / n.slots for n in self.nodes.values()}

    def bottom_levels(self, cost: Mapping[str, float]) -> dict[str, float]:
        """Per node: its cost plus the longest chain of costs after it (the list-scheduling priority)."""
        after = self.dependents()
        level: dict[str, float] = {}
        for nid in reversed(list(self.nodes)):
            level[nid] = cost[nid] + max((level[d] for d in after[nid]), default=0.0)
        return level

    def critical_path(self, cost: Mapping[str, float]) -> tuple[float, list[str]]:
        """The longest chain of node costs: ``(length, node ids from first to last)``."""
        level = self.bottom_levels(cost)
        after = self.dependents()
        if not level:
            return 0.0, []
        roots = [n for n in self.nodes.values() if not n.deps]
        current = max(roots, key=lambda n: level[n.id]).id
        path = [current]
        while after[current]:
            current = max(after[current], key=lambda d: level[d])
            path.append(current)
        return level[path[0]], path

    def work(self, cost: Mapping[str, float]) -> float:
        """Worker-seconds of every node (cost x the workers it occupies)."""
        return sum(cost[n.id] * n.slots for n in self.nodes.values())


def _trial_resources(resources: ResourceSpec) -> StageResources:
    """A trial node runs every stage that is not upstream: the largest of their requests."""
    own = [resources.for_stage(s) for s in STAGE_NAMES if s not in UPSTREAM_STAGES]
    return StageResources(cpus=max(r.cpus for r in own), gpus=max(r.gpus for r in own))


def graph_from_plans(plans: Mapping[str, TrialPlan], resources: ResourceSpec) -> StudyGraph:
    """The graph a run executes, from resolved trial plans (by trial id): upstream nodes are the
    distinct stage keys, so two trials share a node exactly when they share the cached output."""
    nodes: dict[str, Node] = {}
    trial_nodes: list[Node] = []
    users: dict[str, list[str]] = {}
    for trial_id, plan in plans.items():
        mine: list[str] = []
        for stage in UPSTREAM_STAGES:
            if stage not in plan.keys:
                continue
            nid = str(plan.keys[stage])
            mine.append(nid)
            users.setdefault(nid, []).append(trial_id)
            if nid not in nodes:
                deps = tuple(str(plan.keys[s]) for s in STAGE_INPUTS[stage] if s in plan.keys)
                nodes[nid] = Node(nid, stage, deps, (), resources.for_stage(stage), plan)
        trial_nodes.append(
            Node(f"{TRIAL}/{trial_id}", TRIAL, tuple(mine), (trial_id,), _trial_resources(resources), plan)
        )
    ordered = {nid: _with_trials(node, users[nid]) for nid, node in nodes.items()}
    ordered.update({n.id: n for n in trial_nodes})
    return StudyGraph(ordered)


def _with_trials(node: Node, trials: Iterable[str]) -> Node:
    return Node(node.id, node.stage, node.deps, tuple(trials), node.resources, node.info)


def _reaches(stage: str, name: str) -> bool:
    """Whether search-space entry ``name`` changes the output of upstream ``stage`` itself."""
    if name == "seed_size":
        return True  # the seed is every generator's training data
    if name in AXES:  # dose, prevalence: downstream of the pool (the pool is sized for the top dose)
        return False
    if name.startswith(f"{DIFFUSION}.guidance."):
        return stage == POOL  # guidance only changes sampling (see diffusion_training_config)
    return name.split(".", 1)[0] == stage


@dataclass(frozen=True)
class ParamNodeInfo:
    """What the structural builder knows about a node: the values that reach it, the repeat, and
    the trial's full values (for a cost model)."""

    repeat: int
    values: dict[str, Any]
    sample: int | None  # which sampled draw, when a sampled entry reaches the node


def graph_from_study(study: Study, plan: Plan) -> StudyGraph:
    """The graph from the study alone (no cohort, no stage keys): an upstream node's identity is
    its stage, the repeat and the values that reach it (its own settings, ``seed_size``, its
    inputs'). A sampled entry that reaches a stage makes that stage distinct per draw."""
    resources = study.resources
    nodes: dict[str, Node] = {}
    users: dict[str, list[str]] = {}
    trial_nodes: list[Node] = []
    sampled = set(plan.sampled)
    for cell in plan.trials:
        for sample in range(plan.n_samples):
            trial_id = cell.trial_id if plan.n_samples == 1 else f"{cell.trial_id}-{sample}"
            values = dict(cell.params)
            dose_can_be_positive = float(values.get("dose", 0.0)) > 0 or "dose" in sampled
            mine: list[str] = []
            ident: dict[str, str] = {}
            if dose_can_be_positive:
                for stage in UPSTREAM_STAGES:
                    own = sorted((k, repr(v)) for k, v in values.items() if _reaches(stage, k))
                    draw = sample if any(_reaches(stage, k) for k in sampled) else None
                    parts = [stage, str(cell.repeat), repr(own), repr(draw)]
                    parts += [ident[s] for s in STAGE_INPUTS[stage]]
                    nid = f"{stage}/" + "|".join(parts)
                    ident[stage] = nid
                    mine.append(nid)
                    users.setdefault(nid, []).append(trial_id)
                    if nid not in nodes:
                        deps = tuple(ident[s] for s in STAGE_INPUTS[stage])
                        info = ParamNodeInfo(cell.repeat, values, draw)
                        nodes[nid] = Node(nid, stage, deps, (), resources.for_stage(stage), info)
            info = ParamNodeInfo(cell.repeat, values, sample)
            trial_nodes.append(
                Node(f"{TRIAL}/{trial_id}", TRIAL, tuple(mine), (trial_id,), _trial_resources(resources), info)
            )
    ordered = {nid: _with_trials(node, users[nid]) for nid, node in nodes.items()}
    ordered.update({n.id: n for n in trial_nodes})
    return StudyGraph(ordered)
