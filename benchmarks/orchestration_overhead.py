"""The demo study with one trial per slot and as a stage graph, one right after the other, and what
the orchestration costs on top of the stages' compute.

Each scheme runs the same study from scratch (a fresh output folder: phantom written and
preprocessed, fresh stage cache and MLflow store) through the real pipeline in its own Python
process (its own local Ray, as a user's ``platform run``), ``resources.scheduling`` set to
``trial`` then ``graph``; everything else identical. Printed:

* wall time of each scheme (whole run, and its trial phase) and the ratio;
* cost by stage (graph run): seconds each stage output took to compute;
* where the graph run's worker-seconds went (slots x trial phase): stage compute; in-task
  overhead (a task's wall time in its worker minus its compute: loading inputs from the cache,
  slicing, metrics, result files); scheduling latency (a task was ready and a slot was free but it
  had not started: Ray's dispatch and worker start-up); idle with nothing ready (the graph's shape:
  the tail, or dose trials waiting for their pool); plus Ray start-up and MLflow logging by the
  driver. The orchestration overhead is Ray start-up + in-task overhead + scheduling latency +
  MLflow logging, as a fraction of stage compute.

    python benchmarks/orchestration_overhead.py                          # the demo study, 2 schemes
    python benchmarks/orchestration_overhead.py --schemes graph --keep out/
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

STAGES = ("mask_vae", "diffusion", "ucmt", "pool", "detector", "aggregator")
REPO = Path(__file__).resolve().parents[1]


def _prepare(study_path: Path, folder: Path, scheme: str) -> Path:
    study = yaml.safe_load(study_path.read_text())
    search_space = study.get("search_space")
    if isinstance(search_space, str):  # keep the reference valid from the temporary folder
        here = study_path.resolve().parent
        found = [c for c in (here / search_space, here.parent / search_space) if c.is_file()]
        study["search_space"] = str(found[0]) if found else search_space
    study["output_dir"] = str(folder / "run")
    study["resources"] = {**study.get("resources", {}), "scheduling": scheme}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _child(study_file: str, out: str) -> None:
    """One scheme, in this process: run the study, write what happened as JSON."""
    from rich.console import Console as Quiet
    from salient.platform.pipeline import run_study

    started = time.perf_counter()
    result = run_study(study_file, console=Quiet(quiet=True))
    wall = time.perf_counter() - started
    record = {
        "wall": wall,
        "failed": result.failed,
        "timings": result.timings,
        "tasks": result.tasks,
        "trials": [
            {"trial": o.trial_id, "stages": o.stages, "trial_seconds": o.trial_seconds, "stage_keys": o.stage_keys}
            for o in result.outcomes
        ],
    }
    Path(out).write_text(json.dumps(record, default=str))


def _run(study_path: Path, scheme: str, keep: Path | None) -> dict[str, Any]:
    folder = (keep / scheme) if keep else Path(tempfile.mkdtemp(prefix=f"salient-bench-{scheme}-"))
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: the benchmark needs a fresh output folder")
    try:
        study_file = _prepare(study_path, folder, scheme)
        out = folder / "result.json"
        subprocess.run([sys.executable, __file__, "--child", str(study_file), str(out)], check=True)
        record: dict[str, Any] = json.loads(out.read_text())
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if record["failed"]:
        raise SystemExit(f"{scheme}: trials failed: {record['failed']}")
    return record


def _compute(record: dict[str, Any]) -> tuple[float, dict[str, float], dict[str, int]]:
    """Stage compute seconds of a run: upstream tasks' compute plus the stages each trial trained."""
    by_stage: dict[str, float] = collections.defaultdict(float)
    n: dict[str, int] = collections.Counter()
    for task in record["tasks"]:
        if task["stage"] != "trial" and not task["reused"]:
            by_stage[task["stage"]] += float(task["compute_seconds"] or 0.0)
            n[task["stage"]] += 1
    for trial in record["trials"]:
        for event in trial["stages"]:
            if not event["reused"]:
                by_stage[event["stage"]] += event["seconds"] - event.get("waited", 0.0)
                n[event["stage"]] += 1
    return sum(by_stage.values()), by_stage, n


def _deps(record: dict[str, Any]) -> dict[str, list[str]]:
    """Dependencies of each task, from the trials' stage keys (pool <- generator; trial <- upstream)."""
    deps: dict[str, list[str]] = {}
    for trial in record["trials"]:
        keys = trial["stage_keys"]
        upstream = [keys[s] for s in ("mask_vae", "diffusion", "ucmt", "pool") if s in keys]
        deps[f"trial/{trial['trial']}"] = upstream
        if "pool" in keys:
            deps[keys["pool"]] = [keys[s] for s in ("mask_vae", "diffusion", "ucmt")]
    return deps


