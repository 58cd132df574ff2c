"""What the driver gets back for one finished trial (Ray-free, so the driver's bookkeeping and
MLflow logging never import Ray)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from salient.dashboards.names import PARAM_REPEAT

__all__ = ["TrialOutcome"]


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial: its identity, values, metrics, stage keys and events, and where its
    artifacts are (its folder in the trial store)."""

    trial_id: str
    trial_key: str
    repeat: int
    params: dict[str, Any]
    metrics: dict[str, float]
    stage_keys: dict[str, str]
    stages: list[dict[str, Any]]
    checkpoint_dir: str | None
    trial_seconds: float | None = None  # wall time of the trainable that produced the result
    split: str | None = None  # fingerprint of the trial's subject split (same seeds -> same split)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # every resolved stage setting

    def result_row(self) -> dict[str, Any]:
        """The trial as one row of a results table: ``trial``, ``repeat``, its values, its metrics."""
        return {"trial": self.trial_id, PARAM_REPEAT: self.repeat, **self.params, **self.metrics}
