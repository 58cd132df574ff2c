"""Sampled searches on Ray Tune: OptunaSearch (persisted), optional ASHA, and the rung search of
guidance tuning. Grid studies do not use Tune: they run as a stage graph
(:mod:`salient.platform.ray_graph`).

* A dose study with sampled entries runs one Tuner per grid cell, whose OptunaSearch (the study's
  sampler and seed) draws ``sampler.n_trials`` configurations with a define-by-run space, so
  conditional entries (``when``) are honoured. Its Optuna study lives in ``OUTPUT_DIR/optuna.db``
  (:mod:`salient.platform.optuna_store`); a rerun loads it and draws only what is missing.
* Nothing is restored from Tune's own files: ``Tuner.restore`` unpickles ``tuner.pkl`` from the
  output folder, and a planted one ran a shell command (issue #15 item 1). Each run gets a fresh
  experiment folder that is written, never read; finished trials are recognised from the trial
  store (JSON the platform wrote) and the Optuna storage.
* Generator stages: when no sampled entry reaches a generator stage, the generators of every
  cell are computed first as graph tasks (each once, with its own resources, side by side), so
  the Tune trials find them in the stage cache and hold no slot waiting on a lock. A sampled
  entry that does reach one (e.g. ``diffusion.lr``) gives every draw its own generator, trained
  inside its Tune trial (one request: the largest of its stages).
* ``sampler.scheduler: asha`` stops poor draws early. A dose trial reports its objective at two
  rungs - after its pool, and when it finishes - so ASHA needs an objective known at the pool
  (:data:`RUNG_METRIC_PREFIXES`) and sampled generator settings; anything else is refused
  before training (:func:`check_scheduler`). The protocol allows only validation objectives
  (``val_*``), which are known when a trial ends, so today every dose study asking for ASHA is
  refused; a validation metric computed at the pool rung, added to :data:`RUNG_METRIC_PREFIXES`,
  makes ASHA available without other changes.
* Retries: ``FailureConfig(max_failures=resources.retries)``; a retried trial reuses finished
  stages and in-stage checkpoints from the stage cache. Actors are reused between trials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.errors import StudyError
from salient.platform.hashing import content_hash
from salient.platform.optuna_store import optuna_study_name, settle_orphans, storage, storage_url, trial_by_values
from salient.platform.outcome import TrialOutcome
from salient.platform.stages import GENERATOR_STAGES, POOL
from salient.platform.study.plan import Plan, TrialSpec
from salient.platform.study.schema import ParamSpec, Study
from salient.platform.torch_runtime import configure_torch
from salient.platform.trial_exec import TrialJob, run_trial_job
from salient.platform.trial_store import TrialStore

__all__ = [
    "RUNG_METRIC_PREFIXES",
    "SLOT_RESOURCE",
    "TrialOutcome",
    "check_scheduler",
    "init_ray",
    "make_sampler",
    "ray_session",
    "run_rung_search",
    "run_sampled",
]

log = logging.getLogger(__name__)

#: Metrics a dose trial knows once its pool exists (reported at ASHA's first rung): the pool's
#: realism, named as in the trial's metrics (none of them is a validation metric, which the
#: protocol requires of an objective). A validation metric computed at the pool joins by its
#: prefix here.
RUNG_METRIC_PREFIXES = ("pool_", "synthetic_", "real_")
#: Custom Ray resource a local Ray is started with (``resources.max_concurrent`` of them); each
#: graph task takes one, so at most that many run at once (salient.platform.ray_graph).
SLOT_RESOURCE = "salient_slot"


def make_sampler(name: str, seed: int) -> Any:
    """Optuna sampler by the study's sampler name (grid is expanded in Python, not here)."""
    import optuna

    factories: dict[str, Callable[[], Any]] = {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    if name not in factories:
        raise ValueError(f"sampler must be one of {sorted(factories)}, got {name!r}")
    return factories[name]()


def _suggest(trial: Any, name: str, spec: ParamSpec) -> Any:
    if spec.choice is not None:
        return trial.suggest_categorical(name, list(spec.choice))
    if spec.uniform is not None:
        return trial.suggest_float(name, *spec.uniform, step=spec.step)
    if spec.loguniform is not None:
        return trial.suggest_float(name, *spec.loguniform, log=True)
    if spec.int is not None:
        return trial.suggest_int(name, *spec.int, step=int(spec.step or 1))
    raise ValueError(f"{name}: grid entries are expanded in Python, not sampled")


class _DefineByRun:
    """Optuna define-by-run space of one grid cell (a class, not a closure: Tune pickles it)."""

    def __init__(self, cell: TrialSpec, sampled: Mapping[str, ParamSpec]):
        self.cell, self.sampled = cell, dict(sampled)

    def __call__(self, trial: Any) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.cell.params)
        for name, spec in self.sampled.items():  # in file order, so conditions see earlier values
            if all(values.get(c) in allowed for c, allowed in (spec.when or {}).items()):
                values[name] = _suggest(trial, name, spec)
        return {"trial_index": self.cell.index}


