"""`platform run` and `platform status`: a study end to end.

Plan, then execute (nnU-Net style): the study is validated once, every grid trial is resolved
into a :class:`~salient.platform.stages.trial.TrialPlan` (configs, split, stage keys) before
anything trains, the reuse preview is printed from those plans, and the study runs on Ray as a
stage graph (:mod:`salient.platform.ray_graph`: each distinct generator output once, dose trials
when their pool exists); sampled searches run on Ray Tune with a persisted Optuna study
(:mod:`salient.platform.tune_adapter`). Each trial saves its resolved plan as an artifact.

Resume is the same command run again (``--resume`` only says so explicitly): finished stages
come from the stage cache, finished trials from the trial store (``OUTPUT_DIR/trials``, JSON the
platform wrote; nothing is unpickled from the output folder), sampled draws from the Optuna
storage, and trials already logged to MLflow are recognised by their key, so nothing is
retrained or logged twice.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from salient.dashboards import names
from salient.platform.hashing import content_hash
from salient.platform.progress import progress_view
from salient.platform.progress_tag import ProgressTag
from salient.platform.run_lock import hold_output_dir
from salient.platform.stage_cache import CODE_VERSION, EVALUATION_VERSION, StageCache, StageKey
from salient.platform.stages import STAGE_NAMES
from salient.platform.study import Plan, Study, build_plan, load_study
from salient.platform.trial_log import TrackingUnavailableError, TrialLog, short_error

__all__ = [
    "StudyRun",
    "TrackingUnavailableError",
    "find_study",
    "other_version_note",
    "run_study",
    "study_key",
    "study_status",
]

#: After the trials, how long to keep retrying MLflow for results it could not take (seconds).
MLFLOW_WAIT_S, MLFLOW_WAIT_ENV = 120.0, "SALIENT_MLFLOW_WAIT_S"
#: MLflow's HTTP client retries a dead server for minutes by default, which would stall the
#: trial loop; the platform buffers and retries itself, so the client gives up sooner.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
#: Ray Tune catches the first Ctrl-C itself, stops the trials and returns them as unfinished, which
#: read as failures ("1 trial(s) failed", a FAILED study run). Without its handler Ctrl-C is a
#: KeyboardInterrupt that marks the study run KILLED; a rerun resumes it like any stopped run.
TUNE_SIGINT_DEFAULTS = {"TUNE_DISABLE_SIGINT_HANDLER": "1"}

log = logging.getLogger(__name__)


def study_key(study: Study) -> str:
    """Identity of a study's resolved content (not its file name or output folder) + code version
    (the stages' and the evaluation's: a trial re-scored by new evaluation code gets a new study
    run, not a second child run beside its old one)."""
    content = study.model_dump(
        mode="json", exclude={"source_file", "output_dir", "tracking", "ray", "resources", "guidance_profile"}
    )
    return content_hash([content, CODE_VERSION, EVALUATION_VERSION], 16, default=str)


@dataclass(frozen=True)
class StudyRun:
    """What ``run_study`` did, for callers and tests."""

    parent_run_id: str
    tracking_uri: str
    outcomes: list[Any]
    failed: list[str]
    trained: list[str]
    reused: list[str]
    #: driver wall seconds: "cohort" (load + preprocess), "ray" (Ray start-up), "trials" (the
    #: graph or the Tune search, trials included), "mlflow" (child-run logging), "total"
    timings: dict[str, float] = field(default_factory=dict)
    #: one record per Ray task of the graph (node, stage, worker wall-clock start/end, compute
    #: seconds, seconds waited on a lock), for the benchmarks
    tasks: list[dict[str, Any]] = field(default_factory=list)
    #: sampled draws ASHA stopped early (not results, not failures)
    stopped_early: int = 0


def _resolve_trials(study: Study, plan: Plan, cohort: Any) -> dict[int, Any]:
    """Every grid trial's resolved plan (sampled trials are resolved when their values are drawn)."""
    from salient.platform.stages.trial import plan_trial

    if plan.sampled:
        return {}
    resolved = {t.index: plan_trial(study, t.params, t.repeat, plan.pool_dose, cohort) for t in plan.trials}
    for trial in resolved.values():
        _check_real_control(study, trial, cohort)
    return resolved


