"""Shared fixtures: a small phantom cohort written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from salient.platform.cohort.phantom import write_phantom_cohort
from salient.platform.study.schema import PhantomSpec

REPO = Path(__file__).resolve().parents[1]
SMALL_PHANTOM = PhantomSpec(n_subjects=12, n_positive=6, shape=(48, 48, 12), spacing=(8.0, 8.0, 10.0), seed=3)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_cohort(SMALL_PHANTOM, out)
    return out


def pytest_configure(config: pytest.Config) -> None:
    # The trial workers' torch setup (salient.platform.torch_runtime.configure_torch): oneDNN on,
    # with its broken AVX-512 1x1 backward kernel routed around; the threads pytest already has.
    import torch
    from salient.platform.torch_runtime import configure_torch

    configure_torch(torch.get_num_threads())
