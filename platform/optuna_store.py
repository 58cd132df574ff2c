"""Optuna studies persisted in the output folder, so a sampled search can be opened, watched and
continued (issue #17 item 4).

Every sampled search (a dose study's sampled entries, one Optuna study per grid cell; the
guidance-tuning search) keeps its Optuna study in ``OUTPUT_DIR/optuna.db`` (SQLite), named after
the study: ``<study name>-<study key[:8]>`` (``.<cell>`` for a cell of a dose study). So

    optuna-dashboard sqlite:///OUTPUT_DIR/optuna.db
    optuna.load_study(study_name=NAME, storage="sqlite:///OUTPUT_DIR/optuna.db")

open it, and a rerun loads the same study and draws only the trials still missing: this is how a
sampled study resumes without Ray Tune's pickles. Optuna's RDB storage holds JSON and numbers
(no pickles). Trials a killed run left RUNNING are settled on the next run: COMPLETE with their
objective when the platform has their finished result, FAIL otherwise (their draw is replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OPTUNA_FILE", "optuna_study_name", "settle_orphans", "storage_url", "trial_by_values"]

log = logging.getLogger(__name__)

OPTUNA_FILE = "optuna.db"


def storage_url(output_dir: Path) -> str:
    """The SQLite URL of the output folder's Optuna storage."""
    return f"sqlite:///{(Path(output_dir) / OPTUNA_FILE).resolve()}"


def optuna_study_name(name: str, key: str, part: str | None = None) -> str:
    """``<study name>-<key[:8]>[.<part>]``: the study's name first, so a dashboard lists it readably;
    the key, so a changed study (other search space, other code) starts a new Optuna study."""
    if not name or not key:
        raise ValueError(f"name and key must be non-empty, got {name!r}, {key!r}")
    return f"{name}-{key[:8]}" + (f".{part}" if part else "")


def storage(url: str) -> Any:
    """An Optuna RDB storage (created on first use)."""
    import optuna

    return optuna.storages.RDBStorage(url)


def trial_by_values(study: Any, values: Mapping[str, Any]) -> Any | None:
    """The trial of ``study`` (an ``optuna.Study``) whose sampled params are ``values``, newest first."""
    wanted = dict(values)
    for trial in reversed(study.get_trials(deepcopy=False)):
        if trial.params == wanted:
            return trial
    return None


def settle_orphans(study: Any, objective_of: Callable[[dict[str, Any]], float | None]) -> tuple[int, int]:
    """Trials left RUNNING by a killed run: COMPLETE with ``objective_of(params)`` when that is
    known (the platform finished them), FAIL otherwise. Returns ``(completed, failed)``."""
    import optuna
    from optuna.trial import TrialState

    completed = failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        value = objective_of(dict(trial.params))
        if value is not None:
            study.tell(trial.number, value)
            completed += 1
        else:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed += 1
    if completed or failed:
        log.info("Optuna study %s: %d orphaned trial(s) completed, %d failed", study.study_name, completed, failed)
    return completed, failed
