"""Orchestration overhead (Ray Tune + MLflow) per trial, and a study's cost split by stage.

Runs a study from scratch into a temporary output folder (fresh stage cache, fresh embedded
MLflow store) through the real pipeline (``run_study``: local Ray, Tune, MLflow), then prints:

* cost by stage: seconds each stage spent training (summed over the trials that trained it;
  a stage reused from the cache inside the same study counts as reused, not as cost);
* per trial: stage compute vs the whole trainable (planning, slicing, result files, report
  and checkpoint packaging): the in-trial overhead;
* per study: cohort loading, Ray Tune (start-up, scheduling, trials), MLflow logging by the
  driver, and the slot-seconds no trial used (``wall x concurrent slots - trial seconds``:
  start-up plus the tail when fewer trials than slots are left).

All numbers are from one run on the machine that printed them; the fractions are the result.

    python benchmarks/orchestration_overhead.py                          # the demo study
    python benchmarks/orchestration_overhead.py --study studies/dose_response.yaml --keep out/
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from salient.platform.pipeline import run_study

STAGES = ("mask_vae", "diffusion", "ucmt", "pool", "detector", "aggregator")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="studies/dose_response.yaml")
    p.add_argument("--keep", help="write outputs here instead of a temporary folder (kept afterwards)")
    args = p.parse_args()
    console = Console()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="salient-bench-"))
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: the benchmark needs a fresh output folder")
    study = yaml.safe_load(Path(args.study).read_text())
    search_space = study.get("search_space")
    if isinstance(search_space, str):  # keep the reference valid from the temporary folder
        here = Path(args.study).resolve().parent
        found = [c for c in (here / search_space, here.parent / search_space) if c.is_file()]
        study["search_space"] = str(found[0]) if found else search_space
    study["output_dir"] = str(out / "run")
    study_file = out / "study.yaml"
    out.mkdir(parents=True, exist_ok=True)
    study_file.write_text(yaml.safe_dump(study))
    try:
        result = run_study(study_file, console=Console(quiet=True))
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if result.failed:
        raise SystemExit(f"trials failed: {result.failed}")
    outcomes = result.outcomes
    slots = int(study.get("resources", {}).get("max_concurrent", 1))

    trained: dict[str, float] = collections.defaultdict(float)
    n_trained: dict[str, int] = collections.Counter()
    n_reused: dict[str, int] = collections.Counter()
    for o in outcomes:
        for s in o.stages:
            if s["reused"]:
                n_reused[s["stage"]] += 1
            else:
                trained[s["stage"]] += s["seconds"]
                n_trained[s["stage"]] += 1
    compute = sum(trained.values())
    table = Table(title=f"cost by stage: {args.study}, {len(outcomes)} trials")
    for col in ("stage", "trained", "reused", "seconds", "share"):
        table.add_column(col, justify="right")
    for name in STAGES:
        if n_trained[name] or n_reused[name]:
            table.add_row(
                name,
                str(n_trained[name]),
                str(n_reused[name]),
                f"{trained[name]:.1f}",
                f"{trained[name] / compute:.1%}",
            )
    table.add_row("all", "", "", f"{compute:.1f}", "100%")
    console.print(table)

    stage_s = [sum(s["seconds"] for s in o.stages) for o in outcomes]
    trial_s = [o.trial_seconds or 0.0 for o in outcomes]
    in_trial = sum(trial_s) - sum(stage_s)
    t = result.timings
    idle = t["tune"] * slots - sum(trial_s)
    table = Table(title=f"orchestration overhead ({slots} concurrent trial slots)")
    for col in ("item", "seconds", "per trial", "fraction of stage compute"):
        table.add_column(col, justify="right")
    n = max(len(outcomes), 1)
    rows = [
        ("stage compute (sum over trials)", sum(stage_s)),
        ("in-trial overhead (trainable - stages)", in_trial),
        ("MLflow logging (driver)", t["mlflow"]),
        ("Ray start-up, scheduling, idle slots", idle),
    ]
    for name, sec in rows:
        table.add_row(name, f"{sec:.1f}", f"{sec / n:.2f}", f"{sec / max(sum(stage_s), 1e-9):.1%}")
    console.print(table)
    console.print(
        f"driver wall {t['total']:.1f} s = cohort {t['cohort']:.1f} s + Ray Tune {t['tune']:.1f} s "
        f"+ the rest (planning, MLflow parent run, summary) {t['total'] - t['cohort'] - t['tune']:.1f} s"
    )


if __name__ == "__main__":
    main()
