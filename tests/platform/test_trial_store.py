"""The platform's own records of finished work: the trial store (JSON, atomic) and the persisted
Optuna studies (issue #15 item 1, #17 item 4)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from salient.dashboards import names
from salient.platform.optuna_store import optuna_study_name, settle_orphans, storage_url, trial_by_values
from salient.platform.trial_store import TrialStore

KEY = "0123456789abcdef0123"


def _result(key: str = KEY, **changes: object) -> dict[str, object]:
    return {
        "trial_key": key,
        "params": {"dose": 1.0},
        "metrics": {"auprc": 0.25, "auroc": 0.5},
        "stage_keys": {"detector": "detector/abc"},
        "stages": [{"stage": "detector", "reused": False, "seconds": 1.0, "waited": 0.0}],
        "trial_seconds": 2.0,
        "split": "f00",
        "settings": {"detector.lr": 0.001},
        **changes,
    }


def _fill(payload: dict[str, object]):  # type: ignore[no-untyped-def]
    def fill(folder: Path) -> None:
        (folder / names.ARTIFACT_RESULT).write_text(json.dumps(payload))
        (folder / names.ARTIFACT_PLAN).write_text("{}")

    return fill


def test_a_written_trial_reads_back_as_its_outcome(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "trials")
    assert not store.has(KEY) and store.outcome(KEY, "trial_0001", 0) is None
    entry = store.write(KEY, _fill(_result()))
    assert entry == tmp_path / "trials" / KEY and store.has(KEY)
    o = store.outcome(KEY, "trial_0001", 3)
    assert o is not None
    assert (o.trial_id, o.trial_key, o.repeat) == ("trial_0001", KEY, 3)
    assert o.metrics == {"auprc": 0.25, "auroc": 0.5} and o.params == {"dose": 1.0}
    assert o.checkpoint_dir == str(entry) and (entry / names.ARTIFACT_PLAN).is_file()
    assert o.trial_seconds == 2.0 and o.split == "f00" and o.settings == {"detector.lr": 0.001}
    assert [p.name for p in (tmp_path / "trials").iterdir()] == [KEY]  # no temporary folder left


def test_a_write_that_dies_leaves_no_entry(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "trials")

    def dies(folder: Path) -> None:
        (folder / names.ARTIFACT_RESULT).write_text(json.dumps(_result()))
        raise KeyboardInterrupt  # killed after the result, before the rename

    with pytest.raises(KeyboardInterrupt):
        store.write(KEY, dies)
    assert not store.has(KEY) and list((tmp_path / "trials").iterdir()) == []
    with pytest.raises(ValueError, match=r"needs trial_result\.json"):
        store.write(KEY, lambda folder: None)
    assert not store.has(KEY)


@pytest.mark.parametrize("key", ["../etc", "ABCDEF0123", "0123", "a/b0123456", ""])
def test_keys_that_are_not_hex_digests_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="trial_key must be 8-64 lowercase hex digits"):
        TrialStore(tmp_path).entry(key)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "unreadable"),
        (json.dumps([1, 2]), "not a JSON object"),
        (json.dumps(_result(key="ffffffffffffffffffff")), "written for trial"),
        (json.dumps(_result(metrics={"auprc": "high"})), "metric 'auprc' is not a number"),
        (json.dumps(_result(metrics={})), "no metrics"),
        (json.dumps(_result(stages="all")), "stages is not a list"),
    ],
)
def test_a_malformed_or_foreign_entry_is_ignored_and_the_trial_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, why: str
) -> None:
    store = TrialStore(tmp_path)
    (tmp_path / KEY).mkdir()
    (tmp_path / KEY / names.ARTIFACT_RESULT).write_text(text)
    with caplog.at_level(logging.WARNING, logger="salient.platform.trial_store"):
        assert store.outcome(KEY, "trial_0000", 0) is None
    assert why in caplog.text and "runs again" in caplog.text


def test_optuna_study_names_and_storage(tmp_path: Path) -> None:
    assert optuna_study_name("demo", "0123456789abcdef") == "demo-01234567"
    assert optuna_study_name("demo", "0123456789abcdef", "trial_0002") == "demo-01234567.trial_0002"
    assert storage_url(tmp_path) == f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    with pytest.raises(ValueError, match="non-empty"):
        optuna_study_name("", "k")


def test_orphaned_trials_are_completed_with_a_known_result_or_failed(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(tmp_path)
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 0.9)
    finished, lost = study.ask(), study.ask()  # a killed run left these two RUNNING
    finished.suggest_float("x", 0, 1)
    lost.suggest_float("x", 0, 1)
    again = optuna.load_study(study_name="s", storage=url)  # the next run
    known = {0.2: 0.7}  # the platform has the result of the draw x = 0.2
    assert settle_orphans(again, lambda params: known.get(params["x"])) == (1, 1)
    states = {t.params["x"]: (t.state, t.value) for t in optuna.load_study(study_name="s", storage=url).trials}
    assert states == {
        0.1: (optuna.trial.TrialState.COMPLETE, 0.9),
        0.2: (optuna.trial.TrialState.COMPLETE, 0.7),
        0.3: (optuna.trial.TrialState.FAIL, None),
    }
    assert trial_by_values(again, {"x": 0.2}).number == 1  # type: ignore[union-attr]
    assert trial_by_values(again, {"x": 0.5}) is None
