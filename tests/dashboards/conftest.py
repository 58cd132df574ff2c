"""Shared fixture for the dashboard tests: an MLflow store holding three studies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from study_data import NULL_LIFTS, log_study, make_study, train_histories


@dataclass(frozen=True)
class Store:
    """A tracking store and its studies' run ids (newest first: two_seeds, null, one_seed)."""

    uri: str
    one_seed: str  # seed size 6 only
    two_seeds: str  # seed sizes 6 and 10, with training histories
    null: str  # seed size 6, no effect at any dose


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    one = log_study(client, "dash_tests", "one_seed", *make_study(seed_sizes=(6,)))
    null = log_study(client, "dash_tests", "null_study", *make_study(seed_sizes=(6,), lifts=NULL_LIFTS, noise=0.3))
    results, scores = make_study()
    two = log_study(client, "dash_tests", "two_seeds", results, scores, train_histories(results))
    return Store(uri, one, two, null)
