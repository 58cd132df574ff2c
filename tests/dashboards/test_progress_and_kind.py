"""What the platform writes to MLflow for the dashboard, on a real SQLite store: the study's
progress tag (read back by the dashboards' reader) and the experiment-kind tag that makes
MLflow's UI open our experiments in its model-training view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from salient.dashboards import names
from salient.dashboards.study_progress import Progress, StudyState, format_duration
from salient.platform.results import MlflowResults
from salient.platform.tracking import Tracker


def test_format_duration_for_people() -> None:
    assert [format_duration(s) for s in (0, 42, 60, 299, 3600, 4800)] == [
        "0 s",
        "42 s",
        "1 min",
        "5 min",
        "1 h",
        "1 h 20 min",
    ]
    with pytest.raises(ValueError, match="got -1"):
        format_duration(-1)


def test_progress_is_validated_field_by_field() -> None:
    good = {"done": 3, "running": 2, "failed": 1, "total": 10, "eta_seconds": 600, "updated": 1000.0}
    assert Progress.from_mapping(good) == Progress(3, 2, 1, 10, 600, 1000.0)
    assert Progress.from_mapping({**good, "updated": None}, now=5.0).updated == 5.0
    for bad, message in (
        ({**good, "done": -1}, r"'done' must be an integer >= 0, got -1"),
        ({**good, "running": 1.5}, r"'running' must be an integer >= 0, got 1.5"),
        ({**good, "failed": True}, r"'failed' must be an integer >= 0, got True"),
        ({**good, "total": 5}, r"done \+ running \+ failed \(3 \+ 2 \+ 1\) exceeds total \(5\)"),
        ({**good, "eta_seconds": float("inf")}, r"'eta_seconds' must be None or a finite number >= 0, got inf"),
        ({**good, "etaseconds": 3}, r"unknown field\(s\) \['etaseconds'\]"),
        ({"done": 1}, r"lacks field\(s\) \['running', 'failed', 'total'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            Progress.from_mapping(bad)


def test_progress_tag_round_trip_and_malformed_tags_read_as_none() -> None:
    p = Progress(3, 2, 1, 10, None, 1000.5)
    assert json.loads(p.to_json()) == {
        "done": 3,
        "running": 2,
        "failed": 1,
        "total": 10,
        "eta_seconds": None,
        "updated": 1000.5,
    }
    assert Progress.parse(p.to_json()) == p
    for text in (None, "", "not json", "[1, 2]", '{"done": 1}', '{"done": 1, "running": 0, "failed": 0, "total": 2}'):
        assert Progress.parse(text) is None


def test_a_running_study_describes_counts_time_left_and_a_stale_report() -> None:
    p = Progress(done=3, running=2, failed=1, total=10, eta_seconds=600, updated=1000.0)
    running = StudyState("RUNNING", p)
    assert running.describe(now=1060.0) == (
        "3 of 10 trials done, 2 running, 1 failed - about 9 min left (reported 1 min ago)"
    )
    assert running.describe(now=1700.0).startswith("3 of 10 trials done, 2 running, 1 failed - due to finish now")
    assert running.describe(now=1700.0).endswith("is the study's driver still running?")  # 700 s without a report
    early = StudyState("RUNNING", Progress(0, 2, 0, 10, None, 1000.0))
    assert "time left: known once a trial finishes" in early.describe(now=1000.0)
    assert StudyState("FINISHED", p).describe(now=9e9) == "study finished: 3 of 10 trials done, 1 failed"
    assert StudyState("KILLED", p).describe().startswith("study stopped:")
    assert StudyState("FINISHED", None).describe() == ""


def test_tracker_writes_progress_the_reader_reads_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "progress")
    study_run, _ = tracker.start_study("key-1", "a study", {}, {names.TAG_KIND: names.KIND_STUDY})
    source = MlflowResults(uri)
    assert source.state(study_run) == StudyState("RUNNING", None)  # no report yet
    tracker.set_progress({"done": 1, "running": 2, "failed": 0, "total": 8, "eta_seconds": 90.0, "updated": 50.0})
    tracker.set_progress({"done": 2, "running": 2, "failed": 0, "total": 8, "eta_seconds": 60.0, "updated": 80.0})
    assert source.state(study_run) == StudyState("RUNNING", Progress(2, 2, 0, 8, 60.0, 80.0))  # the last one
    with pytest.raises(ValueError, match="'total' must be an integer >= 0, got '8'"):
        tracker.set_progress({"done": 1, "running": 0, "failed": 0, "total": "8"})
    tracker.finish_study()
    assert source.state(study_run).describe() == "study finished: 2 of 8 trials done, 0 failed"


def _kind(uri: str, name: str) -> str | None:
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    assert exp is not None
    return exp.tags.get(names.TAG_EXPERIMENT_KIND)


def test_experiments_are_tagged_as_model_training(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    Tracker(uri, "new")  # created by the platform: tagged at creation
    assert _kind(uri, "new") == "custom_model_development"
    client.create_experiment("older")  # made before the tag existed
    Tracker(uri, "older", create=False)  # a read-only tracker (status, report) writes nothing
    assert _kind(uri, "older") is None
    Tracker(uri, "older")
    assert _kind(uri, "older") == "custom_model_development"
    client.create_experiment("chosen", tags={names.TAG_EXPERIMENT_KIND: "genai_development"})
    Tracker(uri, "chosen")  # a kind someone set on purpose is left alone
    assert _kind(uri, "chosen") == "genai_development"
