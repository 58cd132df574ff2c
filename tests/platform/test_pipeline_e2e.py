"""`platform run` end to end on a tiny phantom study, through real Ray (the stage graph; Tune for
sampled searches) and real MLflow.

Every test runs the CLI in a subprocess (its own Ray instance, like a user's shell) and then
queries MLflow with ``mlflow.search_runs``. Servers the tests need (an ``mlflow server``, a
``ray start --head`` cluster) are started here on 127.0.0.1 and stopped afterwards.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

TINY_STUDY = {
    "name": "tiny_e2e",
    "seed": 0,
    "cohort": {
        "source": "phantom",
        # enough positives for a test, a validation (>= 2 per class: the aggregator cross-fits on
        # it) and a seed set
        "phantom": {"n_subjects": 32, "n_positive": 12, "shape": [48, 48, 12], "spacing": [8.0, 8.0, 10.0], "seed": 1},
        "preprocessing": {"spacing": [8.0, 8.0, 10.0], "hu_window": [-160, 240], "roi": [32, 32, 12]},
    },
    "stages": {
        "preset": "tiny",
        "mask_vae": {"epochs": 3, "volume_size": [8, 16, 16]},
        "diffusion": {"train_steps": 6, "base_channels": 8, "guidance": {"sampling_steps": 3}},
        "ucmt": {"train_steps": 6},
        "detector": {"steps": 6},
        "aggregator": {"epochs": 2},
    },
    # untrained tiny models fail the pool QC; the QC itself is tested in test_generator_signal.py
    "protocol": {"min_pair_dice": 0.0, "placement_hu": None},
    "search_space": {"dose": {"grid": [0.0, 1.0]}, "seed_size": {"grid": [2]}},
    "sampler": {"name": "grid"},
    "evaluation": {
        "prevalences": [0.25, 0.5],
        "test_fraction": 0.34,
        "validation_fraction": 0.3,
        "bootstrap": 20,
        "prevalence_draws": 2,
    },
    "resources": {"cpus": 1, "max_concurrent": 2, "retries": 1},
}
N_TRIALS = 2


def _write_study(tmp_path: Path, **changes: object) -> Path:
    study = {**TINY_STUDY, "output_dir": str(tmp_path / "out"), **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _platform(*args: str, env: dict[str, str] | None = None, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _runs(uri: str, experiment: str = "tiny_e2e") -> tuple[list, list]:
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Block until 127.0.0.1:``port`` accepts connections; fail if ``proc`` exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert proc.poll() is None, f"{what} exited"
            time.sleep(0.5)
    raise AssertionError(f"{what} did not open port {port} within {timeout:.0f} s")


class _Payload:
    """Unpickling this creates ``marker`` (as a planted payload would run a shell command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _plant_pickles(study_file: Path, marker: Path) -> None:
    """Plant pickles where Ray Tune (and the platform before it stopped restoring Tune
    experiments) would read them on a rerun: ``tuner.pkl`` (``Tuner.restore``), the trainable and
    searcher state, and a trial checkpoint, for the study's experiment names (the former
    ``<name>-<key[:8]>`` and one folder per sampled cell)."""
    from salient.platform.pipeline import study_key
    from salient.platform.study import load_study

    study = load_study(study_file)
    base = f"{study.name}-{study_key(study)[:8]}"
    payload = pickle.dumps(_Payload(marker))
    for experiment in (base, f"{base}-trial_0000", f"{base}.trial_0000"):
        folder = study.output_dir / "ray_results" / experiment
        for rel in (
            "tuner.pkl",
            "trainable.pkl",
            "searcher-state-2020-01-01_00-00-00.pkl",
            "trial_0/checkpoint_000000/data.pkl",
        ):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(payload)
    pickle.loads(payload).close()  # the payload works ...
    assert marker.exists()
    marker.unlink()  # ... and the run must never trigger it


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny study run once to completion (shared by the tests that only read it); then
    malicious pickles are planted in its output folder (see :func:`_plant_pickles`), as anyone
    who can write to a shared output folder could, for the next run to find."""
    tmp_path = tmp_path_factory.mktemp("finished")
    study = _write_study(tmp_path)
    first = _platform("run", str(study))
    assert first.returncode == 0, first.stdout + first.stderr
    _plant_pickles(study, tmp_path / "pwned")
    return study, f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"


def test_no_pickle_from_the_output_folder_is_loaded(finished_study: tuple[Path, str]) -> None:
    """#15 item 1: pickles planted in the output folder of a finished study are never unpickled by
    a rerun (it recognises finished trials from the platform's own JSON; the former code called
    ``Tuner.restore`` on ``ray_results/<name>-<key[:8]>``, which unpickles ``tuner.pkl``)."""
    study, _ = finished_study
    marker = study.parent / "pwned"
    assert not marker.exists()
    again = _platform("run", str(study))
    assert again.returncode == 0, again.stdout + again.stderr
    assert not marker.exists(), "a planted pickle was unpickled"


def test_platform_plan_uses_the_measured_stage_costs(finished_study: tuple[Path, str]) -> None:
    """After a run, ``platform plan`` builds the graph from the resolved trials and takes every
    node's cost from the compute seconds the stage cache recorded."""
    study, _ = finished_study
    done = _platform("plan", str(study), "--workers", "1", "2", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "graph from resolved trial plans" in done.stdout
    rows = [ln.split("│") for ln in done.stdout.splitlines() if ln.startswith("│")]
    sources = {r[1].strip(): r[5].strip() for r in rows if len(r) == 8}  # stage -> cost source
    assert set(sources) == {"mask_vae", "diffusion", "ucmt", "pool", "trial (own stages + metrics)"}, rows
    assert set(sources.values()) == {"measured"}, sources


def test_graph_trials_never_wait_on_a_lock(finished_study: tuple[Path, str]) -> None:
    """With the stage graph a trial starts when its generator's outputs exist: it never holds a
    slot waiting on another process's lock (each stage event records the seconds waited)."""
    _, uri = finished_study
    _, children = _runs(uri)
    for c in children:
        events = json.loads(c.data.tags["salient.stages"])
        assert {"stage", "reused", "seconds", "waited"} <= set(events[0])
        assert sum(e["waited"] for e in events) < 0.05, events


def test_trial_per_slot_trials_wait_for_a_shared_generator(tmp_path: Path) -> None:
    """The former scheme (``scheduling: trial``) for contrast, and to show the wait is measured:
    two doses of one generator start together, and one of them waits while the other trains it."""
    study = _write_study(
        tmp_path,
        search_space={"dose": {"grid": [1.0, 2.0]}, "seed_size": {"grid": [2]}},
        resources={"cpus": 1, "max_concurrent": 2, "retries": 1, "scheduling": "trial"},
    )
    result = _platform("run", str(study))
    assert result.returncode == 0, result.stdout + result.stderr
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    waited = sorted(sum(e["waited"] for e in json.loads(c.data.tags["salient.stages"])) for c in children)
    assert len(waited) == 2 and waited[1] > 1.0, waited  # (which one trains it is a race; one waits)


def test_tiny_study_end_to_end_then_rerun_trains_nothing(finished_study: tuple[Path, str]) -> None:
    study, uri = finished_study
    parents, children = _runs(uri)
    assert len(parents) == 1 and len(children) == N_TRIALS
    assert parents[0].info.status == "FINISHED"
    # Queryable the way users query it: mlflow.search_runs into a DataFrame.
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["tiny_e2e"], filter_string="params.dose = '1.0'")
    assert len(df) == 1
    for col in (
        "metrics.auprc_p0.25",
        "metrics.auprc_p0.5",
        "metrics.auroc",
        "metrics.auprc_p0.25_ci_low",
        "params.seed_size",
        "params.detector.lr",  # fixed settings are logged too, spelled like search-space entries
        "params.diffusion.loss.band_weights.3",
        "params.cohort_fingerprint",
        "params.git_revision",
    ):
        assert col in df.columns, col
    # (an AUPRC is in [0, 1] by construction; what the pipeline must get right is the subset)
    # 25% = 1/4: the largest exact subset has k positives and 3k negatives, k = min(pos, neg // 3)
    # (the held-out totals are n_test_pos/neg before the validation split and n_pos/neg after it)
    total = {
        c.rsplit("_", 1)[1]: float(df[c].iloc[0])
        for c in df
        if c in {f"metrics.n_{t}{s}" for t in ("test_", "") for s in ("pos", "neg")}
    }
    n_pos, n_neg = total["pos"], total["neg"]
    k = min(n_pos, n_neg // 3)
    assert k >= 1 and float(df["metrics.n_pos_p0.25"].iloc[0]) == k
    assert float(df["metrics.n_neg_p0.25"].iloc[0]) == 3 * k
    assert float(df["metrics.n_added_slices"].iloc[0]) > 0  # dose 1 trained on synthetic pairs
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(df["run_id"].iloc[0])}
    assert {"trial_result.json", "plan.json", "samples.png", "preview.npz", "split.json"} <= artifacts
    split = json.loads(
        Path(
            mlflow.MlflowClient(uri).download_artifacts(df["run_id"].iloc[0], "split.json", str(study.parent))
        ).read_text()
    )
    assert split["hashed"] and len(split["test"]) > 0 and not any("phantom_" in s for s in split["test"])
    assert any(a.path == "study.resolved.yaml" for a in mlflow.MlflowClient(uri).list_artifacts(parents[0].info.run_id))
    # Second run: every stage is reused, nothing is trained or logged twice.
    second = _platform("run", str(study))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming study run" in second.stdout
    out = second.stdout
    table = out[out.index("stages (distinct") : out.index("stages (distinct") + 800]
    for stage in ("mask_vae", "diffusion", "ucmt", "pool", "detector", "aggregator"):
        line = next(ln for ln in table.splitlines() if f" {stage} " in ln)
        assert line.split("│")[3].strip() == "0", line  # the "train" column
    parents2, children2 = _runs(uri)
    assert [p.info.run_id for p in parents2] == [p.info.run_id for p in parents]
    assert sorted(c.info.run_id for c in children2) == sorted(c.info.run_id for c in children)
    status = _platform("status", str(study))
    assert status.returncode == 0 and f"{N_TRIALS}/{N_TRIALS} trials logged" in status.stdout


def _finished_children(out: Path) -> list:
    """Child runs already logged FINISHED, read while the driver writes. MLflow is opened only once
    a trial is in the trial store: by then the driver made the folder and the store (opening the
    store first would create both, and the run would refuse a folder that is not its own)."""
    if not any(out.glob("trials/*/trial_result.json")):
        return []
    try:
        return [c for c in _runs(f"sqlite:///{out / 'mlflow.db'}")[1] if c.info.status == "FINISHED"]
    except (AssertionError, mlflow.exceptions.MlflowException):
        return []  # no experiment yet


def test_resume_after_sigkill_of_the_driver(tmp_path: Path) -> None:
    """The driver is SIGKILLed (with its local Ray) once a trial has finished and been logged, while
    the other is still to run. The rerun loses nothing, duplicates nothing, and does not retrain the
    finished trial (its trial-store entry and its MLflow run are left as they were)."""
    study = _write_study(tmp_path, resources={"cpus": 1, "max_concurrent": 1, "retries": 1})
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "salient.platform.cli", "run", str(study)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        while not (logged := _finished_children(tmp_path / "out")):
            assert proc.poll() is None, "the study ended before a trial was logged"
            assert time.time() < deadline, "no trial was logged in time"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(logged) < N_TRIALS, "both trials finished before the kill: nothing left to resume"
    first = logged[0]
    entry = tmp_path / "out" / "trials" / first.data.tags["salient.trial_key"] / "trial_result.json"
    before = (entry.read_bytes(), entry.stat().st_mtime_ns)
    resumed = _platform("run", str(study), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    parents, children = _runs(uri)
    assert len(parents) == 1 and len(children) == N_TRIALS  # exactly the planned runs
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["salient.trial_key"] for c in children}) == N_TRIALS
    assert first.info.run_id in {c.info.run_id for c in children}  # logged once, kept
    assert (entry.read_bytes(), entry.stat().st_mtime_ns) == before  # not retrained or rewritten


