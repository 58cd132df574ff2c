"""The GPU check's CPU variant (``benchmarks/gpu_check.sh --cpu``), so CI runs every part of it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_on_a_cpu_and_writes_its_table(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["small"] is True and results["device"] == "CPU"
    assert [r["size"] for r in results["throughput"]] == [16, 32]
    assert all(r["wavelet"] > 0 and r["pixel"] > 0 for r in results["throughput"])
    step = results["sampling_step"]
    assert step["size"] == 32 and step["structured_cfg_s"] > 0 and step["unguided_s"] > 0
    stages = {r["stage"]: r for r in results["stage_training"]}
    assert set(stages) == {"diffusion", "sampling 8 slices (20 steps)", "ucmt", "detector"}
    assert all(r["param_devices"] == ["cpu"] and r["finite"] and r["s_per_step"] > 0 for r in stages.values())
    assert results["tiny_study"]["exit_code"] == 0 and results["tiny_study"]["gpus"] == 0
    assert (tmp_path / "tiny_study" / "out" / "mlflow.db").is_file()
    table = (tmp_path / "gpu_check.txt").read_text()
    assert table.strip() in done.stdout and "wavelet steps/s" in table and "tiny study, gpus: 0: exit 0" in table
