"""The live terminal view of a running study: one row per trial, a summary line with an ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text
from salient.platform.study.plan import Plan

__all__ = ["TrialProgress"]


@dataclass
class TrialProgress:
    """The live terminal view: one row per trial, a summary line with counts and an ETA."""

    plan: Plan
    started: float = field(default_factory=time.time)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    def event(self, tune_id: str, status: str, info: dict[str, Any]) -> None:
        row = self.rows.setdefault(tune_id, {"cell": info.get("cell", "?"), "stages": []})
        row["status"] = status
        if info.get("stage") and info["stage"] != "done":
            row["stages"].append(info["stage"] + (" (cached)" if info.get("reused") else ""))

    def render(self) -> Table:
        total = self.plan.n_trials
        done = sum(r["status"] == "done" for r in self.rows.values())
        running = sum(r["status"] in ("running", "retrying") for r in self.rows.values())
        failed = sum(r["status"] == "failed" for r in self.rows.values())
        elapsed = time.time() - self.started
        eta = "?"
        if done:
            eta = f"{elapsed / done * max(total - done, 0):.0f}s"
        table = Table(
            title=f"trials: {done}/{total} done, {running} running, {failed} failed; elapsed {elapsed:.0f}s, ETA {eta}"
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
