"""``platform plan STUDY.yaml --workers N [N ...] [--gpu-hours-per-stage FILE]``: the study's stage
graph, its critical path, and how long it takes on N workers with the stage graph vs one trial
per slot, before anything trains.

The graph comes from resolved trial plans (exact stage keys, so measured costs can be looked up)
when the study's cohort is already prepared in its output folder; otherwise from the study alone
(:func:`~salient.platform.graph.graph_from_study`; nothing is read or written but the study file).
Costs: :mod:`salient.platform.cost_model`; schedules: :mod:`salient.platform.schedule_sim`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from salient.platform.cost_model import NodeCost, node_costs, read_stage_hours
from salient.platform.graph import TRIAL, StudyGraph, graph_from_plans, graph_from_study
from salient.platform.schedule_sim import Estimate, estimate
from salient.platform.study import Plan, Study, build_plan, load_study

__all__ = ["MAX_WORKERS", "print_plan_estimate", "study_graph"]

log = logging.getLogger(__name__)
MAX_WORKERS = 100_000


def _prepared_cohort(study: Study) -> Any | None:
    """The study's cohort if a run already prepared it (phantom written, every subject in the
    slice cache), loaded read-only; else None."""
    from salient.platform.cohort.prepare import LoadedCohort
    from salient.platform.cohort.preprocess import SliceCache
    from salient.platform.hashing import content_hash

    spec = study.cohort
    if spec.source == "phantom":
        folder = study.output_dir / "cohorts" / f"phantom-{content_hash(spec.phantom.model_dump(mode='json'), 12)}"
        manifest_path = folder / "labels.csv"
        if not (folder / "phantom.json").is_file():
            return None
    elif spec.source == "manifest" and spec.manifest is not None:
        manifest_path = Path(spec.manifest)
    else:
        return None
    from salient.platform.cohort.manifest import read_manifest

    try:
        manifest = read_manifest(manifest_path)
    except Exception:  # a manifest that does not read: estimate from the study alone
        return None
    cache = SliceCache(study.output_dir / "slice_cache", manifest, spec.preprocessing, max_voxels=spec.max_voxels)
    if not all(cache.has(r.subject) for r in manifest.records):
        return None
    subjects = {s.subject: s for s in cache.load_all()}
    return LoadedCohort(manifest.records, subjects, manifest.fingerprint())


def study_graph(study: Study, plan: Plan) -> tuple[StudyGraph, bool]:
    """``(graph, resolved)``: from resolved plans when the cohort is prepared (grid studies),
    otherwise from the study alone."""
    if not plan.sampled:
        cohort = _prepared_cohort(study)
        if cohort is not None:
            from salient.platform.stages.trial import plan_trial

            plans = {t.trial_id: plan_trial(study, t.params, t.repeat, plan.pool_dose, cohort) for t in plan.trials}
            return graph_from_plans(plans, study.resources), True
    return graph_from_study(study, plan), False


def _fmt(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def print_plan_estimate(console: Console, study_path: str, workers: list[int], hours_file: str | None) -> int:
    """Print the graph, the critical path and the makespans; returns the exit code (0)."""
    from salient.platform.stage_cache import StageCache

    study = load_study(study_path, check_data=False)  # the data may be on the cluster, not here
    plan = build_plan(study)
    hours = read_stage_hours(hours_file) if hours_file else {}
    graph, resolved = study_graph(study, plan)
    cache = StageCache(study.output_dir / "stage_cache") if resolved else None
    costs: dict[str, NodeCost] = node_costs(graph, study, plan.pool_dose, cache, hours)
    seconds = {nid: c.seconds for nid, c in costs.items()}
    console.print(
        Text(
            f"study {study.name}: {len(graph.trials)} trials, {len(graph.nodes) - len(graph.trials)} upstream stage "
            "outputs; graph from "
            + ("resolved trial plans (stage keys)" if resolved else "the study file (no cohort read)")
        )
    )
    table = Table(title="stage graph (one task per distinct output)")
    for col in ("stage", "tasks", "resources each", "cost each (1 worker)", "source", "depends on"):
        table.add_column(col)
    by_stage: dict[str, list[str]] = defaultdict(list)
    for node in graph.nodes.values():
        by_stage[node.stage].append(node.id)
    for stage, ids in by_stage.items():
        node = graph.nodes[ids[0]]
        r = node.resources
        res = f"{r.cpus:g} CPU, {r.gpus:g} GPU" + (f" x {r.workers} workers" if r.workers > 1 else "")
        values = [seconds[i] for i in ids]
        span = _fmt(min(values)) if min(values) == max(values) else f"{_fmt(min(values))} - {_fmt(max(values))}"
        deps = sorted({graph.nodes[d].stage for i in ids for d in graph.nodes[i].deps})
        sources = "/".join(sorted({costs[i].source for i in ids}))
        table.add_row(
            stage if stage != TRIAL else "trial (own stages + metrics)",
            str(len(ids)),
            res,
            span,
            sources,
            ", ".join(deps) or "-",
        )
    console.print(table)
    duration = {nid: seconds[nid] / graph.nodes[nid].slots for nid in graph.nodes}
    length, path = graph.critical_path(duration)
    console.print(
        Text(
            "critical path: "
            + " -> ".join(f"{graph.nodes[n].stage} ({_fmt(duration[n])})" for n in path)
            + f" = {_fmt(length)}"
        )
    )
    table = Table(title="estimated makespan and utilisation")
    for col in (
        "workers",
        "trial per slot",
        "stage graph",
        "lower bound max(critical path, work / N)",
        "graph speed-up",
    ):
        table.add_column(col, justify="right")
    for n in workers:
        e: Estimate = estimate(graph, seconds, n)
        table.add_row(
            str(n),
            f"{_fmt(e.trial_per_slot)} ({e.utilisation(e.trial_per_slot):.0%})",
            f"{_fmt(e.graph)} ({e.utilisation(e.graph):.0%})",
            _fmt(e.lower_bound),
            f"{e.trial_per_slot / e.graph:.2f}x" if e.graph > 0 else "-",
        )
    console.print(table)
    console.print(
        Text(
            f"work: {_fmt(sum(seconds.values()))} on one worker; costs: measured (stage cache), file "
            "(--gpu-hours-per-stage) or model (FLOPs, see salient.platform.cost_model); "
            "utilisation = work / (N x makespan)"
        )
    )
    return 0
