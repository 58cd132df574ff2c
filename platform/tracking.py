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

import logging
import math
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = ["TRACKING_ERRORS", "Tracker", "default_tracking_uri", "git_revision"]

log = logging.getLogger(__name__)
STUDY_KEY, TRIAL_KEY, PARENT = "salient.study_key", "salient.trial_key", "mlflow.parentRunId"
_MAX_PARAM = 6000  # MLflow's limit on a param value
#: What a tracking server that is down or restarting raises through the client.
TRACKING_ERRORS: tuple[type[BaseException], ...] = (MlflowException, OSError, requests.RequestException)


def default_tracking_uri(output_dir: Path) -> str:
    """The embedded store: a SQLite file in the study's output folder."""
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


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
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        self.parent_id: str | None = None

    def _find(self, filter_string: str) -> list[Any]:
        return list(self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000))

    def find_study_run(self, study_key: str) -> Any | None:
        """The study's parent run (found by its key tag), or None if the study never started."""
        found = [r for r in self._find(f"tags.`{STUDY_KEY}` = '{study_key}'") if PARENT not in r.data.tags]
        return found[0] if found else None

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
        run = self.client.create_run(self.experiment_id, run_name=name, tags={STUDY_KEY: study_key, **tags})
        self.parent_id = run.info.run_id
        self.client.log_batch(self.parent_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return self.parent_id, False

    def log_parent_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.parent_id is not None
        self.client.log_artifact(self.parent_id, str(path), artifact_path)

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
    ) -> tuple[str, bool]:
        """Log one trial as a child run unless it is logged already; returns ``(run_id, new)``."""
        assert self.parent_id is not None, "start_study first"
        for run in self._find(f"tags.`{TRIAL_KEY}` = '{trial_key}'"):
            if run.data.tags.get(PARENT) != self.parent_id:
                continue
            if run.info.status == "FINISHED":
                return run.info.run_id, False
            self.client.delete_run(run.info.run_id)  # half-logged by a killed driver: redo it
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={PARENT: self.parent_id, TRIAL_KEY: trial_key, **tags}
        )
        rid = run.info.run_id
        self.client.log_batch(
            rid,
            metrics=_metrics(metrics),
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
