"""MLflow tracking: one parent run per study, one child run per trial.

Only the driver process writes to MLflow (trials hand their results back through Ray), so
concurrent trials never contend for the embedded SQLite store ("database is locked").

Logging is idempotent, which is what makes resume safe: a parent run is found again by its
``salient.study_key`` tag and a child by its ``salient.trial_key`` tag. A child run is marked
FINISHED only after its params, metrics and artifacts are written; a child found unfinished
(the driver died while logging it) is deleted and logged again, so a resumed study neither loses
nor duplicates runs.
"""

from __future__ import annotations

import functools
import logging
import math
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from salient.dashboards.names import EXPERIMENT_KIND_TRAINING, KIND_STUDY, TAG_EXPERIMENT_KIND, TAG_KIND, TAG_PROGRESS
from salient.dashboards.names import TAG_PARENT as PARENT
from salient.dashboards.names import TAG_STUDY_KEY as STUDY_KEY
from salient.dashboards.names import TAG_TRIAL_KEY as TRIAL_KEY
from salient.dashboards.study_progress import Progress
from salient.platform.study.schema import Study

__all__ = ["TRACKING_ERRORS", "Tracker", "default_tracking_uri", "git_revision", "store_exists", "study_tracker"]

log = logging.getLogger(__name__)
_MAX_PARAM = 6000  # MLflow's limit on a param value
#: MLflow's limits per ``log_batch`` request (params, metrics, tags).
_BATCH = {"params": 100, "metrics": 1000, "tags": 100}
#: What a tracking server that is down or restarting raises through the client.
TRACKING_ERRORS: tuple[type[BaseException], ...] = (MlflowException, OSError, requests.RequestException)


def default_tracking_uri(output_dir: Path) -> str:
    """The embedded store: a SQLite file in the study's output folder."""
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


def study_tracker(study: Study, tracking_uri: str | None, create: bool = True) -> Tracker:
    """The tracker of a study: ``tracking_uri``, else the study's ``tracking.uri``, else the
    embedded store in its output folder (whose artifacts then live next to it). ``create=False``
    opens it read-only (see :class:`Tracker`)."""
    uri = tracking_uri or study.tracking.uri or default_tracking_uri(study.output_dir)
    artifacts = None
    if uri.startswith("sqlite:///") and not (tracking_uri or study.tracking.uri):
        artifacts = (study.output_dir / "mlartifacts").resolve().as_uri()
    return Tracker(uri, study.tracking.experiment or study.name, artifact_location=artifacts, create=create)


def store_exists(uri: str) -> bool:
    """False when ``uri`` names a local store (SQLite file, file-store folder) that is not there
    (or an empty SQLite file, which MLflow would fill with tables); True otherwise, servers
    included."""
    if uri.startswith("sqlite://"):
        path = uri[len("sqlite:///") :].split("?")[0] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            return True  # in memory: nothing on disk to create
        file = Path(path)
        return file.is_file() and file.stat().st_size > 0
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return Path(urlparse(uri).path).exists()
    if scheme == "" or (len(scheme) == 1 and uri[1:2] == ":"):  # a plain path (or a Windows drive)
        return Path(uri).exists()
    return True


def git_revision(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        rev = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) if out.returncode == 0 and rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _param_value(v: Any) -> str:
    text = str(v)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."


