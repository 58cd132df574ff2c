"""A one-trial phantom study run as a real ``platform run`` subprocess, watched while it runs.

Shared by the tests that need a live run (the output-folder lock, Ctrl-C, the plain progress
lines). The study is the smallest that runs every stage a dose-0 trial has (no generator
stages): one trial, 24 phantom subjects, a detector of a few epochs, so a run takes tens of
seconds on 2 cores and leaves time to act while its trial runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml

TINY_RUN: dict[str, Any] = {
    "name": "tiny_run",
    "seed": 0,
    "cohort": {
        "source": "phantom",
        "phantom": {"n_subjects": 40, "n_positive": 16, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0], "seed": 1},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {"preset": "tiny", "detector": {"epochs": 2}, "aggregator": {"epochs": 2}},
    "search_space": {"dose": {"grid": [0.0]}, "seed_size": {"grid": [2]}},
    "sampler": {"name": "grid"},
    "evaluation": {"prevalences": [0.25, 0.5], "bootstrap": 20, "prevalence_draws": 2},
    "resources": {"cpus": 1, "max_concurrent": 1, "retries": 0},
}
#: Seconds a tiny run may take on a busy 2-core machine before a test gives up on it.
RUN_TIMEOUT_S = 400


def write_tiny_study(folder: Path, output_dir: Path, **changes: Any) -> Path:
    """``folder/study.yaml``: :data:`TINY_RUN` writing to ``output_dir``, with top-level ``changes``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**TINY_RUN, "output_dir": str(output_dir), **changes}, sort_keys=False))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the switches a test must not inherit (a cluster test's
    Ray auth mode, a fault-injection hook, a forced terminal), plus ``extra``."""
    drop = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "SALIENT_FAIL_ONCE", "FORCE_COLOR", "TTY_COMPATIBLE")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def start_run(
    study: Path, log_dir: Path, name: str = "run", env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``platform run STUDY`` in its own session (so a test can signal its whole process
    group, as a terminal's Ctrl-C does), stdout and stderr to ``log_dir/NAME.out`` / ``.err``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{name}.out").open("wb") as out, (log_dir / f"{name}.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "salient.platform.cli", "run", str(study)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env or clean_env(),
            start_new_session=True,
        )


def wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = RUN_TIMEOUT_S) -> re.Match[str]:
    """Poll ``path`` (a log the process writes) until ``pattern`` matches; fail if the process
    exits first or time runs out."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if (match := regex.search(text)) is not None:
            return match
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before printing {pattern!r}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in {path} within {timeout:.0f} s")


def runs(uri: str, experiment: str = "tiny_run") -> tuple[list[Any], list[Any]]:
    """``(study runs, trial runs)`` of ``experiment`` in the store at ``uri``."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing at {uri}"
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return parents, children