#: The job's workers: a task that asks for no GPU must not see one. Ray 2.60 leaves
#: CUDA_VISIBLE_DEVICES alone for a task with ``num_gpus=0``, so its stage would pick the node's
#: GPU (``stage_device``) outside Ray's accounting and could run another task's GPU out of memory;
#: this switch makes Ray set it to "" for such tasks, as it did before.
WORKER_ENV = {"env_vars": {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}}


@contextmanager
def ray_session() -> Iterator[None]:
    """Stop on the way out the Ray that the block started (none that was running before it): a
    library call that starts a local Ray must not leave it to the caller's next ``ray.init``."""
    running = ray.is_initialized()
    try:
        yield
    finally:
        if not running and ray.is_initialized():
            ray.shutdown()


def init_ray(address: str | None, slots: int | None = None) -> None:
    """Join ``address`` or start a local Ray with this machine's CPUs (and ``slots`` of
    :data:`SLOT_RESOURCE`, the local cap on tasks running at once)."""
    _init_ray(address, slots)


def _init_ray(address: str | None, slots: int | None = None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress view replaces Tune's
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=WORKER_ENV)
    else:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            resources={SLOT_RESOURCE: slots} if slots else None,
            runtime_env=WORKER_ENV,
        )


def _fresh_experiment(output_dir: Path, name: str) -> tuple[str, str]:
    """``(storage path, experiment name)`` of a Tune experiment folder no run has used: Tune writes
    there and nothing reads it back (no ``Tuner.restore``)."""
    storage_path = str((output_dir / "ray_results").resolve())
    return storage_path, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


# -- dose studies with sampled entries ---------------------------------------------------------


def reaches_generator(name: str) -> bool:
    """Whether a search-space entry changes a generator (so each draw needs its own)."""
    return name == "seed_size" or name.split(".", 1)[0] in (*GENERATOR_STAGES, POOL)


def check_scheduler(study: Study, plan: Plan) -> None:
    """Refuse ``sampler.scheduler: asha`` where it could stop nothing (raises StudyError)."""
    if getattr(study.sampler, "scheduler", "fifo") != "asha":
        return
    file, key, metric = study.source_file or "study", "sampler.scheduler", study.sampler.metric
    if not plan.sampled:
        raise StudyError.single(
            file, key, "asha", "asha needs sampled search-space entries (a grid has nothing to stop)"
        )
    if not any(reaches_generator(n) for n in plan.sampled):
        raise StudyError.single(
            file,
            key,
            "asha",
            "asha stops poor generators after their pool, but no sampled entry changes a generator "
            f"(sampled: {sorted(plan.sampled)}); sample a mask_vae/diffusion/ucmt setting or use scheduler: fifo",
        )
    if not metric.startswith(RUNG_METRIC_PREFIXES):
        raise StudyError.single(
            file,
            key,
            "asha",
            "asha needs an objective reported at every rung (after the pool and at the end); "
            f"sampler.metric = {metric!r} is known only when a trial finishes (one rung: ASHA could stop "
            f"nothing); metrics known at the pool: {', '.join(p + '...' for p in RUNG_METRIC_PREFIXES)}. "
            "Use scheduler: fifo",
        )


def _pool_metrics(meta: Mapping[str, Any]) -> dict[str, float]:
    """The pool's realism as the trial names it (its first ASHA rung)."""
    return {
        k if k.startswith(("synthetic_", "real_")) else f"pool_{k}": float(v)
        for k, v in meta.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("compute_seconds", "workers")
    }


