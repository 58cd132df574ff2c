"""The running study's progress on its MLflow study run, for the dashboard (tag ``salient.progress``).

Best effort: a tracking server that is away for a moment must not stop the trials, so a failed
update is logged and the next event tries again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["ProgressTag"]

log = logging.getLogger(__name__)


class ProgressTag:
    """Counts trial events and states them on the study run at most every ``every_s`` seconds
    (and at once when a trial finishes or fails).

    Args:
        tracker: the study's tracker (bound to its study run); needs ``set_progress``.
        total: trials in the plan.
    """

    def __init__(self, tracker: Any, total: int, every_s: float = 10.0):
        self.tracker, self.total, self.every_s = tracker, total, every_s
        self.status: dict[str, str] = {}
        self.started, self.pushed = time.time(), 0.0

    def counts(self) -> dict[str, Any]:
        done = sum(s == "done" for s in self.status.values())
        failed = sum(s == "failed" for s in self.status.values())
        running = sum(s in ("running", "retrying") for s in self.status.values())
        left = max(self.total - done - failed, 0)
        eta = (time.time() - self.started) / done * left if done else None
        return {"done": done, "running": running, "failed": failed, "total": self.total, "eta_seconds": eta}

    def event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        before = self.status.get(tune_id)
        self.status[tune_id] = status
        finished = status in ("done", "failed") and before != status
        if finished or time.time() - self.pushed >= self.every_s:
            self.push()

    def push(self) -> None:
        try:
            self.tracker.set_progress(self.counts())
            self.pushed = time.time()
        except Exception as exc:
            log.debug("could not update the study's progress tag: %s", exc)
