"""The MLflow reader the dashboards use: studies, typed results tables, scores, training histories."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import Store
from mlflow.tracking import MlflowClient
from salient.platform.results import MlflowResults, parse_param
from study_data import STUDY_PARAMS, make_study, train_histories


def test_parse_param_restores_types() -> None:
    assert parse_param("6") == 6 and isinstance(parse_param("6"), int)
    assert parse_param("2.0") == 2.0 and isinstance(parse_param("2.0"), float)
    assert parse_param("1e-3") == 1e-3
    assert parse_param("True") is True and parse_param("False") is False
    assert parse_param("cosine") == "cosine"


def test_reader_lists_studies_newest_first_and_reads_their_trials(store: Store) -> None:
    source = MlflowResults(store.uri)
    studies = source.studies()
    assert [s.run_id for s in studies] == [store.two_seeds, store.null, store.one_seed]
    assert studies[0].label.startswith("two_seeds (dash_tests, finished, ")
    frame = source.results(store.two_seeds)
    assert len(frame) == 8 and frame.attrs["params"] == ["dose", "repeat", "seed_size"]
    assert frame["seed_size"].tolist().count(10) == 4 and frame["dose"].dtype.kind == "f"
    assert {"auprc_p0.05", "auprc_p0.05_ci_low", "pool_mask_dice", "run_id", "trial"} <= set(frame.columns)
    experiment = MlflowClient(tracking_uri=store.uri).get_experiment_by_name("dash_tests")
    assert experiment is not None and set(frame["experiment_id"]) == {experiment.experiment_id}  # for UI links
    assert source.study_params(store.two_seeds) == STUDY_PARAMS
    assert source.preview(frame["run_id"].iloc[0]) is None  # no preview.npz logged for these trials
    scores = source.scores(frame)
    assert scores is not None and set(scores["trial"]) == set(frame["trial"])
    expected = make_study()[1]
    mine = scores[scores["trial"] == "s6_d2"].sort_values(["role", "subject"]).reset_index(drop=True)
    theirs = expected[expected["trial"] == "s6_d2"].sort_values(["role", "subject"]).reset_index(drop=True)
    assert mine["score"].round(9).tolist() == theirs["score"].round(9).tolist()  # the per-subject scores, read back


def test_reader_returns_every_step_of_the_training_histories(store: Store) -> None:
    source = MlflowResults(store.uri)
    frame = source.results(store.two_seeds)
    histories = source.histories(frame)
    assert histories is not None and list(histories.columns) == ["run_id", "trial", "stage", "step", "value"]
    expected = train_histories(make_study()[0])
    got = histories.drop(columns="run_id").sort_values(["trial", "stage", "step"]).reset_index(drop=True)
    want = expected.sort_values(["trial", "stage", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)  # every step, not only the last value
    run_of = dict(zip(frame["trial"], frame["run_id"], strict=True))
    assert (histories["run_id"] == histories["trial"].map(run_of)).all()
    last = frame.loc[frame["trial"] == "s6_d2", "train_loss.detector"].item()
    assert last == pytest.approx(1.2 * 0.42)  # the run's metric is the last value
    assert source.histories(source.results(store.one_seed)) is None  # a study that logged none
