"""MLflow tracking (`salient.platform.tracking.Tracker`) against a real embedded MLflow store.

Resume is only safe if logging is idempotent: a study found again by its key, a trial logged once
however often the driver retries, a half-logged trial (the driver was killed while logging it)
replaced rather than kept next to the real one. Each rule is checked by reading the store back
with a plain ``MlflowClient`` (tag names as the README's "MLflow layout" documents them), not
through the tracker under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from salient.platform.tracking import Tracker

STUDY_TAG, TRIAL_TAG = "salient.study_key", "salient.trial_key"


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating one costs seconds); each test uses its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"exp_{request.node.name}"[:200]


def _runs(uri: str, experiment: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], run_view_type=view, max_results=1000))


def _children(uri: str, experiment: str, trial_key: str) -> list:
    return [r for r in _runs(uri, experiment) if r.data.tags.get(TRIAL_TAG) == trial_key]


def test_start_study_is_idempotent(uri: str, experiment: str) -> None:
    first = Tracker(uri, experiment)
    run_id, resumed = first.start_study("study-key-1", "dose", {"seed": 0, "dose_grid": [0, 1]}, {"kind": "study"})
    assert not resumed
    first.finish_study("KILLED")  # the driver died
    again = Tracker(uri, experiment)  # a new driver process
    run_id2, resumed2 = again.start_study("study-key-1", "dose", {"seed": 0, "dose_grid": [0, 1]}, {"kind": "study"})
    assert (run_id2, resumed2) == (run_id, True)
    parents = [r for r in _runs(uri, experiment) if r.data.tags.get(STUDY_TAG) == "study-key-1"]
    assert [r.info.run_id for r in parents] == [run_id]
    assert parents[0].info.status == "RUNNING"  # resumed studies run again
    assert parents[0].data.params == {"seed": "0", "dose_grid": "[0, 1]"}
    other, resumed3 = Tracker(uri, experiment).start_study("study-key-2", "dose", {}, {})
    assert other != run_id and not resumed3


def test_log_trial_twice_keeps_one_child_run(uri: str, experiment: str) -> None:
    tracker = Tracker(uri, experiment)
    parent, _ = tracker.start_study("s", "study", {}, {})
    rid, new = tracker.log_trial("trial-a", "trial_0000", {"dose": 1.0}, {"auprc_p0.05": 0.4}, {"salient.split": "f1"})
    assert new
    rid2, new2 = tracker.log_trial(
        "trial-a", "trial_0000", {"dose": 1.0}, {"auprc_p0.05": 0.4}, {"salient.split": "f1"}
    )
    assert (rid2, new2) == (rid, False)
    # after a restart of the driver, too
    resumed = Tracker(uri, experiment)
    resumed.start_study("s", "study", {}, {})
    rid3, new3 = resumed.log_trial("trial-a", "trial_0000", {"dose": 1.0}, {"auprc_p0.05": 0.4}, {})
    assert (rid3, new3) == (rid, False)
    (child,) = _children(uri, experiment, "trial-a")
    assert child.info.run_id == rid and child.info.status == "FINISHED"
    assert child.data.tags[MLFLOW_PARENT_RUN_ID] == parent  # a child of the study run
    assert child.data.tags["salient.split"] == "f1"
    assert child.data.metrics == {"auprc_p0.05": 0.4} and child.data.params == {"dose": "1.0"}
    assert resumed.logged_trials() == {"trial-a": rid}


def test_the_same_trial_key_in_another_study_is_another_run(uri: str, experiment: str) -> None:
    one = Tracker(uri, experiment)
    p1, _ = one.start_study("study-1", "one", {}, {})
    r1, _ = one.log_trial("shared-trial", "t", {}, {"m": 1.0}, {})
    two = Tracker(uri, experiment)
    p2, _ = two.start_study("study-2", "two", {}, {})
    r2, new = two.log_trial("shared-trial", "t", {}, {"m": 2.0}, {})
    assert new and r2 != r1
    parents = {r.data.tags[MLFLOW_PARENT_RUN_ID] for r in _children(uri, experiment, "shared-trial")}
    assert parents == {p1, p2}


def test_a_half_logged_child_is_deleted_and_logged_again(uri: str, experiment: str) -> None:
    tracker = Tracker(uri, experiment)
    parent, _ = tracker.start_study("s", "study", {}, {})
    # What a driver killed in the middle of log_trial leaves: a RUNNING child with partial data.
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    exp_id = exp.experiment_id
    stale = client.create_run(exp_id, run_name="trial_0000", tags={MLFLOW_PARENT_RUN_ID: parent, TRIAL_TAG: "trial-b"})
    client.log_metric(stale.info.run_id, "auprc_p0.05", 0.1)
    assert client.get_run(stale.info.run_id).info.status == "RUNNING"

    rid, new = tracker.log_trial("trial-b", "trial_0000", {"dose": 2.0}, {"auprc_p0.05": 0.5, "auroc": 0.7}, {})
    assert new and rid != stale.info.run_id
    (child,) = _children(uri, experiment, "trial-b")
    assert child.info.run_id == rid and child.info.status == "FINISHED"
    assert child.data.metrics == {"auprc_p0.05": 0.5, "auroc": 0.7}
    assert client.get_run(stale.info.run_id).info.lifecycle_stage == "deleted"
    assert tracker.logged_trials() == {"trial-b": rid}


def test_a_finished_child_of_a_killed_driver_is_kept(uri: str, experiment: str) -> None:
    tracker = Tracker(uri, experiment)
    parent, _ = tracker.start_study("s", "study", {}, {})
    rid, _ = tracker.log_trial("trial-c", "trial_0000", {}, {"auprc": 0.3}, {})
    tracker.finish_study("KILLED")
    resumed = Tracker(uri, experiment)
    assert resumed.start_study("s", "study", {}, {}) == (parent, True)
    assert resumed.logged_trials() == {"trial-c": rid}
    assert resumed.log_trial("trial-c", "trial_0000", {}, {"auprc": 0.3}, {}) == (rid, False)
    assert len(_runs(uri, experiment, ViewType.ALL)) == 2  # parent + one child, nothing deleted


def test_non_finite_metrics_are_dropped(uri: str, experiment: str) -> None:
    tracker = Tracker(uri, experiment)
    tracker.start_study("s", "study", {}, {})
    metrics = {"auprc": 0.25, "auroc": 1, "nan": math.nan, "inf": math.inf, "neg_inf": -math.inf}
    tracker.log_trial("trial-d", "t", {}, metrics, {})
    (child,) = _children(uri, experiment, "trial-d")
    assert child.data.metrics == {"auprc": 0.25, "auroc": 1.0}


def test_long_params_are_cut_to_the_mlflow_limit(uri: str, experiment: str) -> None:
    long = "x" * 2 * MAX_PARAM_VAL_LENGTH + "END"
    tracker = Tracker(uri, experiment)
    parent, _ = tracker.start_study("s", "study", {"resolved_grid": long, "short": "ok"}, {})
    tracker.log_trial("trial-e", "t", {"detector.widths": long, "dose": 1}, {"m": 1.0}, {})
    client = MlflowClient(tracking_uri=uri)
    for params in (client.get_run(parent).data.params, _children(uri, experiment, "trial-e")[0].data.params):
        value = params.get("resolved_grid", params.get("detector.widths"))
        assert value is not None and len(value) == MAX_PARAM_VAL_LENGTH
        assert long.startswith(value.rstrip("."))  # a prefix of the real value, marked as cut
        assert not value.endswith("END")
    assert client.get_run(parent).data.params["short"] == "ok"
    assert _children(uri, experiment, "trial-e")[0].data.params["dose"] == "1"


def test_artifacts_are_logged_with_the_child(uri: str, experiment: str, tmp_path: Path) -> None:
    tracker = Tracker(uri, experiment, artifact_location=(tmp_path / "art").as_uri())
    tracker.start_study("s", "study", {}, {})
    result = tmp_path / "trial_result.json"
    result.write_text("{}")
    rid, _ = tracker.log_trial("trial-f", "t", {}, {"m": 1.0}, {}, artifacts=(result, tmp_path / "missing.png"))
    names = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(rid)}
    assert names == {"trial_result.json"}  # a missing file is skipped, not an error


def test_the_newest_study_run_of_a_name_is_found_whatever_its_key(uri: str, experiment: str) -> None:
    """`report`/`status` fall back to the newest study run of the study's name (another version of
    the file or code): newest by start time, only study runs (not trials, not other names)."""
    import time

    tracker = Tracker(uri, experiment)
    assert tracker.newest_study_run("dose") is None  # nothing logged yet
    old, _ = Tracker(uri, experiment).start_study("key-old", "dose", {}, {"salient.kind": "study"})
    time.sleep(0.01)  # MLflow's start times are in milliseconds
    new, _ = (newer := Tracker(uri, experiment)).start_study("key-new", "dose", {}, {"salient.kind": "study"})
    newer.log_trial("trial-key", "dose", {"dose": 1}, {"auprc": 0.5}, {}, [])  # a child named like the study
    time.sleep(0.01)
    Tracker(uri, experiment).start_study("key-other", "other_study", {}, {"salient.kind": "study"})
    found = Tracker(uri, experiment).newest_study_run("dose")
    assert found is not None and found.info.run_id == new != old