def _check_real_control(study: Study, trial: Any, cohort: Any) -> None:
    """Refuse a ``real`` control that the cohort cannot fill: it adds real lesion slices of training-side
    positives outside the seed, and with fewer of them than the dose asks for, the control would
    differ from the synthetic arm in count as well as in source (raises StudyError, exit 2)."""
    from salient.platform.errors import StudyError
    from salient.platform.stages.base import lesion_slice_count
    from salient.platform.study.schema import REAL_ARM

    if trial.arm != REAL_ARM or trial.n_synthetic == 0:
        return
    available = lesion_slice_count(cohort.subjects, trial.extra_real)
    if available >= trial.n_synthetic:
        return
    dose, seed = trial.params.get("dose"), trial.params.get("seed_size")
    ratio = study.protocol.dose_unit == "ratio"
    most = available / max(trial.n_real_positive, 1) if ratio else float(available)
    raise StudyError.single(
        study.source_file or "study",
        "protocol.control_doses",
        dose,
        f"the real control at dose {dose} with seed size {seed} (repeat {trial.repeat}) adds "
        f"{trial.n_synthetic} real lesion slices, but the training side has {available} outside the seed "
        f"({len(trial.extra_real)} positive subject(s)): at most dose {most:.2f} there. List lower doses in "
        "protocol.control_doses, or use a smaller seed size or a larger cohort",
    )


def _preview(study: Study, resolved: dict[int, Any], console: Console) -> tuple[list[str], list[str]]:
    """Print which stage outputs will be reused and which trained; returns (trained, reused) keys."""
    if not resolved:
        console.print("sampled search space: stage reuse is decided per sampled configuration at run time")
        return [], []
    cache = StageCache(study.output_dir / "stage_cache")
    todo = {key: name for trial in resolved.values() for name, key in trial.keys.items()}
    reused = [k for k in todo if cache.has(k)]
    trained = [k for k in todo if k not in reused]
    n_reused, n_trained = Counter(todo[k] for k in reused), Counter(todo[k] for k in trained)
    table = Table(title="stages (distinct outputs across all trials)")
    for col in ("stage", "reuse from cache", "train"):
        table.add_column(col)
    for name in STAGE_NAMES:
        if n_reused[name] or n_trained[name]:
            table.add_row(name, str(n_reused[name]), str(n_trained[name]))
    console.print(table)
    return [str(k) for k in trained], [str(k) for k in reused]


def _study_params(study: Study, study_path: str | Path, plan: Plan, key: str, cohort: Any) -> dict[str, Any]:
    from salient.platform.study_findings import study_analysis_params
    from salient.platform.tracking import git_revision

    return {
        "study_file": str(study_path),
        names.PARAM_STUDY_KEY: key,
        names.PARAM_CODE_VERSION: CODE_VERSION,
        names.PARAM_GIT: git_revision(),
        names.PARAM_COHORT: cohort.fingerprint,
        "n_trials": plan.n_trials,
        "sampler": study.sampler.name,
        "preset": study.stages.preset,
        # what the significance analysis (dashboards, report) needs to redo itself
        **study_analysis_params(study),
        names.PARAM_STAGE_CACHE: str((study.output_dir / "stage_cache").resolve()),
        # What CPU results are reproducible under (see README "Guarantees"): same code, same
        # library versions, same threads per trial.
        "torch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "threads_per_trial": max(1, int(study.resources.per_trial().cpus)),
    }


def _version(module: str) -> str:
    import importlib

    return str(importlib.import_module(module).__version__)


def _open_tracker(study: Study, tracking_uri: str | None) -> Any:
    """The study's tracker; a tracking server that does not answer stops the run here, before
    anything trains (opening it already asks the server for the experiment)."""
    from salient.platform.tracking import TRACKING_ERRORS, default_tracking_uri, study_tracker

    try:
        return study_tracker(study, tracking_uri)
    except TRACKING_ERRORS as exc:
        uri = tracking_uri or study.tracking.uri or default_tracking_uri(study.output_dir)
        raise TrackingUnavailableError(
            f"cannot reach MLflow at {uri}: {short_error(exc)}; nothing was trained"
        ) from exc


