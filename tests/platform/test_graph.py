"""The stage graph, its schedule estimates and ``platform plan`` (issue #16 items 1 and 3).

The schedule simulations are checked against the independent list-schedule simulation in
/work/shared/evidence/study_schedule_sim.py (numbers quoted in issue #16): the H100 study shape
(2 seed sizes x 11 doses) with one generator task of cost G and dose trials of cost 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from salient.platform.graph import STAGE_INPUTS, TRIAL, UPSTREAM_STAGES, Node, StudyGraph, graph_from_study
from salient.platform.schedule_sim import estimate, simulate_graph, simulate_trial_per_slot
from salient.platform.study import build_plan, load_study
from salient.platform.study.schema import StageResources

REPO = Path(__file__).resolve().parents[2]
ONE = StageResources()


def _h100_shape(generator_cost: float) -> tuple[StudyGraph, dict[str, float]]:
    """2 seed sizes x 11 doses (0..10); dose 0 needs no generator; one generator node per seed."""
    nodes: dict[str, Node] = {}
    cost: dict[str, float] = {}
    for seed in (25, 50):
        nodes[f"pool/{seed}"] = Node(f"pool/{seed}", "pool", (), (), ONE)
        cost[f"pool/{seed}"] = generator_cost
    for seed in (25, 50):
        for dose in range(11):
            nid = f"trial/{seed}-{dose}"
            nodes[nid] = Node(nid, TRIAL, () if dose == 0 else (f"pool/{seed}",), (nid,), ONE)
            cost[nid] = 1.0
    return StudyGraph(nodes), cost


@pytest.mark.parametrize(
    ("g", "today", "graph", "bound"),
    [(5.0, 13.0, 8.0, 6.0), (20.0, 43.0, 23.0, 21.0)],  # study_schedule_sim.py, 8 slots
)
def test_schedules_match_the_independent_simulation(g: float, today: float, graph: float, bound: float) -> None:
    study_graph, cost = _h100_shape(g)
    est = estimate(study_graph, cost, 8)
    assert est.trial_per_slot == today
    assert est.graph == graph
    assert est.lower_bound == bound
    assert est.work == 2 * g + 22


def test_a_data_parallel_node_runs_on_its_workers_in_a_fraction_of_the_time() -> None:
    wide = StageResources(workers=4)
    nodes = {
        "diffusion/a": Node("diffusion/a", "diffusion", (), (), wide),
        "trial/t": Node("trial/t", TRIAL, ("diffusion/a",), ("t",), ONE),
        "trial/u": Node("trial/u", TRIAL, (), ("u",), ONE),
    }
    cost = {"diffusion/a": 40.0, "trial/t": 2.0, "trial/u": 2.0}
    g = StudyGraph(nodes)
    # 4 workers: diffusion (40 / 4 = 10) occupies all of them, then t; u runs first or after.
    assert simulate_graph(g, cost, 4) == 12.0
    # 5 workers: u runs beside the diffusion.
    assert simulate_graph(g, cost, 5) == 12.0
    # one trial per slot cannot train data-parallel: t computes the diffusion itself (40 s).
    assert simulate_trial_per_slot(g, cost, 5) == 42.0
    with pytest.raises(ValueError, match="asks for 4 data-parallel workers; only 2 exist"):
        simulate_graph(g, cost, 2)


def test_stage_inputs_agree_with_the_registry() -> None:
    from salient.platform.stages.registry import STAGE_BY_NAME

    for stage in UPSTREAM_STAGES:
        assert STAGE_INPUTS[stage] == STAGE_BY_NAME[stage].inputs


def _study(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((REPO / "studies" / "dose_response.yaml").read_text())
    data["search_space"] = str(REPO / "search_spaces" / "dose.yaml")
    data.update(changes, output_dir=str(tmp_path / "out"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_graph_from_the_study_file_shares_each_generator_across_its_doses(tmp_path: Path) -> None:
    study = load_study(_study(tmp_path))
    graph = graph_from_study(study, build_plan(study))
    trials = graph.trials
    assert len(trials) == 8  # 4 doses x 2 seed sizes
    for stage in UPSTREAM_STAGES:
        assert len(graph.of_stage(stage)) == 2, stage  # one generator per seed size
    (pool_a, pool_b) = graph.of_stage("pool")
    assert sorted(graph.nodes[d].stage for d in pool_a.deps) == ["diffusion", "mask_vae", "ucmt"]
    undosed = [t for t in trials if not t.deps]
    assert len(undosed) == 2  # dose 0 needs no generator
    assert {len(pool_a.trials), len(pool_b.trials)} == {3}  # doses 1, 2, 4 of each seed size


def test_guidance_values_share_the_diffusion_training_but_not_the_pool(tmp_path: Path) -> None:
    space = {
        "dose": {"grid": [0, 1]},
        "seed_size": {"grid": [6]},
        "diffusion.guidance.s_mask": {"grid": [1.0, 2.0]},
        "ucmt.lr": {"grid": [0.001, 0.002]},
    }
    study = load_study(_study(tmp_path, search_space=space))
    graph = graph_from_study(study, build_plan(study))
    assert len(graph.of_stage("diffusion")) == 1  # guidance only changes sampling
    assert len(graph.of_stage("mask_vae")) == 1
    assert len(graph.of_stage("ucmt")) == 2
    assert len(graph.of_stage("pool")) == 4  # 2 guidance x 2 UCMT teachers


def _plan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "plan", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_platform_plan_estimates_the_h100_study_without_its_data(tmp_path: Path) -> None:
    hours = tmp_path / "hours.yaml"
    hours.write_text("{mask_vae: 0.1, diffusion: 20, ucmt: 0, pool: 0, detector: 0.5, aggregator: 0.5}\n")
    done = _plan_cli(
        str(REPO / "studies" / "dose_response_h100.yaml"), "--workers", "8", "--gpu-hours-per-stage", str(hours)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "graph from the study file" in out and "critical path" in out
    # G = 20.1 h of generator stages (diffusion 20 h is the chain), D = 1 h per trial: the shape
    assert "critical path: diffusion (20.00 h) -> pool (0.00 s) -> trial (1.00 h) = 21.00 h" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("│") and " 8 │" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[0] == "8" and cells[3] == "21.00 h"  # lower bound = critical path here
    assert cells[2].startswith("23.00 h")  # as study_schedule_sim.py's "dag" for G/D = 20
    # One trial per slot: this study lists dose before seed_size, so the grid order interleaves the
    # seed sizes and trials 3 and 4 claim both generators at once (20.1 h each: MaskVAE3D, then
    # diffusion, in one process); 6 slots wait on their locks until 20.1 h, then the 20 dosed trials
    # take 3 rounds: 23.1 h. (study_schedule_sim.py's 43 assumes seed-major order: see above.)
    assert cells[1].startswith("23.10 h")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "must be in [1, 100000]"),
        (["--workers", "8", "--gpu-hours-per-stage", "missing.yaml"], "missing.yaml: file not found"),
        (["--workers", "8", "--gpu-hours-per-stage", "HOURS"], "unknown stage 'generator'"),
        (["--workers", "8", "--gpu-hours-per-stage", "DEEP"], "refused: nested more than 8 levels deep"),
        (["--workers", "8", "--gpu-hours-per-stage", "BOMB"], "refused"),
    ],
)
def test_platform_plan_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    files = {"HOURS": "{generator: 3}\n", "DEEP": "[" * 5000 + "]" * 5000 + "\n"}
    ten = ", ".join(["*{p}"] * 10)
    files["BOMB"] = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{ten.format(p=p)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )  # 10^9 nodes once expanded
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    args = [str(tmp_path / f"{a}.yaml") if a in files else a for a in args]
    done = _plan_cli(str(REPO / "studies" / "dose_response.yaml"), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