def test_a_trial_killed_after_a_stage_is_retried_from_its_finished_stages(tmp_path: Path) -> None:
    """The trial's worker process is SIGKILLed right after its detector stage (no exception, no
    cleanup, like the OOM killer). Ray retries the task and the retry takes the finished detector
    from the stage cache instead of training it again."""
    study = _write_study(tmp_path)
    marker = tmp_path / "failed-once"
    result = _platform("run", str(study), env={"SALIENT_FAIL_ONCE": str(marker), "SALIENT_FAIL_MODE": "kill"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.exists(), "the injected failure never fired"
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert len(children) == N_TRIALS and all(c.info.status == "FINISHED" for c in children)
    stages = [json.loads(c.data.tags["salient.stages"]) for c in children]
    # without a failure no detector is ever reused (each trial has its own); the retried one is
    assert any(s["stage"] == "detector" and s["reused"] for trial in stages for s in trial)


def test_a_stage_failing_midway_is_retried_from_its_last_checkpoint(tmp_path: Path) -> None:
    """The diffusion stage (a task of its own in the graph) raises right after its first in-stage
    checkpoint. Ray retries the task, and the retry continues from that checkpoint: the stage
    cache's checkpoint is loaded at a step past 0 (the test hook notes where it resumed)."""
    study = _write_study(tmp_path)
    marker = tmp_path / "failed-once"
    env = {"SALIENT_FAIL_ONCE": str(marker), "SALIENT_FAIL_AT": "diffusion:checkpoint"}
    result = _platform("run", str(study), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = marker.read_text().splitlines()
    assert lines[0].startswith("failed at diffusion:checkpoint"), lines
    resumed = [int(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("resumed diffusion at ")]
    steps = TINY_STUDY["stages"]["diffusion"]["train_steps"]  # type: ignore[index]
    assert resumed and 0 < resumed[0] < steps, lines  # past step 0, before the end
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert len(children) == N_TRIALS and all(c.info.status == "FINISHED" for c in children)


def test_a_failing_trial_without_retries_fails_the_run_clearly(tmp_path: Path) -> None:
    study = _write_study(tmp_path, resources={"cpus": 1, "max_concurrent": 2, "retries": 0})
    marker = tmp_path / "marker"
    result = _platform("run", str(study), env={"SALIENT_FAIL_ONCE": str(marker)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed after their retries" in result.stderr and "rerun the same command" in result.stderr
    failed = marker.read_text().split(" of ", 1)[1].split()[0]  # "failed at after the detector stage of trial_000N"
    assert failed.startswith("trial_") and f"{failed}: RuntimeError: injected failure" in result.stderr
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert len(children) == N_TRIALS - 1  # the other trial is kept
    again = _platform("run", str(study))  # the marker exists now: the rerun completes the study
    assert again.returncode == 0, again.stdout + again.stderr
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert len(children) == N_TRIALS


def _mlflow_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """``mlflow server`` on 127.0.0.1:port over a SQLite store in tmp_path (same store on restart)."""
    return subprocess.Popen(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_study_against_a_real_mlflow_server(tmp_path: Path) -> None:
    port = _free_port()
    server = _mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, server, "mlflow server", timeout=90)
        result = _platform("run", str(_write_study(tmp_path)), "--tracking-uri", uri)
        assert result.returncode == 0, result.stdout + result.stderr
        parents, children = _runs(uri)
        assert len(parents) == 1 and len(children) == N_TRIALS
        assert not (tmp_path / "out" / "mlflow.db").exists()  # nothing went to the embedded store
    finally:
        _stop(server)


def test_mlflow_server_restarted_mid_study_loses_nothing(tmp_path: Path) -> None:
    """The server dies after the study run is created; trials finish while it is down; it comes
    back: every trial is logged once, and the run says what happened."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path, port)
    lines: list[str] = []
    driver: subprocess.Popen[str] | None = None
    try:
        _wait_for_port(port, server, "mlflow server", timeout=90)
        driver = subprocess.Popen(
            [sys.executable, "-m", "salient.platform.cli", "run", str(_write_study(tmp_path)), "--tracking-uri", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "SALIENT_MLFLOW_WAIT_S": "300", "COLUMNS": "200"},
        )
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout or []), daemon=True)
        reader.start()
        deadline = time.time() + 180
        while not (tmp_path / "out" / "stage_cache").exists():  # the study run exists, trials are starting
            assert driver.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.2)
        _stop(server)
        deadline = time.time() + 300
        while not any("MLflow unavailable" in ln for ln in lines):  # a trial finished with no server
            assert driver.poll() is None and time.time() < deadline, "".join(lines)
            time.sleep(0.5)
        server = _mlflow_server(tmp_path, port)  # same store, same port
        _wait_for_port(port, server, "restarted mlflow server", timeout=90)
        assert driver.wait(timeout=400) == 0, "".join(lines)
        reader.join(timeout=10)
        out = "".join(lines)
        assert "MLflow is back" in out and "is kept" in out
        parents, children = _runs(uri)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == N_TRIALS and all(c.info.status == "FINISHED" for c in children)
        assert len({c.data.tags["salient.trial_key"] for c in children}) == N_TRIALS  # none twice
        assert (tmp_path / "out" / "studies" / "tiny_e2e" / "results.csv").is_file()
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        _stop(server)


@pytest.mark.skipif(shutil.which("ray") is None, reason="ray CLI not on PATH")
def test_study_joins_a_running_ray_cluster(tmp_path: Path) -> None:
    port = _free_port()
    # Ray's socket paths must stay under 107 characters: pytest's tmp_path is too deep.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # Token authentication, as on a real cluster: the head and every client share one token.
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # --block keeps `ray start` in the foreground; signalling its process group stops exactly
    # this cluster (`ray stop` would stop every Ray instance on the machine).
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, head, "ray start --head", timeout=120)
        result = _platform("run", str(_write_study(tmp_path)), "--address", f"127.0.0.1:{port}", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
        assert len(children) == N_TRIALS
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_sampled_axes_run_through_optuna_search(tmp_path: Path) -> None:
    # A sampled dose too: the pool is sized for the top of its range, not from grid cells (which
    # once left it empty, so every sampled-dose trial failed).
    study = _write_study(
        tmp_path,
        search_space={
            "dose": {"uniform": [0.5, 1.5]},
            "seed_size": {"grid": [2]},
            "detector.lr": {"loguniform": [1e-4, 1e-2]},
        },
        sampler={"name": "tpe", "n_trials": 2, "seed": 3, "metric": "val_auprc", "mode": "max"},
    )
    result = _platform("run", str(study))
    assert result.returncode == 0, result.stdout + result.stderr
    _plant_pickles(study, tmp_path / "pwned")  # checked after the rerun below
    _, children = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    lrs = sorted(float(c.data.params["detector.lr"]) for c in children)
    assert len(children) == 2 and lrs[0] != lrs[1]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    doses = [float(c.data.params["dose"]) for c in children]
    assert all(0.5 <= d <= 1.5 for d in doses) and doses[0] != doses[1]
    for c in children:  # each trained on round(dose x real lesion slices) pairs of one shared pool
        n_real, n_syn = c.data.metrics["n_real_positive_slices"], c.data.metrics["n_added_slices"]
        assert n_syn == round(float(c.data.params["dose"]) * n_real) > 0
    assert len({c.data.params["stage_key.pool"] for c in children}) == 1
    # The shared generator was computed once, as graph tasks, before the draws: no draw waited.
    assert all(sum(e["waited"] for e in json.loads(c.data.tags["salient.stages"])) < 0.05 for c in children)
    # The Optuna study is persisted, named after the study: optuna's own API opens it ...
    import optuna

    storage = f"sqlite:///{tmp_path / 'out' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name.startswith("tiny_e2e-")
    loaded = optuna.load_study(study_name=summary.study_name, storage=storage)
    complete = [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["detector.lr"] for t in complete) == lrs
    for t in complete:  # the objective Optuna holds is the trial's logged metric
        c = next(c for c in children if float(c.data.params["detector.lr"]) == t.params["detector.lr"])
        assert t.value == c.data.metrics["val_auprc"]
    # ... and a rerun continues it instead of starting over: nothing is drawn or trained again.
    again = _platform("run", str(study))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == 2
    assert not (tmp_path / "pwned").exists(), "a planted pickle was unpickled"
    _, children2 = _runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    assert sorted(c.info.run_id for c in children2) == sorted(c.info.run_id for c in children)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("diffusion.lr", "'val_auprc' is known only when a trial finishes"),
        ("detector.lr", "no sampled entry changes a generator"),
    ],
)
def test_asha_where_it_could_stop_nothing_is_refused(tmp_path: Path, entry: str, message: str) -> None:
    """ASHA needs the objective at a rung before a trial ends; a validation objective (the only kind
    the protocol allows) is known only at its end, and a search that samples no generator setting
    has no generator to stop: both are refused before anything starts."""
    study = _write_study(
        tmp_path,
        search_space={"dose": {"grid": [1.0]}, "seed_size": {"grid": [2]}, entry: {"loguniform": [1e-5, 1e-3]}},
        sampler={"name": "random", "n_trials": 2, "scheduler": "asha", "metric": "val_auprc"},
    )
    for command in ("validate", "run"):  # validate refuses what run would
        result = _platform(command, str(study))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "sampler.scheduler" in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()  # refused before the output folder is marked


def test_run_refuses_what_the_study_file_alone_rules_out(tmp_path: Path) -> None:
    """A guidance-tuning study is not a dose study, and a global batch the data-parallel workers
    do not divide cannot be split: exit 2 from validate and run, before the output folder."""
    (tmp_path / "t").mkdir()
    tuning = _write_study(
        tmp_path / "t",
        kind="guidance_tuning",
        search_space={"diffusion.guidance.s_mask": {"uniform": [1, 2]}},
        sampler={"name": "random", "n_trials": 2},
    )
    done = _platform("run", str(tuning))
    assert done.returncode == 2 and "platform tune-guidance --study" in done.stderr, done.stderr
    assert _platform("validate", str(tuning)).returncode == 0  # validate shows a tuning plan
    stages = {**TINY_STUDY["stages"], "diffusion": {**TINY_STUDY["stages"]["diffusion"], "batch_size": 6}}  # type: ignore[dict-item]
    (tmp_path / "b").mkdir()
    split = _write_study(tmp_path / "b", stages=stages, resources={"stages": {"diffusion": {"workers": 4}}})
    for command in ("validate", "run"):
        done = _platform(command, str(split))
        assert done.returncode == 2 and "workers = 4 must divide stages.diffusion.batch_size = 6" in done.stderr
    assert not (tmp_path / "t" / "out").exists() and not (tmp_path / "b" / "out").exists()


def test_synth_writes_a_checked_cohort_from_a_trial_run(finished_study: tuple[Path, str], tmp_path: Path) -> None:
    import nibabel as nib
    from salient.platform.cohort.check import check_cohort

    _, uri = finished_study
    _, children = _runs(uri)
    dosed = next(c for c in children if float(c.data.params["dose"]) > 0)
    undosed = next(c for c in children if float(c.data.params["dose"]) == 0)
    out = tmp_path / "synthetic"
    done = _platform("synth", "--generator", dosed.info.run_id, "--masks", "3", str(out), "--tracking-uri", uri)
    assert done.returncode == 0, done.stdout + done.stderr
    report = check_cohort(out)
    assert report.ok and report.n_subjects == 3 and report.n_positive == 3, report.problems
    image = nib.load(str(out / "images" / "synth_0000.nii.gz"))
    assert image.shape == (32, 32, 12) and np.allclose(image.header.get_zooms(), (8.0, 8.0, 10.0))
    hu = np.asarray(image.dataobj)
    # back in HU through the preprocessing window: the host's air and bone sit exactly at its ends
    assert hu.min() == -160.0 and hu.max() == 240.0
    provenance = json.loads((out / "synth.json").read_text())
    assert provenance["n_masks"] == 3 and provenance["seed"] == 0
    assert "phantom_" not in (out / "labels.csv").read_text()  # hosts only as hashes

    # The same generator named by its pool folder, same seed: the same voxels.
    parent = mlflow.MlflowClient(uri).get_run(dosed.data.tags["mlflow.parentRunId"])
    pool = Path(parent.data.params["stage_cache"]) / dosed.data.params["stage_key.pool"]
    again = tmp_path / "again"
    assert _platform("synth", "--generator", str(pool), "--masks", "3", str(again)).returncode == 0
    for name in ("images/synth_0002.nii.gz", "masks/synth_0002.nii.gz"):
        assert np.array_equal(nib.load(str(out / name)).get_fdata(), nib.load(str(again / name)).get_fdata())

    # Bad input: named clearly, exit 2, nothing written.
    refused = _platform("synth", "--generator", str(pool), "--masks", "1", str(out))
    assert refused.returncode == 2 and "not empty" in refused.stderr
    no_gen = _platform(
        "synth", "--generator", undosed.info.run_id, "--masks", "1", str(tmp_path / "x"), "--tracking-uri", uri
    )
    assert no_gen.returncode == 2 and "dose 0" in no_gen.stderr and not (tmp_path / "x").exists()
    bogus = _platform("synth", "--generator", "nope", "--masks", "1", str(tmp_path / "y"))
    assert bogus.returncode == 2 and "neither an existing folder nor an MLflow run id" in bogus.stderr


def test_report_of_a_finished_study_is_one_offline_html_file(finished_study: tuple[Path, str], tmp_path: Path) -> None:
    study, _ = finished_study
    out = tmp_path / "report.html"
    done = _platform("report", str(study), "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Downloading artifacts" not in done.stderr  # MLflow's progress bar per artifact read
    html = out.read_text()
    for part in ("Table 1", "<h2>Findings</h2>", "chosen on validation", 'id="figure-dose-response"'):
        assert part in html, part
    assert 'id="figure-gallery"' in html  # the gallery comes from the trials' preview.npz artifacts
    never_ran = _write_study(tmp_path, name="never_ran")
    missing = _platform("report", str(never_ran), "-o", str(tmp_path / "none.html"))
    assert missing.returncode == 2 and "run it first" in missing.stderr and not (tmp_path / "none.html").exists()
    unrun = _platform("report", str(study), "-o", str(tmp_path / "c.html"), "--compare", str(never_ran))
    assert unrun.returncode == 2 and "never_ran" in unrun.stderr and "run it first" in unrun.stderr
    itself = _platform("report", str(study), "-o", str(tmp_path / "c.html"), "--compare", str(study))
    assert itself.returncode == 2 and "already in the report" in itself.stderr
    assert not (tmp_path / "c.html").exists()


def test_report_after_a_code_change_shows_the_newest_run_and_says_so(
    finished_study: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The study key includes the code version; after an upgrade, ``report``/``status`` still find
    the study's run (the newest of that name) and warn that it came from another version."""
    from salient.platform import cli, pipeline

    study, uri = finished_study
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri).search_experiments()], "tags.`salient.kind` = 'study'"
    )
    parent_id = runs[0].info.run_id
    monkeypatch.setattr(pipeline, "CODE_VERSION", "another-code-version")
    out = tmp_path / "after_upgrade.html"
    with caplog.at_level("WARNING", logger="salient.platform"):
        assert cli.main(["report", str(study), "-o", str(out)]) == 0
    html = out.read_text()
    assert out.is_file() and "<h2>Findings</h2>" in html
    assert f"showing its newest run {parent_id}" in caplog.text and "another version" in caplog.text
    assert "made from another version of the study file or of the code" in html  # the reader is told too


def test_report_compare_overlays_another_study(
    finished_study: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--compare``: the other study's curves share the panels. The second finished study is this
    one read again under another name (a second real study would cost minutes of training)."""
    from salient.platform import cli

    study, _ = finished_study
    real = cli._study_view

    def view(path: str, uri: str | None, ui: str | None):  # type: ignore[no-untyped-def]
        found = real(str(study), uri, ui)
        if path == "other.yaml":
            return (SimpleNamespace(name="other_arm"), *found[1:])
        return found

    monkeypatch.setattr(cli, "_study_view", view)
    out = tmp_path / "compare.html"
    assert cli.main(["report", str(study), "-o", str(out), "--compare", "other.yaml"]) == 0
    html = out.read_text()
    assert 'id="figure-compare-dose-response"' in html and 'id="figure-compare-gain"' in html
    assert html.index("figure-compare-dose-response") < html.index('id="figure-dose-response"')
    assert "Compared with: other_arm" in html


def test_tune_guidance_with_a_trained_generator(finished_study: tuple[Path, str], tmp_path: Path) -> None:
    _, uri = finished_study
    _, children = _runs(uri)
    dosed = next(c for c in children if float(c.data.params["dose"]) > 0)
    tuning = {
        "name": "tune_tiny",
        "kind": "guidance_tuning",
        "cohort": TINY_STUDY["cohort"],  # the generator's own cohort: its seed subjects are not held out
        "search_space": {
            "diffusion.guidance.s_mask": {"uniform": [0.5, 3.0]},
            "diffusion.guidance.sampling_steps": {"int": [2, 4]},
        },
        "sampler": {"name": "random", "n_trials": 3, "seed": 0},
        "tuning": {"eval_slices": 6, "first_rung_slices": 2},
        "resources": {"cpus": 1, "max_concurrent": 1},
        "output_dir": str(tmp_path / "out"),
    }
    study = tmp_path / "tune.yaml"
    study.write_text(yaml.safe_dump(tuning))
    profile = tmp_path / "profile.yaml"
    done = _platform(
        "tune-guidance",
        "--study",
        str(study),
        "--generator",
        dosed.info.run_id,
        "--tracking-uri",
        uri,
        "-o",
        str(profile),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "default vs chosen" in done.stdout and "profile ->" in done.stdout
    written = yaml.safe_load(profile.read_text())
    assert written["generator"].endswith(dosed.data.params["stage_key.pool"])
    assert written["held_out_slices"] >= 2 and written["trials"]["total"] == 3
