"""The only module that talks to Ray: trials as Ray Tune trials.

* Grid axes are expanded in Python (:func:`salient.platform.study.plan.build_plan`);
  OptunaSearch rejects ``grid_search``. A grid-only study is one Tuner over the trial index.
  A study with sampled axes runs one Tuner per grid cell, whose OptunaSearch (the study's
  sampler and seed) draws ``sampler.n_trials`` configurations with a define-by-run space, so
  conditional entries (``when``) are honoured.
* The trainable is a function of its config: it restores from ``tune.get_checkpoint()`` (a
  finished trial's checkpoint holds its result, which is re-reported without recomputing) and
  reports after every stage with ``tune.report(dict, checkpoint=...)``. Stage outputs live in
  the content-addressed stage cache, so a retried trial (``FailureConfig``) continues from the
  last finished stage and from the last checkpoint inside the interrupted one.
* Actors are reused between trials (``reuse_actors``): a new trial skips the worker start and
  the torch/MONAI imports. On the demo study this cut the slot time spent outside trials from
  104.9 s to 44.5 s (benchmarks/orchestration_overhead.py, 2-core CPU). Per-process torch
  settings are applied at the start of every trial.
* Resources: a trial asks for the largest CPU/GPU request among its stages (one trial runs all
  of its stages in one process). ``--address`` joins a running cluster; otherwise a local Ray is
  started with this machine's CPUs. On a multi-node cluster ``output_dir`` must be on a shared
  filesystem (the stage cache and the Tune storage path live there).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback, Checkpoint
from salient.dashboards import names
from salient.platform.artifacts import write_trial_artifacts
from salient.platform.cohort.prepare import LoadedCohort
from salient.platform.outcome import TrialOutcome
from salient.platform.stage_cache import StageCache
from salient.platform.stages import DETECTOR
from salient.platform.stages.base import StageEvent
from salient.platform.stages.trial import TrialPlan, plan_trial, run_trial
from salient.platform.study.plan import Plan, TrialSpec
from salient.platform.study.schema import ParamSpec, Study
from salient.platform.torch_runtime import configure_torch

__all__ = ["FAIL_MODE_ENV", "FAIL_ONCE_ENV", "TrialOutcome", "make_sampler", "run_rung_search", "run_with_tune"]

log = logging.getLogger(__name__)
#: Test hook (fault-injection tests only): a trial fails once, after its detector stage, when
#: this names a file that does not exist yet (the file is created before failing).
FAIL_ONCE_ENV = "SALIENT_FAIL_ONCE"
#: With FAIL_ONCE_ENV: "raise" (default) raises in the trial; "kill" SIGKILLs the trial's process.
FAIL_MODE_ENV = "SALIENT_FAIL_MODE"


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


def _trainable(
    config: dict[str, Any],
    study: Study,
    plan: Plan,
    resolved: dict[int, TrialPlan],
    cohort: LoadedCohort,
    cache_root: str,
    cpus: int,
) -> None:
    """One trial. ``config``: ``trial_index`` plus any sampled values; ``resolved``: the trial plans
    the driver resolved already (grid trials), so a trial is planned once."""
    started = time.perf_counter()
    configure_torch(cpus)
    cell = plan.trials[int(config["trial_index"])]
    sampled = {k: v for k, v in config.items() if k != "trial_index"}
    metric = study.sampler.metric
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            done = Path(d) / names.ARTIFACT_RESULT
            if done.is_file():  # finished before the driver stopped: report it again, train nothing
                saved = json.loads(done.read_text())
                tune.report({**saved["metrics"], "stage": "done", "restored": True}, checkpoint=checkpoint)
                return
    events: list[dict[str, Any]] = []

    def report(event: StageEvent) -> None:
        events.append({"stage": event.stage, "key": str(event.key), "reused": event.reused, "seconds": event.seconds})
        tune.report({metric: float("nan"), "stage": event.stage, "reused": event.reused, "seconds": event.seconds})
        fail_marker = os.environ.get(FAIL_ONCE_ENV)
        if event.stage == DETECTOR and fail_marker and not Path(fail_marker).exists():
            Path(fail_marker).write_text(f"failed {cell.trial_id} at {time.time()}\n")
            if os.environ.get(FAIL_MODE_ENV) == "kill":  # like the OOM killer: no exception, no cleanup
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure after the detector stage ({FAIL_ONCE_ENV}={fail_marker})")

    trial_plan = resolved.get(cell.index) if not sampled else None
    if trial_plan is None:
        trial_plan = plan_trial(study, {**cell.params, **sampled}, cell.repeat, plan.pool_dose, cohort)
    result = run_trial(trial_plan, cohort, StageCache(cache_root), report)
    with tempfile.TemporaryDirectory() as d:
        write_trial_artifacts(Path(d), trial_plan, result, events, time.perf_counter() - started)
        tune.report({**result.metrics, "stage": "done", "restored": False}, checkpoint=Checkpoint.from_directory(d))


def _outcome_from_checkpoint(path: str | None, cell: TrialSpec) -> TrialOutcome | None:
    if path is None or not (Path(path) / names.ARTIFACT_RESULT).is_file():
        return None
    saved = json.loads((Path(path) / names.ARTIFACT_RESULT).read_text())
    return TrialOutcome(
        cell.trial_id,
        saved["trial_key"],
        cell.repeat,
        saved["params"],
        saved["metrics"],
        saved["stage_keys"],
        saved["stages"],
        path,
        saved.get("trial_seconds"),
        saved.get("split"),
        saved.get("settings", {}),
    )


#: Driver-side listeners by id. Tune pickles its RunConfig (callbacks included) into the
#: experiment state, and a listener holds unpicklable things (a live terminal view, a client),
#: so the callback keeps only the id.
_LISTENERS: dict[str, tuple[Callable[[str, str, dict[str, Any]], None], Callable[[TrialOutcome], None]]] = {}


class _Relay(Callback):
    """Forwards Tune's trial events to the driver's listeners (progress view, MLflow logger)."""

    def __init__(self, plan: Plan, listener_id: str):
        self.plan, self.listener_id = plan, listener_id

    def on_event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        if self.listener_id in _LISTENERS:
            _LISTENERS[self.listener_id][0](tune_id, status, info)

    def on_done(self, outcome: TrialOutcome) -> None:
        if self.listener_id in _LISTENERS:
            _LISTENERS[self.listener_id][1](outcome)

    def _cell(self, trial: Any) -> TrialSpec:
        return self.plan.trials[int(trial.config["trial_index"])]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_event(trial.trial_id, "running", {"cell": self._cell(trial).trial_id})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.on_event(
            trial.trial_id,
            "running",
            {"cell": self._cell(trial).trial_id, "stage": result.get("stage"), "reused": result.get("reused")},
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_event(trial.trial_id, "failed", {"cell": self._cell(trial).trial_id})

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_event(trial.trial_id, "retrying", {"cell": self._cell(trial).trial_id})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = self._cell(trial)
        ckpt = trial.checkpoint.path if trial.checkpoint is not None else None
        outcome = _outcome_from_checkpoint(ckpt, cell)
        self.on_event(trial.trial_id, "done", {"cell": cell.trial_id})
        if outcome is not None:
            self.on_done(outcome)


def _init_ray(address: str | None) -> None:
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress view replaces Tune's
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
        )


def run_with_tune(
    study: Study,
    plan: Plan,
    resolved: dict[int, TrialPlan],
    cohort: LoadedCohort,
    output_dir: Path,
    experiment: str,
    address: str | None,
    on_event: Callable[[str, str, dict[str, Any]], None],
    on_done: Callable[[TrialOutcome], None],
) -> tuple[list[TrialOutcome], list[str]]:
    """Run every trial of the plan; returns the finished outcomes and the ids of failed trials.

    ``experiment`` names the Tune experiment folder under ``output_dir/ray_results``; an
    existing experiment of that name is restored (finished trials are not run again).
    """
    _init_ray(address)
    per_trial = study.resources.per_trial()
    cpus, gpus = per_trial.cpus, per_trial.gpus
    storage = (output_dir / "ray_results").resolve()
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            study=study,
            plan=plan,
            resolved=resolved,
            cohort=cohort,
            cache_root=str((output_dir / "stage_cache").resolve()),
            cpus=max(1, int(cpus)),
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    listener_id = experiment  # stable: a restored Tuner unpickles the callback with this id
    _LISTENERS[listener_id] = (on_event, on_done)
    relay = _Relay(plan, listener_id)
    run_config = tune.RunConfig(
        storage_path=str(storage),
        verbose=0,
        callbacks=[relay],
        failure_config=tune.FailureConfig(max_failures=study.resources.retries),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )
    groups: list[tuple[str, dict[str, Any], tune.TuneConfig]] = []
    if not plan.sampled:
        groups.append(
            (
                experiment,
                {"trial_index": tune.grid_search([t.index for t in plan.trials])},
                tune.TuneConfig(max_concurrent_trials=study.resources.max_concurrent, num_samples=1, reuse_actors=True),
            )
        )
    else:
        from ray.tune.search.optuna import OptunaSearch

        for cell in plan.trials:
            search = OptunaSearch(
                space=_DefineByRun(cell, plan.sampled),
                metric=study.sampler.metric,
                mode=study.sampler.mode,
                sampler=make_sampler(study.sampler.name, study.sampler.seed + cell.index),
            )
            groups.append(
                (
                    f"{experiment}-{cell.trial_id}",
                    {},
                    tune.TuneConfig(
                        search_alg=search,
                        num_samples=plan.n_samples,
                        max_concurrent_trials=study.resources.max_concurrent,
                        reuse_actors=True,
                    ),
                )
            )
    outcomes: list[TrialOutcome] = []
    failed: list[str] = []
    try:
        _fit_groups(groups, storage, trainable, run_config, plan, outcomes, failed)
    finally:
        _LISTENERS.pop(listener_id, None)
    return outcomes, failed


def _fit_groups(
    groups: list[tuple[str, dict[str, Any], Any]],
    storage: Path,
    trainable: Any,
    run_config: Any,
    plan: Plan,
    outcomes: list[TrialOutcome],
    failed: list[str],
) -> None:
    for name, space, tune_config in groups:
        path = storage / name
        if tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(
                str(path), trainable=trainable, resume_unfinished=True, resume_errored=True, param_space=space or None
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune_config,
                run_config=dataclasses.replace(run_config, name=name),
            )
        grid = tuner.fit()
        for i in range(len(grid)):
            result = grid[i]
            cell = plan.trials[int((result.config or {})["trial_index"])]
            outcome = _outcome_from_checkpoint(result.checkpoint.path if result.checkpoint else None, cell)
            if outcome is None or result.error is not None:
                failed.append(f"{cell.trial_id}: {result.error!r}" if result.error else cell.trial_id)
                continue
            if plan.sampled:  # one cell holds several sampled trials: name them apart
                n_before = sum(o.trial_id.startswith(cell.trial_id) for o in outcomes)
                outcome = dataclasses.replace(outcome, trial_id=f"{cell.trial_id}-{n_before}")
            outcomes.append(outcome)


# -- searches scored rung by rung (guidance auto-tuning) ----------------------------------------

#: ``(setup, values) -> one metrics dict per rung``: a configuration scored on growing budgets.
RungScorer = Callable[[Any, dict[str, Any]], Iterator[dict[str, float]]]


def _rung_trainable(config: dict[str, Any], scorer: RungScorer, setup: Any, cpus: int) -> None:
    """One configuration, reported rung by rung (ASHA stops the poor ones after rung 1)."""
    configure_torch(cpus)
    for metrics in scorer(setup, {k: v for k, v in config.items() if k != "trial_index"}):
        tune.report(metrics)


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

    Returns one row per trial: its ``values``, the ``objectives`` it last reported (the names in
    ``keep``) and whether ASHA ``stopped_early``."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    _init_ray(address)
    cpus = max(1, int(study.resources.per_trial().cpus))
    trainable = tune.with_resources(
        tune.with_parameters(_rung_trainable, scorer=scorer, setup=setup, cpus=cpus),
        {"cpu": cpus, "gpu": study.resources.gpus},
    )
    sampled = {k: v for k, v in study.search_space.items() if not v.is_grid}
    fixed = {k: v.grid[0] for k, v in study.search_space.items() if v.is_grid and v.grid}
    search = OptunaSearch(
        space=_DefineByRun(TrialSpec(0, 0, fixed), sampled),
        metric=metric,
        mode="max",
        sampler=make_sampler(study.sampler.name, study.sampler.seed),
    )
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=n_rungs, grace_period=1, reduction_factor=2, metric=metric, mode="max"
    )
    storage = (study.output_dir / "ray_results").resolve()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=n_trials,
            max_concurrent_trials=study.resources.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=experiment, storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    rows = []
    for i in range(len(grid)):
        result = grid[i]
        if result.error is not None or not result.metrics:
            log.warning("trial %d of %s failed: %r", i, experiment, result.error)
            continue
        values = {k: v for k, v in (result.config or {}).items() if k != "trial_index"}
        row = {
            "values": {**fixed, **values},
            "objectives": {k: float(result.metrics[k]) for k in (*keep, metric) if k in result.metrics},
            "stopped_early": int(result.metrics.get("training_iteration", 0)) < n_rungs,
        }
        rows.append(row)
        on_result(row)
    return rows
