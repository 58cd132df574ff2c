"""Study results out of MLflow, as the tables the dashboards take (results in, figures out).

A study is a parent run tagged ``salient.kind = study``; its trials are the child runs. The
results table has one row per finished trial: ``trial``, ``run_id``, ``experiment_id`` (for links
to the MLflow UI), every param (numbers and booleans parsed back from MLflow's strings) and every
metric. Per-subject scores and training-loss histories of finished runs never change, so they
are read once per run and kept: the dashboard polls a running study every few seconds.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from salient.dashboards import names
from salient.dashboards.links import EXPERIMENT_COLUMN
from salient.dashboards.study_progress import Progress, StudyState
from salient.dashboards.training_figure import HISTORY_COLUMNS

__all__ = ["MlflowResults", "StudyInfo", "parse_param"]

log = logging.getLogger(__name__)


def parse_param(text: str) -> Any:
    """MLflow stores params as strings: give numbers and booleans back their type."""
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


@dataclass(frozen=True)
class StudyInfo:
    run_id: str
    name: str
    experiment: str
    status: str
    start_time: int  # ms since the epoch

    @property
    def label(self) -> str:
        return f"{self.name} ({self.experiment}, {self.status.lower()}, {self.run_id[:8]})"


class MlflowResults:
    """The dashboards' data source over one MLflow tracking URI (read only)."""

    def __init__(self, tracking_uri: str):
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        # Finished runs are immutable: their scores and histories are read once (run id -> frame).
        self._scores: dict[str, pd.DataFrame | None] = {}
        self._histories: dict[str, pd.DataFrame] = {}
        self._lock = threading.Lock()

    def studies(self) -> list[StudyInfo]:
        """Every study run in every experiment, newest first."""
        out = []
        for exp in self.client.search_experiments():
            for run in self.client.search_runs(
                [exp.experiment_id], filter_string=f"tags.`{names.TAG_KIND}` = '{names.KIND_STUDY}'", max_results=1000
            ):
                out.append(
                    StudyInfo(
                        run.info.run_id,
                        run.info.run_name or run.info.run_id,
                        exp.name,
                        run.info.status,
                        run.info.start_time,
                    )
                )
        return sorted(out, key=lambda s: -s.start_time)

    def study_params(self, study_run_id: str) -> dict[str, Any]:
        return {k: parse_param(v) for k, v in self.client.get_run(study_run_id).data.params.items()}

    def results(self, study_run_id: str) -> pd.DataFrame:
        """One row per finished trial of the study (empty while none has finished)."""
        parent = self.client.get_run(study_run_id)
        runs = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{names.TAG_PARENT}` = '{study_run_id}' and attributes.status = 'FINISHED'",
            max_results=5000,
        )
        rows: list[dict[str, Any]] = []
        param_names: set[str] = set()
        for r in runs:
            params = {k: parse_param(v) for k, v in r.data.params.items() if not k.startswith(names.PROVENANCE_PARAMS)}
            param_names.update(params)
            rows.append(
                {
                    "trial": r.info.run_name,
                    "run_id": r.info.run_id,
                    EXPERIMENT_COLUMN: r.info.experiment_id,
                    **params,
                    **r.data.metrics,
                }
            )
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame = frame.sort_values("trial", kind="stable").reset_index(drop=True)
        frame.attrs["params"] = sorted(param_names)  # which columns are search-space values
        return frame

    def state(self, study_run_id: str) -> StudyState:
        """The study run's MLflow status and its driver's last progress report (``salient.progress``)."""
        run = self.client.get_run(study_run_id)
        return StudyState(run.info.status, Progress.parse(run.data.tags.get(names.TAG_PROGRESS)))

    def _trial_scores(self, run_id: str) -> pd.DataFrame | None:
        with self._lock:
            if run_id in self._scores:
                return self._scores[run_id]
        try:
            with tempfile.TemporaryDirectory() as d:
                path = Path(self.client.download_artifacts(run_id, names.ARTIFACT_SCORES, d))
                frame: pd.DataFrame | None = pd.read_csv(path, dtype={"subject": str})
        except Exception as exc:  # a trial without the artifact: the analysis says what is missing
            log.warning("scores of run %s unavailable: %s", run_id, exc)
            frame = None
        with self._lock:
            self._scores[run_id] = frame
        return frame

    def scores(self, results: pd.DataFrame) -> pd.DataFrame | None:
        """Every trial's per-subject scores (its ``scores.csv`` artifact) with a ``trial`` column;
        None when no trial has them (studies run before they were recorded)."""
        frames = []
        for trial, run_id in zip(results.get("trial", []), results.get("run_id", []), strict=True):
            found = self._trial_scores(str(run_id))
            if found is not None:
                frames.append(found.assign(trial=trial))
        return pd.concat(frames, ignore_index=True) if frames else None

    def histories(self, results: pd.DataFrame) -> pd.DataFrame | None:
        """Training-loss histories (``train_loss.<stage>`` metrics, every logged step) of the
        given trials: ``run_id, trial, stage, step, value``; None when no trial logged any."""
        metrics = [c for c in results.columns if str(c).startswith(names.TRAIN_LOSS_PREFIX)]
        frames = []
        for _, row in results.iterrows():
            run_id = str(row["run_id"])
            for metric in metrics:
                if pd.isna(row[metric]):
                    continue
                key = f"{run_id}/{metric}"
                with self._lock:
                    found = self._histories.get(key)
                if found is None:
                    history = self.client.get_metric_history(run_id, metric)
                    found = pd.DataFrame(
                        {
                            "run_id": run_id,
                            "stage": metric[len(names.TRAIN_LOSS_PREFIX) :],
                            "step": [m.step for m in history],
                            "value": [m.value for m in history],
                        }
                    )
                    with self._lock:
                        self._histories[key] = found
                frames.append(found.assign(trial=row["trial"]))
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True)[list(HISTORY_COLUMNS)]

    def preview(self, trial_run_id: str) -> dict[str, np.ndarray] | None:
        """A trial's preview arrays (real and synthetic lesion slices with masks), if it has them."""
        try:
            stored = {a.path for a in self.client.list_artifacts(trial_run_id)}
            if names.ARTIFACT_PREVIEW not in stored:
                return None
            with tempfile.TemporaryDirectory() as d:
                path = Path(self.client.download_artifacts(trial_run_id, names.ARTIFACT_PREVIEW, d))
                with np.load(path) as z:  # read inside the temporary folder, before it goes
                    return {k: z[k] for k in z.files}
        except Exception as exc:  # a missing or unreadable artifact must not break a dashboard
            log.warning("preview of run %s unavailable: %s", trial_run_id, exc)
            return None
