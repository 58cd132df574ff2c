"""`platform run`: a study end to end (plan, show what is cached, run on Ray Tune, log to MLflow).

Resume is the same command run again (``--resume`` only says so explicitly): finished stages
come from the stage cache, finished Tune trials from their checkpoints, and trials already
logged to MLflow are recognised by their key, so nothing is retrained or logged twice.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table
from salient.platform.errors import PlatformError
from salient.platform.hashing import content_hash
from salient.platform.stage_cache import CODE_VERSION, StageCache, StageKey
from salient.platform.study import Plan, Study, build_plan, load_study

__all__ = [
    "StudyRun",
    "TrackingUnavailableError",
    "find_study",
    "output_dir_problem",
    "run_study",
    "study_key",
    "study_status",
    "study_tracker",
]

MIN_FREE_BYTES = 200 * 2**20
#: After the trials, how long to keep retrying MLflow for results it could not take (seconds).
MLFLOW_WAIT_S, MLFLOW_WAIT_ENV = 120.0, "SALIENT_MLFLOW_WAIT_S"
#: MLflow's HTTP client retries a dead server for minutes by default, which would stall the
#: trial loop; the platform buffers and retries itself, so the client gives up sooner.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def torch_version() -> str:
    import torch

    return str(torch.__version__)


def np_version() -> str:
    import numpy

    return str(numpy.__version__)


class TrackingUnavailableError(RuntimeError):
    """Trials finished but MLflow could not take their results (they are kept locally)."""


def study_key(study: Study) -> str:
    """Identity of a study's resolved content (not its file name or output folder) + code version."""
    content = study.model_dump(
        mode="json", exclude={"source_file", "output_dir", "tracking", "ray", "resources", "guidance_profile"}
    )
    return content_hash([content, CODE_VERSION], 16, default=str)


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold a study's outputs (checked before anything trains), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"output_dir {path} is not writable: {exc.strerror or exc}"
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return (
            f"output_dir {path} has only {free / 2**20:.0f} MiB free; at least {MIN_FREE_BYTES / 2**20:.0f} MiB needed"
        )
    return None


@dataclass
class _Progress:
    """The live terminal view: one row per trial, a summary line with counts and an ETA."""

    plan: Plan
    started: float = field(default_factory=time.time)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        row = self.rows.setdefault(tune_id, {"cell": info.get("cell", "?"), "stages": []})
        row["status"] = status
        if info.get("stage") and info["stage"] != "done":
            row["stages"].append(info["stage"] + (" (cached)" if info.get("reused") else ""))

    def render(self) -> Table:
        total = self.plan.n_trials
        done = sum(r["status"] == "done" for r in self.rows.values())
        running = sum(r["status"] in ("running", "retrying") for r in self.rows.values())
        failed = sum(r["status"] == "failed" for r in self.rows.values())
        elapsed = time.time() - self.started
        eta = "?"
        if done:
            eta = f"{elapsed / done * max(total - done, 0):.0f}s"
        table = Table(
            title=f"trials: {done}/{total} done, {running} running, {failed} failed; elapsed {elapsed:.0f}s, ETA {eta}"
        )
        for col in ("trial", "values", "status", "stages"):
            table.add_column(col, overflow="fold")
        cells = {t.trial_id: t for t in self.plan.trials}
        for row in sorted(self.rows.values(), key=lambda r: r["cell"]):
            params = cells[row["cell"]].params if row["cell"] in cells else {}
            table.add_row(
                row["cell"],
                ", ".join(f"{k}={v}" for k, v in params.items()),
                row["status"],
                " > ".join(row["stages"][-6:]),
            )
        return table


@dataclass(frozen=True)
class StudyRun:
    """What ``run_study`` did, for callers and tests."""

    parent_run_id: str
    tracking_uri: str
    outcomes: list[Any]
    failed: list[str]
    trained: list[str]
    reused: list[str]
    #: driver wall seconds: "cohort" (load + preprocess), "tune" (Ray Tune, trials included),
    #: "mlflow" (child-run logging), "total"
    timings: dict[str, float] = field(default_factory=dict)


