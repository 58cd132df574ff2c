"""From a point in a figure to the MLflow run behind it.

Every point a figure draws for trials carries their run ids in ``customdata``: ``[ids, url]``,
``ids`` the run ids joined by ", " (several when a point is a mean over repeats) and ``url`` the
MLflow UI page of the first one, or "" when no UI address was given. Hover shows the ids; the app
and the report open ``url`` on click, or show the id to copy when there is none.

MLflow's UI routes runs as ``<ui>/#/experiments/<experiment id>/runs/<run id>`` (a hash router;
checked in MLflow 3.17's UI bundle), so the results table carries each run's experiment id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import quote, urlparse

import pandas as pd

__all__ = [
    "EXPERIMENT_COLUMN",
    "HOVER_RUN",
    "RUN_COLUMN",
    "normalise_ui_url",
    "point_data",
    "run_links",
    "run_url",
    "runs_by",
]

RUN_COLUMN = "run_id"
EXPERIMENT_COLUMN = "experiment_id"
#: Hover text line naming a point's run(s); pair it with :func:`point_data` as ``customdata``.
HOVER_RUN = "<br>run %{customdata[0]}"


def normalise_ui_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; ValueError naming the value otherwise."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ValueError(
            f"mlflow_ui must be the MLflow UI's address, like http://127.0.0.1:5000 (no query or #), got {url!r}"
        )
    return url.strip().rstrip("/")


def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return (
        f"{normalise_ui_url(ui)}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(str(run_id), safe='')}"
    )


def run_links(results: pd.DataFrame, ui: str | None) -> dict[str, str]:
    """``run id -> UI page`` for every trial of ``results`` (empty without a UI address or the
    ``run_id`` / ``experiment_id`` columns)."""
    if not ui or RUN_COLUMN not in results.columns or EXPERIMENT_COLUMN not in results.columns:
        return {}
    pairs = results[[RUN_COLUMN, EXPERIMENT_COLUMN]].dropna()
    return {
        str(r): run_url(ui, str(e), str(r)) for r, e in zip(pairs[RUN_COLUMN], pairs[EXPERIMENT_COLUMN], strict=True)
    }


def point_data(runs: Iterable[Sequence[str]], links: Mapping[str, str]) -> list[list[str]] | None:
    """``customdata`` for points whose trials are ``runs`` (one sequence of run ids per point);
    None when no point has a run (a results table without run ids)."""
    rows = [list(map(str, r)) for r in runs]
    if not any(rows):
        return None
    return [[", ".join(r) if r else "-", links.get(r[0], "") if r else ""] for r in rows]


def runs_by(results: pd.DataFrame, keys: Sequence[str]) -> dict[tuple[object, ...], list[str]]:
    """Run ids per value of ``keys`` (ordered by repeat when there is one); empty without run ids."""
    if RUN_COLUMN not in results.columns or any(k not in results.columns for k in keys):
        return {}
    frame = results.sort_values("repeat", kind="stable") if "repeat" in results.columns else results
    out: dict[tuple[object, ...], list[str]] = {}
    for row in frame[[*keys, RUN_COLUMN]].itertuples(index=False):
        out.setdefault(tuple(row[:-1]), []).append(str(row[-1]))
    return out