def _start_study_run(tracker: Any, study: Study, key: str, params: dict[str, Any]) -> tuple[str, bool]:
    """Find or create the study run and log the resolved study; nothing has trained yet, so an
    unreachable MLflow stops the run here."""
    from salient.platform.privacy import redact_resolved_study
    from salient.platform.tracking import TRACKING_ERRORS

    try:
        parent, resumed = tracker.start_study(key, study.name, params, {names.TAG_KIND: names.KIND_STUDY})
        with tempfile.TemporaryDirectory() as d:
            resolved_path = Path(d) / names.ARTIFACT_STUDY
            resolved = redact_resolved_study(study.model_dump(mode="json"), study)
            resolved_path.write_text(yaml.safe_dump(resolved, sort_keys=False))
            tracker.log_parent_artifact(resolved_path)
    except TRACKING_ERRORS as exc:
        raise TrackingUnavailableError(
            f"cannot reach MLflow at {tracker.uri}: {short_error(exc)}; nothing was trained"
        ) from exc
    return parent, resumed


def run_study(
    study_path: str | Path,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> StudyRun:
    """Run (or resume) a study; raises PlatformError for bad input, returns what happened."""
    console = console or Console()
    for name, value in {**MLFLOW_HTTP_DEFAULTS, **TUNE_SIGINT_DEFAULTS}.items():
        os.environ.setdefault(name, value)
    started = time.perf_counter()
    study = load_study(study_path)  # the plan's size is counted and capped here, before it is built
    plan = build_plan(study)
    check_runnable(study, plan)
    # One run per output folder, and only a folder that is the platform's: exit 2 before anything is written.
    from salient.platform.tune_adapter import ray_session

    with hold_output_dir(study.output_dir, study.name), ray_session():
        return _run_held(study, plan, study_path, tracking_uri, address, resume, console, started)


def _run_held(
    study: Study,
    plan: Plan,
    study_path: str | Path,
    tracking_uri: str | None,
    address: str | None,
    resume: bool,
    console: Console,
    started: float,
) -> StudyRun:
    """``run_study`` once the output folder is held."""
    from salient.platform.cohort.prepare import load_cohort
    from salient.platform.tracking import TRACKING_ERRORS

    key = study_key(study)
    console.print(
        f"[bold]study[/] {study.name} ({escape(str(study_path))}): {plan.n_trials} trials, "
        f"{plan.n_evaluations} evaluations; outputs in {escape(str(study.output_dir.resolve()))}"
    )
    timings = {"ray": _start_ray_early(study, plan, address)}  # its workers start while the cohort loads
    t0 = time.perf_counter()
    cohort = load_cohort(study.cohort, study.output_dir, progress=True)  # a bad cohort stops here
    timings["cohort"] = time.perf_counter() - t0
    tracker = _open_tracker(study, tracking_uri)
    console.print(Text(f"MLflow tracking URI: {tracker.uri} (experiment {study.tracking.experiment or study.name})"))
    resolved = _resolve_trials(study, plan, cohort)
    _check_data_parallel(study, resolved)
    _check_guidance_profile(study, cohort)
    trained, reused = _preview(study, resolved, console)
    params = _study_params(study, study_path, plan, key, cohort)
    parent, resumed = _start_study_run(tracker, study, key, params)
    if resume and not resumed:
        console.print("--resume: no earlier run of this study was found; starting it")
    elif resumed:
        console.print(f"resuming study run {parent}: finished stages and trials are reused")
    provenance = {k: params[k] for k in (names.PARAM_GIT, names.PARAM_COHORT, names.PARAM_CODE_VERSION)}
    trial_log = TrialLog(
        tracker,
        provenance,
        lambda line: console.print(Text(line, style="yellow")),
        StageCache(study.output_dir / "stage_cache"),
    )
    status = "FAILED"
    progress_tag = ProgressTag(tracker, plan.n_trials)
    try:
        with progress_view(console, plan) as view:  # live table on a terminal, plain lines in a log

            def on_event(tune_id: str, state: str, info: dict[str, Any]) -> None:
                view(tune_id, state, info)
                progress_tag.event(tune_id, state, info)

            execution = _execute(study, plan, resolved, cohort, key, address, on_event, trial_log.log, timings)
        progress_tag.push()
        outcomes, failed = execution.outcomes, execution.failed
        for o in outcomes:  # idempotent: trials logged as they finished are not logged again
            trial_log.log(o)
        if execution.stopped_early:
            console.print(f"{execution.stopped_early} sampled draw(s) stopped early by ASHA (not results)")
        results_csv = _write_local_results(study, outcomes)  # kept even if MLflow never comes back
        _after_trials(study, outcomes, console, tracker)
        _summary(console, study, outcomes)
        trial_log.flush(float(os.environ.get(MLFLOW_WAIT_ENV, MLFLOW_WAIT_S)), results_csv)
        if results_csv is not None:
            tracker.log_parent_artifact(results_csv)
        status = "FINISHED" if not failed else "FAILED"
        timings["mlflow"] = trial_log.seconds
        timings["total"] = time.perf_counter() - started
        return StudyRun(
            parent, tracker.uri, outcomes, failed, trained, reused, timings, execution.tasks, execution.stopped_early
        )
    except KeyboardInterrupt:
        status = "KILLED"  # Ctrl-C stops the study, it does not fail it: the same command resumes it
        raise
    finally:
        try:
            tracker.finish_study(status)
        except TRACKING_ERRORS as exc:
            console.print(
                Text(f"could not mark the study run {status.lower()} in MLflow: {short_error(exc)}", style="yellow")
            )


@dataclass
class _Execution:
    outcomes: list[Any]
    failed: list[str]
    tasks: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: int = 0


def _execute(
    study: Study,
    plan: Plan,
    resolved: dict[int, Any],
    cohort: Any,
    key: str,
    address: str | None,
    on_event: Any,
    on_done: Any,
    timings: dict[str, float],
) -> _Execution:
    """Run the trials on Ray: a grid as a stage graph; a sampled search on Tune, after the
    generators its draws share were computed as graph tasks."""
    from salient.platform.ray_graph import run_graph
    from salient.platform.trial_store import TrialStore
    from salient.platform.tune_adapter import init_ray, run_sampled

    t0 = time.perf_counter()
    store = TrialStore(study.output_dir / "trials")
    if plan.sampled or not all(store.has(t.trial_key) for t in resolved.values()):  # else: nothing to run
        init_ray(address or study.ray.address, study.resources.max_concurrent)
    timings["ray"] = timings.get("ray", 0.0) + time.perf_counter() - t0
    timings["trials_started_at"] = time.time()  # wall clock, comparable with the tasks' records
    t0 = time.perf_counter()
    try:
        if not plan.sampled:
            trials = [(plan.trials[i].trial_id, trial) for i, trial in resolved.items()]
            run = run_graph(study, trials, cohort, study.output_dir, on_event, on_done)
            return _Execution(run.outcomes, run.failed, run.tasks)
        shared = _shared_generators(study, plan, cohort)
        tasks: list[dict[str, Any]] = []
        if shared:
            pre = run_graph(study, shared, cohort, study.output_dir, on_event, on_done, upstream_only=True)
            tasks = pre.tasks
        outcomes, failed, stopped = run_sampled(study, plan, cohort, study.output_dir, key, on_event, on_done)
        return _Execution(outcomes, failed, tasks, stopped)
    finally:
        timings["trials"] = time.perf_counter() - t0


def _start_ray_early(study: Study, plan: Plan, address: str | None) -> float:
    """Start Ray, and on a local Ray its task workers (each imports torch, MONAI and the stages: seconds
    per process), before the cohort is loaded, so that start-up overlaps it instead of delaying the
    first tasks. Not when the trial store already holds as many trials as the plan (a rerun of a
    finished study: Ray is started later if anything is left). Returns the seconds it took."""
    from salient.platform.ray_graph import warm_workers
    from salient.platform.tune_adapter import init_ray

    store = study.output_dir / "trials"
    if store.is_dir() and sum(1 for _ in store.iterdir()) >= plan.n_trials:
        return 0.0
    t0 = time.perf_counter()
    address = address or study.ray.address
    init_ray(address, study.resources.max_concurrent)
    if not address:
        warm_workers(study.resources.max_concurrent)
    return time.perf_counter() - t0


def _shared_generators(study: Study, plan: Plan, cohort: Any) -> list[tuple[str, Any]]:
    """A sampled search's generators that every draw of a cell shares (no sampled entry reaches a
    generator stage), as plans at the pool's dose: computed as graph tasks before the draws."""
    from salient.platform.stages.trial import plan_trial
    from salient.platform.tune_adapter import reaches_generator

    if plan.pool_dose <= 0 or any(reaches_generator(n) for n in plan.sampled):
        return []
    return [
        (t.trial_id, plan_trial(study, {**t.params, "dose": plan.pool_dose}, t.repeat, plan.pool_dose, cohort))
        for t in plan.trials
    ]


def check_runnable(study: Study, plan: Any) -> None:
    """What ``platform run`` refuses from the study file alone (``validate`` says the same), before
    the output folder is touched: a study of another kind, a search ASHA could not stop, a batch
    the data-parallel workers do not divide (the trials' own batch sizes are checked again once
    they are resolved)."""
    from salient.platform.errors import StudyError
    from salient.platform.tune_adapter import check_scheduler

    if study.kind != "dose_response":
        raise StudyError.single(
            study.source_file or "study",
            "kind",
            study.kind,
            "platform run runs dose-response studies; run a guidance_tuning study with "
            "platform tune-guidance --study FILE",
        )
    check_scheduler(study, plan)
    _check_data_parallel(study, {})


def _check_data_parallel(study: Study, resolved: dict[int, Any]) -> None:
    """A data-parallel stage splits its config's batch evenly over its workers: refuse a batch
    the workers do not divide, before anything trains."""
    from salient.platform.errors import PlatformError
    from salient.platform.study.schema import DATA_PARALLEL_STAGES

    for stage in DATA_PARALLEL_STAGES:
        workers = study.resources.for_stage(stage).workers
        sizes = {getattr(t.stages, stage).batch_size for t in resolved.values()} or {
            getattr(study.stages, stage).batch_size
        }
        for batch in sorted(sizes):
            if workers > 1 and batch % workers:
                raise PlatformError(
                    f"{study.source_file}: resources.stages.{stage}.workers = {workers} must divide "
                    f"stages.{stage}.batch_size = {batch} (the global batch is split evenly over the workers)"
                )


def _check_guidance_profile(study: Study, cohort: Any) -> None:
    """A guidance profile tuned on this study's test or validation subjects is refused (exit 2)."""
    if study.guidance_profile is not None:
        from salient.platform.guidance_tuning import check_profile_respects

        check_profile_respects(study, cohort)


def _after_trials(study: Study, outcomes: list[Any], console: Console, tracker: Any) -> None:
    """The study's answer in words (paired significance, chosen on validation, reported on test),
    saved to ``OUTPUT_DIR/studies/NAME/findings.json`` and the study run; and, with
    ``tracking.register_generator``, each trained generator registered in MLflow's model registry."""
    from salient.platform.study_findings import study_findings, write_findings
    from salient.platform.tracking import TRACKING_ERRORS

    try:
        findings = study_findings(study, outcomes)
    except Exception as exc:  # the trials and results.csv stand; `platform report` redoes the analysis
        console.print(Text(f"could not compute the findings: {type(exc).__name__}: {exc}", style="red"))
        findings = []
    if findings:
        console.print("[bold]findings[/] (chosen on validation, reported on test):")
        for f in findings:
            console.print(Text(f"  {f.sentence()}"), soft_wrap=True)
        path = write_findings(study, findings)
        try:
            tracker.log_parent_artifact(path)
        except TRACKING_ERRORS as exc:
            console.print(Text(f"could not log {path.name} to MLflow: {short_error(exc)}", style="yellow"))
    if study.tracking.register_generator:
        try:
            _register_generators(study, outcomes, console, tracker)
        except TRACKING_ERRORS as exc:  # the study's results stand; a rerun registers them (idempotent)
            message = f"could not register the generators: {short_error(exc)}; rerun to retry"
            console.print(Text(message, style="yellow"))


def _register_generators(study: Study, outcomes: list[Any], console: Console, tracker: Any) -> None:
    """Register every distinct generator of the study's trials (idempotent: an already registered
    one returns its version)."""
    from salient.platform.generator_registry import register_generator
    from salient.platform.stages import POOL

    logged = tracker.logged_trials()
    pools: dict[str, str] = {}
    for o in outcomes:
        if POOL in o.stage_keys and o.trial_key in logged:
            pools.setdefault(o.stage_keys[POOL], logged[o.trial_key])
    cache = StageCache(study.output_dir / "stage_cache")
    for pool_key, run_id in pools.items():
        stage, key = pool_key.split("/", 1)
        version = register_generator(
            tracker,
            run_id,
            cache.entry(StageKey(stage, key)),
            study.tracking.register_generator,
            raw_subject_ids=study.tracking.log_subject_ids,
        )
        console.print(Text(f"generator {pool_key} registered as {study.tracking.register_generator} v{version}"))


def _write_local_results(study: Study, outcomes: list[Any]) -> Path | None:
    """``OUTPUT_DIR/studies/NAME/results.csv``: the finished trials' values and metrics, written atomically;
    None when no trial finished."""
    if not outcomes:
        return None
    rows = [o.result_row() for o in outcomes]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    study.results_dir.mkdir(parents=True, exist_ok=True)
    path = study.results_dir / names.ARTIFACT_RESULTS_CSV
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def _summary(console: Console, study: Study, outcomes: list[Any]) -> None:
    table = Table(title="results (subject-level, mean over prevalence draws)")
    params = sorted({k for o in outcomes for k in o.params})
    metric_cols = [names.metric_name("auprc", p) for p in study.evaluation.prevalences] + ["auroc"]
    for col in ["trial", *params, *metric_cols]:
        table.add_column(Text(col))
    for o in sorted(outcomes, key=lambda o: o.trial_id):
        table.add_row(
            o.trial_id,
            *[Text(str(o.params.get(n, "-"))) for n in params],
            *[f"{o.metrics[m]:.3f}" if m in o.metrics else "-" for m in metric_cols],
        )
    console.print(table)


def study_status(study_path: str | Path, tracking_uri: str | None, console: Console) -> int:
    """Print the study's MLflow child runs (values, status, AUPRC/AUROC) and how many trials are logged."""
    study, tracker, parent = find_study(study_path, tracking_uri)
    if parent is None:
        console.print(Text(f"study {study.name}: not started (no MLflow run at {tracker.uri})"))
        return 0
    plan = build_plan(study)
    children = tracker.child_runs()
    table = Table(title=f"study {study.name}: run {parent.info.run_id} ({parent.info.status})")
    params = sorted({k for t in plan.trials for k in t.params})
    for col in ["trial", "run id", *params, "status", "auprc", "auroc"]:
        table.add_column(Text(col))
    for r in sorted(children, key=lambda r: r.info.run_name or ""):
        table.add_row(
            Text(r.info.run_name or "-"),
            r.info.run_id,
            *[Text(r.data.params.get(n, "-")) for n in params],
            r.info.status,
            f"{r.data.metrics.get('auprc', float('nan')):.3f}",
            f"{r.data.metrics.get('auroc', float('nan')):.3f}",
        )
    console.print(table)
    done = sum(r.info.status == "FINISHED" for r in children)
    if (note := other_version_note(study, parent)) is not None:
        console.print(Text(note, style="yellow"))
        console.print(f"{done} trials logged in that run")
        return 0
    console.print(f"{done}/{plan.n_trials} trials logged")
    return 0


def other_version_note(study: Study, parent: Any) -> str | None:
    """What to tell a reader shown ``parent`` for ``study`` when it is not a run of this exact study
    file and code (see :func:`find_study`); None when it is."""
    if parent.data.tags.get(names.TAG_STUDY_KEY) == study_key(study):
        return None
    return (
        f"this is the newest run of study {study.name} (started {_started(parent)}), made from another version of "
        "the study file or of the code; its settings and results may differ from what the file now describes: "
        "rerun the study for results of this version"
    )


def _started(run: Any) -> str:
    """An MLflow run's start, local time to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime((run.info.start_time or 0) / 1000))


def find_study(study_path: str | Path, tracking_uri: str | None) -> tuple[Study, Any, Any | None]:
    """``(study, tracker, its study run or None if the study never started)``; the tracker is
    bound to the study run when there is one."""
    from salient.platform.tracking import study_tracker

    study = load_study(study_path)
    tracker = study_tracker(study, tracking_uri, create=False)  # read-only: status/report never write
    parent = tracker.find_study_run(study_key(study))
    newest = tracker.newest_study_run(study.name) if parent is None else None
    if newest is not None:
        parent = newest
        # Its results are still this study's (a code upgrade or an edited description changes the
        # key): show them, and say they may not be what the file now describes.
        log.warning(
            "study %s: no run of this exact study file and code version; showing its newest run %s "
            "(started %s), made from another version of the file or of the code",
            study.name,
            newest.info.run_id,
            _started(newest),
        )
    if parent is not None:
        tracker.parent_id = parent.info.run_id
    return study, tracker, parent