def study_tracker(study: Study, tracking_uri: str | None) -> Any:
    from salient.platform.tracking import Tracker, default_tracking_uri

    uri = tracking_uri or study.tracking.uri or default_tracking_uri(study.output_dir)
    artifacts = None
    if uri.startswith("sqlite:///") and not (tracking_uri or study.tracking.uri):
        artifacts = (study.output_dir / "mlartifacts").resolve().as_uri()
    return Tracker(uri, study.tracking.experiment or study.name, artifact_location=artifacts)


def _preview(study: Study, plan: Plan, cohort: Any, console: Console) -> tuple[list[str], list[str]]:
    """Print which stages will be reused and which trained; returns (trained, reused) keys."""
    from salient.platform.stages import plan_trial

    if plan.sampled:
        console.print("sampled search space: stage reuse is decided per sampled configuration at run time")
        return [], []
    cache = StageCache(study.output_dir / "stage_cache")
    pool_dose = max([float(t.params.get("dose", 0.0)) for t in plan.trials] + [0.0])
    todo: dict[StageKey, str] = {}
    for cell in plan.trials:
        for name, key in plan_trial(study, cell.params, cell.repeat, pool_dose, cohort).keys.items():
            todo[key] = name
    reused = [k for k in todo if cache.has(k)]
    trained = [k for k in todo if k not in reused]
    table = Table(title="stages (distinct outputs across all trials)")
    for col in ("stage", "reuse from cache", "train"):
        table.add_column(col)
    for name in ("mask_vae", "diffusion", "ucmt", "pool", "detector", "aggregator"):
        r = sum(todo[k] == name for k in reused)
        t = sum(todo[k] == name for k in trained)
        if r or t:
            table.add_row(name, str(r), str(t))
    console.print(table)
    return [str(k) for k in trained], [str(k) for k in reused]