def _latency(record: dict[str, Any], slots: int) -> float:
    """Slot-seconds during which a task was ready, a slot was free, and the task had not started."""
    tasks = record["tasks"]
    end = {t["node"]: t["ended"] for t in tasks}
    phase = record["timings"]["trials_started_at"]
    deps = _deps(record)
    ready = {t["node"]: max([phase, *(end.get(d, phase) for d in deps.get(t["node"], []))]) for t in tasks}
    times = sorted({phase, *ready.values(), *(t["started"] for t in tasks), *end.values()})
    total = 0.0
    for a, b in itertools.pairwise(times):
        mid = (a + b) / 2
        running = sum(t["started"] <= mid < t["ended"] for t in tasks)
        waiting = sum(ready[t["node"]] <= mid < t["started"] for t in tasks)
        total += min(waiting, max(slots - running, 0)) * (b - a)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=str(REPO / "studies" / "dose_response.yaml"))
    p.add_argument("--schemes", nargs="+", default=["trial", "graph"], choices=["trial", "graph"])
    p.add_argument("--keep", help="write outputs under this folder instead of temporary ones (kept)")
    p.add_argument("--child", nargs=2, metavar=("STUDY", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(*args.child)
        return
    console = Console()
    study_path = Path(args.study)
    slots = int(yaml.safe_load(study_path.read_text()).get("resources", {}).get("max_concurrent", 2))
    records = {scheme: _run(study_path, scheme, Path(args.keep) if args.keep else None) for scheme in args.schemes}

    table = Table(title=f"{study_path.name}: wall time by scheme ({slots} slots, one run each, in this order)")
    for col in ("scheme", "whole run", "trial phase", "stage compute", "seconds waited on locks"):
        table.add_column(col, justify="right")
    for scheme, r in records.items():
        waited = sum(e.get("waited", 0.0) for t in r["trials"] for e in t["stages"])
        table.add_row(
            scheme, f"{r['wall']:.1f} s", f"{r['timings']['trials']:.1f} s", f"{_compute(r)[0]:.1f} s", f"{waited:.1f}"
        )
    console.print(table)
    if {"trial", "graph"} <= set(records):
        t, g = records["trial"], records["graph"]
        console.print(
            f"graph / trial-per-slot: whole run {g['wall'] / t['wall']:.2f}, trial phase "
            f"{g['timings']['trials'] / t['timings']['trials']:.2f}"
        )
    if "graph" not in records:
        return
    r = records["graph"]
    compute, by_stage, n = _compute(r)
    table = Table(title="cost by stage (graph run)")
    for col in ("stage", "outputs computed", "seconds", "share"):
        table.add_column(col, justify="right")
    for name in STAGES:
        if n[name]:
            table.add_row(name, str(n[name]), f"{by_stage[name]:.1f}", f"{by_stage[name] / compute:.1%}")
    table.add_row("all", "", f"{compute:.1f}", "100%")
    console.print(table)

    walls = sum(t["ended"] - t["started"] for t in r["tasks"])
    in_task = walls - compute
    latency = _latency(r, slots)
    phase = r["timings"]["trials"]
    idle = slots * phase - walls - latency
    ray_start, mlflow = r["timings"]["ray"], r["timings"]["mlflow"]
    table = Table(title=f"graph run: where the slot-seconds went ({slots} slots x {phase:.1f} s trial phase)")
    for col in ("item", "seconds", "fraction of stage compute"):
        table.add_column(col, justify="right")
    rows = [
        ("stage compute", compute),
        ("in-task overhead (task wall - compute)", in_task),
        ("scheduling latency (ready, slot free, not started)", latency),
        ("idle, nothing ready (the graph's shape)", idle),
        ("Ray start-up (driver)", ray_start),
        ("MLflow logging (driver)", mlflow),
    ]
    for name, sec in rows:
        table.add_row(name, f"{sec:.1f}", f"{sec / compute:.1%}")
    overhead = in_task + latency + ray_start + mlflow
    table.add_row(
        "orchestration overhead (Ray start-up + in-task + latency + MLflow)",
        f"{overhead:.1f}",
        f"{overhead / compute:.1%}",
    )
    console.print(table)


if __name__ == "__main__":
    main()
