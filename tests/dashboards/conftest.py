"""Shared fixture for the dashboard tests: an MLflow store holding two studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from study_data import log_study, make_study


@pytest.fixture(scope="session")
def two_studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """``(tracking URI, id of a one-seed-size study, id of a two-seed-size study)``."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    small = log_study(client, "dash_tests", "one_seed", *make_study(seed_sizes=(6,)))
    large = log_study(client, "dash_tests", "two_seeds", *make_study())
    return uri, small, large
