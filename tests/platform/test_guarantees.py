"""Rows of the README's guarantees table not covered by test_pipeline_e2e.py (issue #19 item 2).

* Determinism across processes and stage orders: the same trial computed in two fresh Python
  processes, one running the stages in the registry's order and one starting with UCMT and
  diffusion before MaskVAE3D (as the stage graph may, each stage a task of its own), gives
  bit-identical metrics. A stage whose weights depended on what ran before it in the process
  (an unseeded initialisation) fails this.
* MLflow down at start: exit 1, "cannot reach MLflow", nothing trained.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

STUDY: dict[str, Any] = {
    "name": "guarantees",
    "seed": 0,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 32, "n_positive": 12, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0], "seed": 1},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {
        "mask_vae": {"epochs": 3, "volume_size": [8, 16, 16]},  # as test_pipeline_e2e's tiny study
        "diffusion": {"train_steps": 3, "base_channels": 8, "guidance": {"sampling_steps": 2}},
        "ucmt": {"train_steps": 3},
        "detector": {"steps": 4},
        "aggregator": {"epochs": 2},
    },
    # untrained tiny models fail the pool QC; the QC itself is tested in test_generator_signal.py
    "protocol": {"min_pair_dice": 0.0, "placement_hu": None},
    "search_space": {"dose": {"grid": [0.0, 1.0]}, "seed_size": {"grid": [2]}},
    "evaluation": {
        "prevalences": [0.25, 0.5],
        "test_fraction": 0.34,
        "validation_fraction": 0.3,
        "bootstrap": 20,
        "prevalence_draws": 3,
    },
    "resources": {"cpus": 1, "max_concurrent": 2, "retries": 0},
}

#: One trial, its stages computed one by one in the given order, in a fresh process; prints its metrics.
_TRIAL_SCRIPT = """
import json, sys
from salient.platform.cohort.prepare import load_cohort
from salient.platform.stage_cache import StageCache
from salient.platform.stages.trial import plan_trial, run_stage, run_trial
from salient.platform.study import load_study
from salient.platform.torch_runtime import configure_torch

study_file, order, cache_root = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
configure_torch(1)
study = load_study(study_file)
cohort = load_cohort(study.cohort, study.output_dir)
plan = plan_trial(study, {"dose": 1.0, "seed_size": 2}, 0, 1.0, cohort)
cache = StageCache(cache_root)
for name in order:
    run_stage(plan, name, cohort, cache)
result = run_trial(plan, cohort, cache)
print(json.dumps({"metrics": result.metrics, "keys": result.stage_keys, "n_synthetic": result.n_synthetic}))
"""


def _study(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "output_dir": str(tmp_path / "out")}))
    return path


def _trial_in_a_fresh_process(study: Path, order: list[str], cache: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _TRIAL_SCRIPT, str(study), ",".join(order), str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_trial_is_bit_identical_across_processes_and_stage_orders(tmp_path: Path) -> None:
    study = _study(tmp_path)
    registry = ["mask_vae", "diffusion", "ucmt", "pool", "detector", "aggregator"]
    shuffled = ["ucmt", "diffusion", "mask_vae", "pool", "detector", "aggregator"]
    a = _trial_in_a_fresh_process(study, registry, tmp_path / "cache_a")
    b = _trial_in_a_fresh_process(study, shuffled, tmp_path / "cache_b")
    assert a["keys"] == b["keys"]
    assert a["metrics"].keys() == b["metrics"].keys() and a["n_synthetic"] == b["n_synthetic"] > 0
    differ = {
        k: (x, b["metrics"][k])
        for k, x in a["metrics"].items()
        if x != b["metrics"][k] and not (math.isnan(x) and math.isnan(b["metrics"][k]))
    }
    assert not differ, differ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_down_at_start_stops_the_run_before_anything_trains(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "run", str(_study(tmp_path)), "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot reach MLflow at {uri}" in done.stderr and "nothing was trained" in done.stderr
    out = tmp_path / "out"
    assert not list(out.glob("stage_cache/*/*/meta.json")), "a stage was trained"
    assert not (out / "trials").exists() and not (out / "studies").exists()
