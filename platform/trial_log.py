"""Logging finished trials to MLflow without losing one when the server is away.

The driver hands every finished trial to :meth:`TrialLog.log`. A trial MLflow cannot take (the
server is down or restarting) is kept and retried by :meth:`TrialLog.flush` for a while after the
trials; whatever is still unlogged then is named in a :class:`TrackingUnavailableError` (its
result stays in the trial store, the stage cache and ``studies/NAME/results.csv``, and a rerun logs it
without retraining). Logging is idempotent (a trial already logged is recognised by its key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from salient.dashboards import names
from salient.platform.outcome import TrialOutcome
from salient.platform.stage_cache import StageCache, StageKey
from salient.platform.stages.base import LOSS_HISTORY
from salient.platform.tracking import TRACKING_ERRORS, Tracker

__all__ = ["TrackingUnavailableError", "TrialLog", "short_error"]

#: Trial artifacts copied to MLflow, when the trial wrote them.
ARTIFACTS = (
    names.ARTIFACT_RESULT,
    names.ARTIFACT_PLAN,
    names.ARTIFACT_SAMPLES,
    names.ARTIFACT_PREVIEW,
    names.ARTIFACT_SPLIT,
    names.ARTIFACT_SCORES,
)
RETRY_EVERY_S = 3.0


class TrackingUnavailableError(RuntimeError):
    """Trials finished but MLflow could not take their results (they are kept locally)."""


def short_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


class TrialLog:
    """Args:
    tracker: the study's tracker, bound to its study run.
    provenance: params every trial run gets (git revision, cohort fingerprint, code version).
    say: where to tell the user that MLflow went away or came back (one line each).
    """

    def __init__(
        self,
        tracker: Tracker,
        provenance: Mapping[str, Any],
        say: Callable[[str], None],
        cache: StageCache | None = None,
    ):
        self.tracker, self.provenance, self.say, self.cache = tracker, dict(provenance), say, cache
        self.logged: set[str] = set(tracker.logged_trials())
        self.pending: dict[str, TrialOutcome] = {}  # by trial key, in the order they failed
        self.seconds = 0.0  # spent talking to MLflow

    def params(self, o: TrialOutcome) -> dict[str, Any]:
        """A trial run's params: every resolved setting, the searched values, the repeat, provenance."""
        return {
            **o.settings,
            **o.params,
            names.PARAM_REPEAT: o.repeat,
            **self.provenance,
            **{f"{names.PARAM_STAGE_KEY_PREFIX}{k}": v for k, v in o.stage_keys.items()},
        }

    def curves(self, o: TrialOutcome) -> dict[str, list[float]]:
        """Each stage's training loss curve (from its stage-cache meta) as ``train_loss.<stage>``."""
        out: dict[str, list[float]] = {}
        for stage, key in o.stage_keys.items():
            if self.cache is None:
                break
            stage_key = StageKey(*key.split("/", 1))
            if self.cache.has(stage_key) and (curve := self.cache.meta(stage_key).get(LOSS_HISTORY)):
                out[names.TRAIN_LOSS_PREFIX + stage] = [float(v) for v in curve]
        return out

    def log(self, o: TrialOutcome) -> None:
        """Log one finished trial (once); keep it for :meth:`flush` if MLflow is unavailable."""
        if o.trial_key in self.logged:
            return
        tags = {names.TAG_STAGES: json.dumps(o.stages)[:5000], names.TAG_SPLIT: o.split or "unknown"}
        folder = Path(o.checkpoint_dir) if o.checkpoint_dir else None
        artifacts = [folder / a for a in ARTIFACTS] if folder is not None else []
        start = time.perf_counter()
        try:
            self.tracker.log_trial(
                o.trial_key, o.trial_id, self.params(o), o.metrics, tags, artifacts, histories=self.curves(o)
            )
        except TRACKING_ERRORS as exc:  # the server is down: keep the result, log it later
            if o.trial_key not in self.pending:
                self.pending[o.trial_key] = o
                self.say(
                    f"MLflow unavailable ({short_error(exc)}): trial {o.trial_id} finished and is kept; "
                    "it is logged when the server answers again"
                )
            return
        finally:
            self.seconds += time.perf_counter() - start
        self.logged.add(o.trial_key)
        if self.pending.pop(o.trial_key, None) is not None:
            self.say(f"MLflow is back: trial {o.trial_id} logged")

    def flush(self, wait_s: float, results_file: Path | None) -> None:
        """Retry the kept trials for up to ``wait_s`` seconds; raise naming those still unlogged."""
        deadline = time.time() + wait_s
        while self.pending and time.time() < deadline:
            time.sleep(RETRY_EVERY_S)
            for o in list(self.pending.values()):
                self.log(o)
        if self.pending:
            kept = f"trial store, stage cache, {results_file}" if results_file else "trial store, stage cache"
            raise TrackingUnavailableError(
                f"{len(self.pending)} finished trial(s) could not be logged to MLflow at {self.tracker.uri}: "
                + ", ".join(o.trial_id for o in self.pending.values())
                + f". Their results are kept ({kept}); rerun the same command when the server is back "
                + "to log them (nothing is retrained)"
            )