def _sampled_trainable(
    config: dict[str, Any],
    study: Study,
    plan: Plan,
    cohort: LoadedCohort,
    cache_root: str,
    store_root: str,
    threads: int,
    asha: bool,
) -> None:
    """One sampled trial: plan it from its drawn values, run it, write it to the trial store."""
    from salient.platform.stage_cache import StageCache
    from salient.platform.stages.trial import plan_trial

    configure_torch(threads)
    cell = plan.trials[int(config["trial_index"])]
    values = {k: v for k, v in config.items() if k != "trial_index"}
    trial_plan = plan_trial(study, {**cell.params, **values}, cell.repeat, plan.pool_dose, cohort)
    metric = study.sampler.metric

    def on_stage(event: dict[str, Any]) -> None:
        if not asha:
            tune.report(
                {metric: float("nan"), "stage": event["stage"], "reused": event["reused"], "seconds": event["seconds"]}
            )
        elif event["stage"] == POOL:  # ASHA's first rung: the objective is known once the pool exists
            meta = StageCache(cache_root).meta(trial_plan.keys[POOL])
            tune.report({**_pool_metrics(meta), "stage": POOL, "reused": event["reused"], "seconds": event["seconds"]})

    result = run_trial_job(TrialJob(cell.trial_id, trial_plan, cache_root, store_root, threads), cohort, on_stage)
    tune.report({**result["metrics"], "stage": "done", "trial_key": result["trial_key"]})


#: Driver-side listeners by id: Tune pickles its RunConfig (callbacks included) into the
#: experiment folder, and a listener holds unpicklable things (a live view, an MLflow client).
#: Each: ``(on_event(tune id, status, info), on_complete(cell, sampled values))``.
_LISTENERS: dict[
    str, tuple[Callable[[str, str, dict[str, Any]], None], Callable[[TrialSpec, dict[str, Any]], None]]
] = {}