def run_study(
    study_path: str | Path,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> StudyRun:
    """Run (or resume) a study; raises PlatformError for bad input, returns what happened."""
    from salient.platform.cohort.prepare import load_cohort
    from salient.platform.privacy import redact_resolved_study
    from salient.platform.synth import STAGE_CACHE_PARAM
    from salient.platform.tracking import TRACKING_ERRORS, git_revision
    from salient.platform.tune_adapter import TrialOutcome, run_with_tune

    console = console or Console()
    for name, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    started = time.perf_counter()
    timings: dict[str, float] = {"mlflow": 0.0}
    study = load_study(study_path)
    plan = build_plan(study)
    if (problem := output_dir_problem(study.output_dir)) is not None:
        raise PlatformError(problem)
    key = study_key(study)
    console.print(
        f"[bold]study[/] {study.name} ({study_path}): {plan.n_trials} trials, "
        f"{plan.n_evaluations} evaluations; outputs in {study.output_dir.resolve()}"
    )
    t0 = time.perf_counter()
    cohort = load_cohort(study.cohort, study.output_dir, progress=True)  # a bad cohort stops here
    timings["cohort"] = time.perf_counter() - t0
    tracker = study_tracker(study, tracking_uri)
    console.print(f"MLflow tracking URI: {tracker.uri} (experiment {study.tracking.experiment or study.name})")
    trained, reused = _preview(study, plan, cohort, console)
    resolved = study.model_dump(mode="json")
    params = {
        "study_file": str(study_path),
        "study_key": key,
        "code_version": CODE_VERSION,
        "git_revision": git_revision(),
        "cohort_fingerprint": cohort.fingerprint,
        "n_trials": plan.n_trials,
        "sampler": study.sampler.name,
        "preset": study.stages.preset,
        "objective": study.sampler.metric,
        "mode": study.sampler.mode,
        STAGE_CACHE_PARAM: str((study.output_dir / "stage_cache").resolve()),
        # What CPU results are reproducible under (see README "Guarantees"): same code, same
        # library versions, same threads per trial.
        "torch_version": torch_version(),
        "numpy_version": np_version(),
        "threads_per_trial": max(1, int(study.resources.per_trial().cpus)),
    }
    try:  # before any trial: if MLflow is unreachable, stop here with nothing trained
        parent, resumed = tracker.start_study(key, study.name, params, {"salient.kind": "study"})
        with tempfile.TemporaryDirectory() as d:
            resolved_path = Path(d) / "study.resolved.yaml"
            resolved_path.write_text(yaml.safe_dump(redact_resolved_study(resolved, study), sort_keys=False))
            tracker.log_parent_artifact(resolved_path)
        logged = set(tracker.logged_trials())
    except TRACKING_ERRORS as exc:
        raise TrackingUnavailableError(
            f"cannot reach MLflow at {tracker.uri}: {_short(exc)}; nothing was trained"
        ) from exc
    if resume and not resumed:
        console.print("--resume: no earlier run of this study was found; starting it")
    elif resumed:
        console.print(f"resuming study run {parent}: finished stages and trials are reused")
    tune_params = {
        "git_revision": params["git_revision"],
        "cohort_fingerprint": cohort.fingerprint,
        "code_version": CODE_VERSION,
    }

    def log_outcome(o: TrialOutcome) -> None:
        if o.trial_key in logged:
            return
        run_params = {
            **o.params,
            "repeat": o.repeat,
            "config_hash": o.trial_key,
            **tune_params,
            **{f"stage_key.{k}": v for k, v in o.stage_keys.items()},
        }
        stage_tags = {"salient.stages": json.dumps(o.stages)[:5000], "salient.split": o.split or "unknown"}
        artifacts = (
            [Path(o.checkpoint_dir) / n for n in ("trial_result.json", "samples.png", "preview.npz", "split.json")]
            if o.checkpoint_dir
            else []
        )
        t0 = time.perf_counter()
        try:
            tracker.log_trial(o.trial_key, o.trial_id, run_params, o.metrics, stage_tags, artifacts)
        except TRACKING_ERRORS as exc:  # the server is down: keep the result, log it later
            if o.trial_key not in {u.trial_key for u in unlogged}:
                unlogged.append(o)
                console.print(
                    f"[yellow]MLflow unavailable ({_short(exc)}): trial {o.trial_id} finished and is kept; "
                    "it is logged when the server answers again[/]"
                )
            return
        finally:
            timings["mlflow"] += time.perf_counter() - t0
        logged.add(o.trial_key)
        if any(u.trial_key == o.trial_key for u in unlogged):
            unlogged[:] = [u for u in unlogged if u.trial_key != o.trial_key]
            console.print(f"MLflow is back: trial {o.trial_id} logged")

    unlogged: list[TrialOutcome] = []
    progress = _Progress(plan)
    experiment = f"{study.name}-{key[:8]}"
    status = "FAILED"
    try:
        with Live(progress.render(), console=console, refresh_per_second=1, transient=False) as live:

            def on_event(tune_id: str, state: str, info: dict[str, Any]) -> None:
                progress.event(tune_id, state, info)
                live.update(progress.render())

            t0 = time.perf_counter()
            outcomes, failed = run_with_tune(
                study, plan, cohort, study.output_dir, experiment, address or study.ray.address, on_event, log_outcome
            )
            timings["tune"] = time.perf_counter() - t0
        for o in outcomes:  # trials restored as finished by Tune report no completion event
            log_outcome(o)
        _summary(console, study, outcomes)
        results_csv = _write_local_results(study, outcomes)  # kept even if MLflow never comes back
        deadline = time.time() + float(os.environ.get(MLFLOW_WAIT_ENV, MLFLOW_WAIT_S))
        while unlogged and time.time() < deadline:  # the server may come back: keep trying a while
            time.sleep(3)
            for o in list(unlogged):
                log_outcome(o)
        if unlogged:
            raise TrackingUnavailableError(
                f"{len(unlogged)} finished trial(s) could not be logged to MLflow at {tracker.uri}: "
                + ", ".join(o.trial_id for o in unlogged)
                + ". Their results are kept (Tune checkpoints, stage cache, "
                + f"{study.output_dir / 'results.csv'}); rerun the same command when the server is back "
                + "to log them (nothing is retrained)"
            )
        if results_csv is not None:
            tracker.log_parent_artifact(results_csv)
        status = "FINISHED" if not failed else "FAILED"
        timings["total"] = time.perf_counter() - started
        return StudyRun(parent, tracker.uri, outcomes, failed, trained, reused, timings)
    finally:
        try:
            tracker.finish_study(status)
        except TRACKING_ERRORS as exc:
            console.print(f"[yellow]could not mark the study run {status.lower()} in MLflow: {_short(exc)}[/]")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _write_local_results(study: Study, outcomes: list[Any]) -> Path | None:
    """``OUTPUT_DIR/results.csv``: the finished trials' values and metrics, written atomically;
    None when no trial finished."""
    if not outcomes:
        return None
    rows = [{"trial": o.trial_id, "repeat": o.repeat, **o.params, **o.metrics} for o in outcomes]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = study.output_dir / "results.csv"
    tmp = path.with_name(".results.csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def _summary(console: Console, study: Study, outcomes: list[Any]) -> None:
    table = Table(title="results (subject-level, mean over prevalence draws)")
    names = sorted({k for o in outcomes for k in o.params})
    metric_cols = [f"auprc_p{p:g}" for p in study.evaluation.prevalences] + ["auroc"]
    for col in ["trial", *names, *metric_cols]:
        table.add_column(col)
    for o in sorted(outcomes, key=lambda o: o.trial_id):
        table.add_row(
            o.trial_id,
            *[str(o.params.get(n, "-")) for n in names],
            *[f"{o.metrics[m]:.3f}" if m in o.metrics else "-" for m in metric_cols],
        )
    console.print(table)


def study_status(study_path: str | Path, tracking_uri: str | None, console: Console) -> int:
    """Print the study's MLflow child runs (values, status, AUPRC/AUROC) and how many trials are logged."""
    study, tracker, parent = find_study(study_path, tracking_uri)
    if parent is None:
        console.print(f"study {study.name}: not started (no MLflow run at {tracker.uri})")
        return 0
    plan = build_plan(study)
    children = tracker.child_runs()
    table = Table(title=f"study {study.name}: run {parent.info.run_id} ({parent.info.status})")
    names = sorted({k for t in plan.trials for k in t.params})
    for col in ["trial", "run id", *names, "status", "auprc", "auroc"]:
        table.add_column(col)
    for r in sorted(children, key=lambda r: r.info.run_name or ""):
        table.add_row(
            r.info.run_name or "-",
            r.info.run_id,
            *[r.data.params.get(n, "-") for n in names],
            r.info.status,
            f"{r.data.metrics.get('auprc', float('nan')):.3f}",
            f"{r.data.metrics.get('auroc', float('nan')):.3f}",
        )
    console.print(table)
    done = sum(r.info.status == "FINISHED" for r in children)
    console.print(f"{done}/{plan.n_trials} trials logged")
    return 0


def find_study(study_path: str | Path, tracking_uri: str | None) -> tuple[Study, Any, Any | None]:
    """``(study, tracker, its study run or None if the study never started)``; the tracker is
    bound to the study run when there is one."""
    study = load_study(study_path)
    tracker = study_tracker(study, tracking_uri)
    parent = tracker.find_study_run(study_key(study))
    if parent is not None:
        tracker.parent_id = parent.info.run_id
    return study, tracker, parent
