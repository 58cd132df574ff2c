"""How long the H100 study takes on N GPUs: one trial per slot vs the stage graph vs the lower bound.

Costs from salient.platform.cost_model (FLOPs counted on the real networks at the study's configs,
at a nominal 100 TFLOP/s per GPU), or from a ``--gpu-hours-per-stage`` file; schedules from
salient.platform.schedule_sim. Variants of the shipped study (studies/dose_response_h100.yaml):

* as shipped (every stage on one GPU);
* diffusion data-parallel on 4 GPUs (``resources.stages.diffusion: {workers: 4, gpus: 1}``);
* the issue's assumption, generator chain = 20 x a detector + aggregator (hours file).

    python benchmarks/plan_estimate.py [--workers 8 64]

Nothing trains and the study's data is not read (the manifest may be on another machine).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from salient.platform.cost_model import node_costs
from salient.platform.graph import graph_from_study
from salient.platform.schedule_sim import estimate
from salient.platform.study import build_plan, load_study

REPO = Path(__file__).resolve().parents[1]
#: The issue's shape: a generator chain of 20 units (MaskVAE3D 0.5, diffusion 15, UCMT 3, pool 1.5)
#: against 1 unit of detector + aggregator per dose, in hours.
ISSUE_HOURS = {"mask_vae": 0.5, "diffusion": 15.0, "ucmt": 3.0, "pool": 1.5, "detector": 0.8, "aggregator": 0.2}


def _variant(study: dict, folder: Path, name: str, diffusion_workers: int) -> Path:
    data = {**study, "name": f"{study['name']}_{name}", "output_dir": str(folder / name)}
    if diffusion_workers > 1:
        stages = dict(data["resources"].get("stages", {}))
        stages["diffusion"] = {"cpus": 8, "gpus": 1, "workers": diffusion_workers}
        data["resources"] = {**data["resources"], "stages": stages}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=str(REPO / "studies" / "dose_response_h100.yaml"))
    p.add_argument("--workers", type=int, nargs="+", default=[8, 64])
    args = p.parse_args()
    console = Console()
    raw = yaml.safe_load(Path(args.study).read_text())
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        variants = [
            ("as shipped, cost model", _variant(raw, folder, "shipped", 1), None),
            ("diffusion on 4 GPUs (DDP), cost model", _variant(raw, folder, "ddp4", 4), None),
            ("issue's G/D = 20 (hours file)", _variant(raw, folder, "issue", 1), ISSUE_HOURS),
        ]
        table = Table(title=f"{Path(args.study).name}: makespan (utilisation) on N GPUs")
        for col in ("costs", "N", "trial per slot", "stage graph", "lower bound", "critical path", "work / N"):
            table.add_column(col, justify="right")
        for label, path, hours in variants:
            study = load_study(path, check_data=False)
            plan = build_plan(study)
            graph = graph_from_study(study, plan)
            cost = {k: c.seconds / 3600 for k, c in node_costs(graph, study, plan.pool_dose, None, hours).items()}
            for n in args.workers:
                e = estimate(graph, cost, n)
                table.add_row(
                    label,
                    str(n),
                    f"{e.trial_per_slot:.2f} h ({e.utilisation(e.trial_per_slot):.0%})",
                    f"{e.graph:.2f} h ({e.utilisation(e.graph):.0%})",
                    f"{e.lower_bound:.2f} h",
                    f"{e.critical_path:.2f} h",
                    f"{e.work / n:.2f} h",
                )
        console.print(table)


if __name__ == "__main__":
    main()
