"""What a running study shows: a live table on a terminal, plain lines everywhere else.

On a terminal, Rich's live table (one row per trial, a summary line with an ETA) redraws in
place. Where stdout is a file - ``nohup``, a batch scheduler's log - a live display prints nothing
until the study ends, so a user watching the log saw no progress at all (issue #17 item 5).
There, :class:`PlainProgress` prints one line per trial start, stage finish, retry, failure and
trial end, each stamped with the elapsed time, and the counts and ETA on every trial end.
:func:`progress_view` picks one for the console it is given.

Events are ``(tune_id, status, info)``: ``status`` is ``running``, ``retrying``, ``failed`` or
``done``; ``info`` has ``cell`` (the plan's trial id) and, after a stage, ``stage``, ``reused`` and
optionally ``seconds``. An orchestrator that knows when a stage starts may send ``phase: "start"``
with the stage; such an event prints a start line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from salient.platform.study.plan import Plan

__all__ = ["EventSink", "PlainProgress", "TrialProgress", "progress_view"]

#: Receives one trial event: ``(tune_id, status, info)``.
EventSink = Callable[[str, str, dict[str, Any]], None]


def _eta(elapsed: float, done: int, failed: int, total: int) -> str:
    """Seconds left at the pace of the finished trials so far (``?`` before the first one ends);
    failed trials are not run again in this run, so they are not left to do."""
    return f"{elapsed / done * max(total - done - failed, 0):.0f}s" if done else "?"


@dataclass
class TrialProgress:
    """The live terminal view: one row per trial, a summary line with counts and an ETA."""

    plan: Plan
    started: float = field(default_factory=time.time)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        row = self.rows.setdefault(tune_id, {"cell": info.get("cell", "?"), "stages": []})
        row["status"] = status
        if info.get("stage") and info["stage"] != "done" and info.get("phase") != "start":
            row["stages"].append(info["stage"] + (" (cached)" if info.get("reused") else ""))

    def render(self) -> Table:
        total = self.plan.n_trials
        done = sum(r["status"] == "done" for r in self.rows.values())
        running = sum(r["status"] in ("running", "retrying") for r in self.rows.values())
        failed = sum(r["status"] == "failed" for r in self.rows.values())
        elapsed = time.time() - self.started
        table = Table(
            title=f"trials: {done}/{total} done, {running} running, {failed} failed; elapsed {elapsed:.0f}s, "
            f"ETA {_eta(elapsed, done, failed, total)}"
        )
        for col in ("trial", "values", "status", "stages"):
            table.add_column(col, overflow="fold")
        cells = {t.trial_id: t for t in self.plan.trials}
        for row in sorted(self.rows.values(), key=lambda r: r["cell"]):
            params = cells[row["cell"]].params if row["cell"] in cells else {}
            table.add_row(
                row["cell"],
                Text(", ".join(f"{k}={v}" for k, v in params.items())),
                row["status"],
                " > ".join(row["stages"][-6:]),
            )
        return table


class PlainProgress:
    """One plain line per event worth a line, for logs that are not a terminal.

    Args:
        plan: the study's plan (trial count, each trial's values).
        write: prints one line (the caller flushes it, so a log shows it at once).
        clock: seconds from an arbitrary origin (injectable so tests can pin the times).
    """

    def __init__(self, plan: Plan, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.plan, self.write, self.clock = plan, write, clock
        self.started = clock()
        self.status: dict[str, str] = {}
        self.cells = {t.trial_id: t for t in plan.trials}

    def _line(self, text: str) -> None:
        self.write(f"[{self.clock() - self.started:6.0f}s] {text}")

    def _values(self, cell: str) -> str:
        spec = self.cells.get(cell)
        return f" ({', '.join(f'{k}={v}' for k, v in spec.params.items())})" if spec is not None else ""

    def _counts(self) -> str:
        total = self.plan.n_trials
        done = sum(s == "done" for s in self.status.values())
        failed = sum(s == "failed" for s in self.status.values())
        elapsed = self.clock() - self.started
        return f"{done}/{total} done, {failed} failed; elapsed {elapsed:.0f}s, ETA {_eta(elapsed, done, failed, total)}"

    def event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        cell = str(info.get("cell", "?"))
        before = self.status.get(tune_id)
        self.status[tune_id] = status
        stage = info.get("stage")
        if status == "running" and before is None:  # also when its first news is a finished stage
            self._line(f"{cell}{self._values(cell)} started")
        if status == "running" and stage and stage != "done":
            if info.get("phase") == "start":
                self._line(f"{cell}: {stage} started")
                return
            took = f" in {float(info['seconds']):.1f}s" if info.get("seconds") is not None else ""
            how = "reused from the stage cache" if info.get("reused") else f"trained{took}"
            self._line(f"{cell}: {stage} done ({how})")
        elif status == "retrying" and before != "retrying":
            self._line(f"{cell}: failed, retrying from its last finished stage")
        elif status == "failed" and before != "failed":
            self._line(f"{cell}: failed; {self._counts()}")
        elif status == "done" and before != "done":
            self._line(f"{cell} done; {self._counts()}")


@contextmanager
def progress_view(console: Console, plan: Plan) -> Iterator[EventSink]:
    """The event sink for a study's trials: a live table on a terminal, plain lines otherwise.

    Args:
        console: where the study prints (``console.is_terminal`` decides the view).
        plan: the study's plan.
    """
    if console.is_terminal and not console.is_dumb_terminal:
        progress = TrialProgress(plan)
        with Live(progress.render(), console=console, refresh_per_second=1, transient=False) as live:

            def on_event(tune_id: str, status: str, info: dict[str, Any]) -> None:
                progress.event(tune_id, status, info)
                live.update(progress.render())

            yield on_event
        return

    def write(line: str) -> None:
        # soft_wrap: a log line is never broken at the console's guessed width; Text: no markup.
        console.print(Text(line), soft_wrap=True)
        console.file.flush()

    plain = PlainProgress(plan, write)
    write(f"{plan.n_trials} trial(s) to run; progress is printed as lines (stdout is not a terminal)")
    yield plain.event