class Tracker:
    """Args:
    uri: MLflow tracking URI (``sqlite:///...``, ``http://host:port``, a folder).
    experiment: experiment name; created with ``artifact_location`` if it does not exist.
    artifact_location: where a new experiment stores artifacts (the embedded default keeps them
        next to the SQLite file).
    create: False opens the store read-only (``status``, ``report``): a store or experiment that
        does not exist is neither created nor restored, and the tracker finds no runs.
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None, *, create: bool = True):
        self.uri = uri
        self.read_only = not create
        self.parent_id: str | None = None
        #: None only for a read-only tracker whose store or experiment does not exist.
        self.experiment_id: str | None = None
        if self.read_only:
            if store_exists(uri):  # opening a missing SQLite store would create it
                exp = self.client.get_experiment_by_name(experiment)
                if exp is not None and exp.lifecycle_stage != "deleted":
                    self.experiment_id = exp.experiment_id
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # Tagged as model training, so MLflow's UI opens it in its training-runs view, not GenAI's.
            self.experiment_id = self.client.create_experiment(
                experiment,
                artifact_location=artifact_location,
                tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING},
            )
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
            if TAG_EXPERIMENT_KIND not in exp.tags:  # made before the tag (or by hand); a kind set by a user stays
                self.client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)

    @functools.cached_property
    def client(self) -> MlflowClient:
        # Made on first use: a read-only tracker on a missing store never makes one.
        return MlflowClient(tracking_uri=self.uri)

    def _writable_experiment(self) -> str:
        if self.read_only or self.experiment_id is None:
            raise RuntimeError(f"tracker for {self.uri} was opened read-only; it does not write")
        return self.experiment_id

    def _find(self, filter_string: str) -> list[Any]:
        if self.experiment_id is None:
            return []
        return list(self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000))

    def find_study_run(self, study_key: str) -> Any | None:
        """The study's parent run (found by its key tag), or None if the study never started."""
        found = [r for r in self._find(f"tags.`{STUDY_KEY}` = '{study_key}'") if PARENT not in r.data.tags]
        return found[0] if found else None

    def newest_study_run(self, name: str) -> Any | None:
        """The newest study run named ``name`` in this experiment, whatever its key (a study file
        edited since, or a run by another code version), or None."""
        runs = [
            r
            for r in self._find(f"tags.`{TAG_KIND}` = '{KIND_STUDY}'")
            if PARENT not in r.data.tags and r.info.run_name == name
        ]
        return max(runs, key=lambda r: r.info.start_time or 0, default=None)

    def child_runs(self) -> list[Any]:
        """Every child run of the current study's parent run."""
        assert self.parent_id is not None, "start_study or find_study_run first"
        return self._find(f"tags.`{PARENT}` = '{self.parent_id}'")

    def start_study(
        self, study_key: str, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Find or create the study's parent run; returns ``(run_id, resumed)``."""
        found = self.find_study_run(study_key)
        if found is not None:
            self.parent_id = found.info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id, True
        run = self.client.create_run(self._writable_experiment(), run_name=name, tags={STUDY_KEY: study_key, **tags})
        self.parent_id = run.info.run_id
        self._log_batch(self.parent_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return self.parent_id, False

    def _log_batch(
        self,
        run_id: str,
        metrics: list[Metric] | None = None,
        params: list[Param] | None = None,
        tags: list[RunTag] | None = None,
    ) -> None:
        """``log_batch`` in chunks within MLflow's per-request limits."""
        metrics, params, tags = metrics or [], params or [], tags or []
        while metrics or params or tags:
            self.client.log_batch(
                run_id,
                metrics=metrics[: _BATCH["metrics"]],
                params=params[: _BATCH["params"]],
                tags=tags[: _BATCH["tags"]],
            )
            metrics, params, tags = metrics[_BATCH["metrics"] :], params[_BATCH["params"] :], tags[_BATCH["tags"] :]

    def log_parent_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.parent_id is not None
        self.client.log_artifact(self.parent_id, str(path), artifact_path)

    def set_progress(self, progress: Mapping[str, Any]) -> Progress:
        """State the running study's progress on its study run, for the dashboard: one JSON tag
        (``salient.progress``) with ``done``, ``running``, ``failed``, ``total`` (trial counts),
        ``eta_seconds`` (None until known) and ``updated`` (seconds since the epoch; now if
        absent). Each call replaces the last. Raises ValueError naming a bad field."""
        assert self.parent_id is not None, "start_study first"
        self._writable_experiment()
        checked = Progress.from_mapping(progress)
        self.client.set_tag(self.parent_id, TAG_PROGRESS, checked.to_json())
        return checked

    def finish_study(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def logged_trials(self) -> dict[str, str]:
        """``trial_key -> run_id`` of every finished child run of the current study."""
        return {
            r.data.tags[TRIAL_KEY]: r.info.run_id
            for r in self.child_runs()
            if TRIAL_KEY in r.data.tags and r.info.status == "FINISHED"
        }

    def log_trial(
        self,
        trial_key: str,
        name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        artifacts: tuple[Path, ...] | list[Path] = (),
        histories: Mapping[str, Sequence[float]] | None = None,
    ) -> tuple[str, bool]:
        """Log one trial as a child run unless it is logged already; returns ``(run_id, new)``.

        ``histories``: metric curves (one value per step, e.g. training losses), logged as MLflow
        metric histories before the run is marked finished."""
        assert self.parent_id is not None, "start_study first"
        for run in self._find(f"tags.`{TRIAL_KEY}` = '{trial_key}'"):
            if run.data.tags.get(PARENT) != self.parent_id:
                continue
            if run.info.status == "FINISHED":
                return run.info.run_id, False
            self.client.delete_run(run.info.run_id)  # half-logged by a killed driver: redo it
        run = self.client.create_run(
            self._writable_experiment(), run_name=name, tags={PARENT: self.parent_id, TRIAL_KEY: trial_key, **tags}
        )
        rid = run.info.run_id
        now = int(time.time() * 1000)
        curves = [
            Metric(k, float(v), now, step)
            for k, values in (histories or {}).items()
            for step, v in enumerate(values)
            if math.isfinite(float(v))
        ]
        self._log_batch(
            rid,
            metrics=_metrics(metrics) + curves,
            params=[Param(k, _param_value(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        for path in artifacts:
            if path.exists():
                self.client.log_artifact(rid, str(path))
        self.client.set_terminated(rid, status=RunStatus.to_string(RunStatus.FINISHED))
        return rid, True


def _metrics(metrics: Mapping[str, float]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, 0)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