class _Relay(Callback):
    """Forwards Tune's trial events to the driver: the progress view, and each finished trial
    (so it is logged as it finishes)."""

    def __init__(self, plan: Plan, listener_id: str):
        self.plan, self.listener_id = plan, listener_id

    def _emit(self, trial: Any, status: str, info: dict[str, Any]) -> None:
        if self.listener_id in _LISTENERS:
            cell = self.plan.trials[int(trial.config["trial_index"])]
            _LISTENERS[self.listener_id][0](trial.trial_id, status, {"cell": cell.trial_id, **info})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(trial, "running", {})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        info = {"stage": result.get("stage"), "reused": result.get("reused"), "seconds": result.get("seconds")}
        self._emit(trial, "running", info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(trial, "failed", {})

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(trial, "retrying", {})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._emit(trial, "done", {})
        if self.listener_id in _LISTENERS:
            cell = self.plan.trials[int(trial.config["trial_index"])]
            _LISTENERS[self.listener_id][1](cell, {k: v for k, v in trial.config.items() if k != "trial_index"})


def run_sampled(
    study: Study,
    plan: Plan,
    cohort: LoadedCohort,
    output_dir: Path,
    key: str,
    on_event: Callable[[str, str, dict[str, Any]], None],
    on_done: Callable[[TrialOutcome], None],
) -> tuple[list[TrialOutcome], list[str], int]:
    """Run the sampled trials of every grid cell; returns ``(finished outcomes, failed trials,
    trials ASHA stopped early)``. Finished trials of earlier runs are taken from the Optuna
    storage and the trial store (and handed to ``on_done`` too)."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    from salient.platform.stages.trial import plan_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache_root = str((output_dir / "stage_cache").resolve())
    store = TrialStore((output_dir / "trials").resolve())
    asha = getattr(study.sampler, "scheduler", "fifo") == "asha"
    metric, mode = study.sampler.metric, study.sampler.mode
    threads = max(1, int(study.resources.per_trial().cpus))
    db = storage(storage_url(output_dir))
    trainable = tune.with_resources(
        tune.with_parameters(
            _sampled_trainable,
            study=study,
            plan=plan,
            cohort=cohort,
            cache_root=cache_root,
            store_root=str(store.root),
            threads=threads,
            asha=asha,
        ),
        {"cpu": study.resources.per_trial().cpus, "gpu": study.resources.per_trial().gpus},
    )
    studies: dict[int, Any] = {}

    def finished(cell: TrialSpec, values: dict[str, Any]) -> TrialOutcome | None:
        """The trial store's entry for a draw, named after its Optuna trial number."""
        trial_plan = plan_trial(study, {**cell.params, **values}, cell.repeat, plan.pool_dose, cohort)
        outcome = store.outcome(trial_plan.trial_key, cell.trial_id, cell.repeat)
        trial = trial_by_values(studies[cell.index], values) if outcome is not None else None
        if outcome is None or trial is None:
            return outcome
        return dataclasses.replace(outcome, trial_id=f"{cell.trial_id}-{trial.number}")

    def on_complete(cell: TrialSpec, values: dict[str, Any]) -> None:
        if (outcome := finished(cell, values)) is not None:
            on_done(outcome)

    listener_id = uuid.uuid4().hex
    _LISTENERS[listener_id] = (on_event, on_complete)
    outcomes: list[TrialOutcome] = []
    failed: list[str] = []
    stopped = 0
    try:
        for cell in plan.trials:
            name = optuna_study_name(study.name, key, cell.trial_id if len(plan.trials) > 1 else None)
            direction = optuna.study.StudyDirection.MAXIMIZE if mode == "max" else optuna.study.StudyDirection.MINIMIZE
            ot_study = optuna.create_study(storage=db, study_name=name, direction=direction, load_if_exists=True)
            studies[cell.index] = ot_study

            def objective_of(values: dict[str, Any], cell: TrialSpec = cell) -> float | None:
                o = finished(cell, values)
                return None if o is None or metric not in o.metrics else o.metrics[metric]

            settle_orphans(ot_study, objective_of)
            done = ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            remaining = plan.n_samples - len(done)
            if remaining > 0:
                search = OptunaSearch(
                    space=_DefineByRun(cell, plan.sampled),
                    metric=metric,
                    mode=mode,
                    sampler=make_sampler(study.sampler.name, study.sampler.seed + cell.index),
                    study_name=name,
                    storage=db,
                )
                scheduler = (
                    ASHAScheduler(
                        time_attr="training_iteration",
                        max_t=2,
                        grace_period=1,
                        reduction_factor=2,
                        metric=metric,
                        mode=mode,
                    )
                    if asha
                    else None
                )
                storage_path, experiment = _fresh_experiment(output_dir, name)
                tuner = tune.Tuner(
                    trainable,
                    tune_config=tune.TuneConfig(
                        search_alg=search,
                        scheduler=scheduler,
                        num_samples=remaining,
                        max_concurrent_trials=study.resources.max_concurrent,
                        reuse_actors=True,
                    ),
                    run_config=tune.RunConfig(
                        name=experiment,
                        storage_path=storage_path,
                        verbose=0,
                        callbacks=[_Relay(plan, listener_id)],
                        failure_config=tune.FailureConfig(max_failures=study.resources.retries),
                    ),
                )
                grid = tuner.fit()
                for i in range(len(grid)):
                    result = grid[i]
                    if result.error is not None:
                        failed.append(f"{cell.trial_id} (draw {i}): {_short(result.error)}")
            # Every finished draw of this cell, earlier runs' included, by its Optuna trial number.
            for trial in ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                outcome = finished(cell, dict(trial.params))
                if outcome is None:
                    stopped += 1  # told COMPLETE by ASHA's stop, with no finished result
                    continue
                outcomes.append(outcome)
                on_done(outcome)  # idempotent: those logged as they finished are not logged again
    finally:
        _LISTENERS.pop(listener_id, None)
    return outcomes, failed, stopped


def _short(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    lines = [ln for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1][:200] if lines else ''}"


# -- searches scored rung by rung (guidance auto-tuning) ----------------------------------------

#: ``(setup, values) -> one metrics dict per rung``: a configuration scored on growing budgets.
RungScorer = Callable[[Any, dict[str, Any]], Iterator[dict[str, float]]]


def _rung_trainable(config: dict[str, Any], scorer: RungScorer, setup: Any, cpus: int) -> None:
    """One configuration, reported rung by rung (ASHA stops the poor ones after rung 1)."""
    configure_torch(cpus)
    for metrics in scorer(setup, {k: v for k, v in config.items() if k != "trial_index"}):
        tune.report(metrics)


def _rows_dir(study: Study, name: str) -> Path:
    return study.output_dir / "tuning_rows" / content_hash(name, 16)


def run_rung_search(
    study: Study,
    scorer: RungScorer,
    setup: Any,
    n_rungs: int,
    n_trials: int,
    experiment: str,
    address: str | None,
    on_result: Callable[[dict[str, Any]], None],
    keep: tuple[str, ...],
    metric: str = "score",
) -> list[dict[str, Any]]:
    """Search the study's sampled entries with its Optuna sampler through Ray Tune, with ASHA
    early stopping over ``n_rungs`` rungs (reduction factor 2), maximising ``metric``.

    The Optuna study is ``experiment`` in ``OUTPUT_DIR/optuna.db``; a rerun continues it (only the
    missing trials run; earlier trials' rows come from ``OUTPUT_DIR/tuning_rows/``, JSON).
    Returns one row per trial: its ``values``, the ``objectives`` it last reported (the names in
    ``keep``) and whether ASHA ``stopped_early``."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _init_ray(address)
    cpus = max(1, int(study.resources.per_trial().cpus))
    trainable = tune.with_resources(
        tune.with_parameters(_rung_trainable, scorer=scorer, setup=setup, cpus=cpus),
        {"cpu": cpus, "gpu": study.resources.gpus},
    )
    sampled = {k: v for k, v in study.search_space.items() if not v.is_grid}
    fixed = {k: v.grid[0] for k, v in study.search_space.items() if v.is_grid and v.grid}
    db = storage(storage_url(study.output_dir))
    ot_study = optuna.create_study(storage=db, study_name=experiment, direction="maximize", load_if_exists=True)
    rows_dir = _rows_dir(study, experiment)
    rows_dir.mkdir(parents=True, exist_ok=True)

    def saved_row(number: int) -> dict[str, Any] | None:
        path = rows_dir / f"{number}.json"
        try:
            row = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None
        return row if isinstance(row, dict) and {"values", "objectives", "stopped_early"} <= set(row) else None

    def objective_of(values: dict[str, Any]) -> float | None:
        return None  # a trial the driver never saw finish is run again (its draw is replaced)

    settle_orphans(ot_study, objective_of)
    rows: list[dict[str, Any]] = []
    for trial in ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (row := saved_row(trial.number)) is not None:
            rows.append(row)
    remaining = n_trials - len(ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if remaining <= 0:
        return rows
    search = OptunaSearch(
        space=_DefineByRun(TrialSpec(0, 0, fixed), sampled),
        metric=metric,
        mode="max",
        sampler=make_sampler(study.sampler.name, study.sampler.seed),
        study_name=experiment,
        storage=db,
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=n_rungs, grace_period=1, reduction_factor=2, metric=metric, mode="max"
    )
    storage_path, tune_name = _fresh_experiment(study.output_dir, experiment)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=remaining,
            max_concurrent_trials=study.resources.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=tune_name, storage_path=storage_path, verbose=0),
    )
    grid = tuner.fit()
    for i in range(len(grid)):
        result = grid[i]
        if result.error is not None or not result.metrics:
            log.warning("trial %d of %s failed: %r", i, experiment, result.error)
            continue
        values = {k: v for k, v in (result.config or {}).items() if k != "trial_index"}
        objectives = {k: float(result.metrics[k]) for k in (*keep, metric) if k in result.metrics}
        row = {
            "values": {**fixed, **values},
            "objectives": objectives,
            "stopped_early": int(result.metrics.get("training_iteration", 0)) < n_rungs,
        }
        trial = trial_by_values(ot_study, values)
        if trial is not None:
            tmp = rows_dir / f".{trial.number}.json.tmp"
            tmp.write_text(json.dumps(row, default=str))
            os.replace(tmp, rows_dir / f"{trial.number}.json")
        rows.append(row)
        on_result(row)
    return rows
