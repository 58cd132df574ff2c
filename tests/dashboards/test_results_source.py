"""The MLflow reader the dashboards use: studies, typed results tables, missing previews."""

from __future__ import annotations

from salient.platform.results import MlflowResults, parse_param
from study_data import STUDY_PARAMS, make_study


def test_parse_param_restores_types() -> None:
    assert parse_param("6") == 6 and isinstance(parse_param("6"), int)
    assert parse_param("2.0") == 2.0 and isinstance(parse_param("2.0"), float)
    assert parse_param("1e-3") == 1e-3
    assert parse_param("True") is True and parse_param("False") is False
    assert parse_param("cosine") == "cosine"


def test_reader_lists_studies_newest_first_and_reads_their_trials(two_studies: tuple[str, str, str]) -> None:
    uri, one_seed, two_seeds = two_studies
    source = MlflowResults(uri)
    studies = source.studies()
    assert [s.run_id for s in studies] == [two_seeds, one_seed]
    assert studies[0].label.startswith("two_seeds (dash_tests, finished, ")
    frame = source.results(two_seeds)
    assert len(frame) == 8 and frame.attrs["params"] == ["dose", "repeat", "seed_size"]
    assert frame["seed_size"].tolist().count(10) == 4 and frame["dose"].dtype.kind == "f"
    assert {"auprc_p0.05", "auprc_p0.05_ci_low", "pool_mask_dice", "run_id", "trial"} <= set(frame.columns)
    assert source.study_params(two_seeds) == STUDY_PARAMS
    assert source.preview(frame["run_id"].iloc[0]) is None  # no preview.npz logged for these trials
    scores = source.scores(frame)
    assert scores is not None and set(scores["trial"]) == set(frame["trial"])
    expected = make_study()[1]
    mine = scores[scores["trial"] == "s6_d2"].sort_values(["role", "subject"]).reset_index(drop=True)
    theirs = expected[expected["trial"] == "s6_d2"].sort_values(["role", "subject"]).reset_index(drop=True)
    assert mine["score"].round(9).tolist() == theirs["score"].round(9).tolist()  # the per-subject scores, read back
