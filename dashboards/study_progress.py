"""A running study's progress: one JSON tag on its MLflow study run, written by the driver, read by the dashboard.

Finished trials are child runs in MLflow, so the dashboard can count them; what is running, what
failed, how many trials the study has in all and when it should end only the driver knows. It
states them in one tag (:data:`~salient.dashboards.names.TAG_PROGRESS`) through
``Tracker.set_progress``; the dashboard parses it back here. Both sides use this module, so the
format is defined once, and a malformed tag (an older or newer writer) is shown as "no progress"
instead of breaking the page.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FIELDS", "Progress", "StudyState", "format_duration"]

log = logging.getLogger(__name__)

#: The tag's fields, in the order they are written.
FIELDS = ("done", "running", "failed", "total", "eta_seconds", "updated")
_COUNTS = ("done", "running", "failed", "total")
#: A running study whose driver has not written progress for this long may have died.
STALE_AFTER_S = 600.0
#: MLflow run statuses of a study that is no longer running.
_ENDED = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "stopped"}


def format_duration(seconds: float) -> str:
    """``42`` -> ``"42 s"``, ``300`` -> ``"5 min"``, ``4800`` -> ``"1 h 20 min"`` (rounded, for people)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


@dataclass(frozen=True)
class Progress:
    """Trials done, running and failed out of ``total``; ``eta_seconds`` left as of ``updated``
    (seconds since the epoch); ``eta_seconds`` is None until the driver can estimate it."""

    done: int
    running: int
    failed: int
    total: int
    eta_seconds: float | None
    updated: float

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"progress field {name!r} must be an integer >= 0, got {value!r}")
        if self.done + self.running + self.failed > self.total:
            raise ValueError(
                f"progress: done + running + failed ({self.done} + {self.running} + {self.failed}) "
                f"exceeds total ({self.total})"
            )
        if self.eta_seconds is not None and (
            isinstance(self.eta_seconds, bool)
            or not isinstance(self.eta_seconds, int | float)
            or not math.isfinite(self.eta_seconds)
            or self.eta_seconds < 0
        ):
            raise ValueError(
                f"progress field 'eta_seconds' must be None or a finite number >= 0, got {self.eta_seconds!r}"
            )
        if (
            isinstance(self.updated, bool)
            or not isinstance(self.updated, int | float)
            or not math.isfinite(self.updated)
        ):
            raise ValueError(f"progress field 'updated' must be seconds since the epoch, got {self.updated!r}")

    @classmethod
    def from_mapping(cls, progress: Mapping[str, Any], now: float | None = None) -> Progress:
        """Validate a mapping with the :data:`FIELDS` (``eta_seconds`` optional; ``updated``
        defaults to ``now``, else the current time). Unknown keys are refused: a typo would
        otherwise vanish silently."""
        unknown = sorted(set(progress) - set(FIELDS))
        if unknown:
            raise ValueError(f"progress has unknown field(s) {unknown}; expected {list(FIELDS)}")
        missing = [k for k in _COUNTS if k not in progress]
        if missing:
            raise ValueError(f"progress lacks field(s) {missing}; got {sorted(progress)}")
        updated = progress.get("updated")
        return cls(
            **{k: progress[k] for k in _COUNTS},
            eta_seconds=progress.get("eta_seconds"),
            updated=(time.time() if now is None else now) if updated is None else updated,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> Progress | None:
        """The tag's value back as a :class:`Progress`; None (logged) when it is absent or malformed."""
        if not text:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            if "updated" not in data:
                raise ValueError("no 'updated' field")
            return cls.from_mapping(data)
        except (ValueError, TypeError) as exc:
            log.warning("unreadable study progress %r: %s", text[:200], exc)
            return None

    @property
    def remaining(self) -> int:
        """Trials neither finished nor failed (running ones included)."""
        return self.total - self.done - self.failed


@dataclass(frozen=True)
class StudyState:
    """What the dashboard shows about a study beyond its finished trials: the study run's MLflow
    status and the driver's last progress report (None if it never wrote one)."""

    status: str
    progress: Progress | None

    @property
    def running(self) -> bool:
        return self.status.upper() not in _ENDED

    def describe(self, now: float | None = None) -> str:
        """One line for people: counts, and while the study runs, time left and the report's age."""
        now = time.time() if now is None else now
        p = self.progress
        if p is None:
            return "" if not self.running else "running (the driver reports no progress)"
        counts = f"{p.done} of {p.total} trials done, {p.running} running, {p.failed} failed"
        if not self.running:
            return f"study {_ENDED[self.status.upper()]}: {p.done} of {p.total} trials done, {p.failed} failed"
        age = max(now - p.updated, 0.0)
        if p.eta_seconds is None:
            eta = "time left: known once a trial finishes"
        else:
            left = p.eta_seconds - age
            eta = f"about {format_duration(left)} left" if left > 0 else "due to finish now"
        text = f"{counts} - {eta} (reported {format_duration(age)} ago)"
        if age > STALE_AFTER_S:
            text += "; no report for a while: is the study's driver still running?"
        return text
