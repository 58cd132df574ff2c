"""The Dash app: pick a study, see its curves, tables and galleries; refreshes while it runs.

The app reads through a :class:`ResultsSource` (the platform passes its MLflow reader), so this
module knows nothing about MLflow. It binds 127.0.0.1 unless told otherwise (see ``serve``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import dash
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from salient.dashboards.views import StudyView, build_view

__all__ = ["ResultsSource", "create_app", "serve"]

log = logging.getLogger(__name__)
REFRESH_MS = 5000


class StudyLike(Protocol):
    run_id: str

    @property
    def label(self) -> str: ...


class ResultsSource(Protocol):
    """What the app reads: studies, one study's results table and params, a trial's preview."""

    def studies(self) -> Sequence[StudyLike]: ...

    def results(self, study_run_id: str) -> pd.DataFrame: ...

    def study_params(self, study_run_id: str) -> Mapping[str, Any]: ...

    def preview(self, trial_run_id: str) -> Mapping[str, np.ndarray] | None: ...

    def scores(self, results: pd.DataFrame) -> pd.DataFrame | None:
        """Per-subject scores of the given trials (``trial, role, subject, label, score, ...``)."""
        ...


def _table(title: str, frame: pd.DataFrame) -> html.Div:
    head = html.Tr([html.Th(str(c)) for c in frame.columns])
    body = [html.Tr([html.Td(str(v)) for v in row]) for row in frame.itertuples(index=False)]
    return html.Div([html.H3(title), html.Table([html.Thead(head), html.Tbody(body)], className="results")])


def _render(view: StudyView) -> list[Any]:
    out: list[Any] = []
    if view.findings:
        out.append(html.H2("Findings"))
        out.append(html.Ul([html.Li(f.sentence(), className="finding") for f in view.findings]))
    out += [html.P(note, className="note") for note in view.notes]
    for title, frame in view.tables.items():
        out.append(_table(title, frame))
    for fig_id, fig in view.figures.items():
        out.append(dcc.Graph(id={"type": "figure", "name": fig_id}, figure=fig))
    return out


def preview_for(source: ResultsSource, results: pd.DataFrame) -> Mapping[str, np.ndarray] | None:
    """The preview of the study's highest-dose trial (the largest synthetic sample), if any."""
    if results.empty or "run_id" not in results.columns:
        return None
    ordered = results.sort_values("dose", ascending=False) if "dose" in results.columns else results
    for run_id in ordered["run_id"]:
        if (found := source.preview(str(run_id))) is not None:
            return found
    return None


def create_app(source: ResultsSource, title: str = "SALIENT dose response") -> dash.Dash:
    app = dash.Dash(__name__, title=title)
    app.layout = html.Div(
        [
            html.H1(title),
            dcc.Dropdown(id="study", placeholder="pick a study", clearable=False),
            html.Div(id="status", className="status"),
            dcc.Loading(html.Div(id="content")),
            dcc.Interval(id="tick", interval=REFRESH_MS),
            dcc.Store(id="rendered"),  # which study and trials the page shows: redraw only on change
        ]
    )

    @app.callback(
        Output("study", "options"), Output("study", "value"), Input("tick", "n_intervals"), State("study", "value")
    )
    def list_studies(_: int | None, current: str | None) -> tuple[list[dict[str, str]], str | None]:
        studies = source.studies()
        options = [{"label": s.label, "value": s.run_id} for s in studies]
        if current is None and studies:
            current = studies[0].run_id
        return options, current

    @app.callback(
        Output("content", "children"),
        Output("status", "children"),
        Output("rendered", "data"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("rendered", "data"),
    )
    def show(study: str | None, _: int | None, shown: str | None) -> tuple[list[Any], str, str]:
        if not study:
            return [], "no study in this tracking store yet", ""
        results = source.results(study)
        key = study + ":" + ",".join(sorted(map(str, results.get("run_id", []))))
        if key == shown:  # nothing new: keep the page (and the user's zoom) as it is
            raise PreventUpdate
        status = f"study {study}: {len(results)} finished trial(s)"
        try:
            view = build_view(results, source.study_params(study), preview_for(source, results), source.scores(results))
        except ValueError as exc:  # a results table the analysis cannot read: say so on the page
            log.warning("study %s: %s", study, exc)
            return [html.P(str(exc), className="error")], status + "; cannot analyse them", key
        return _render(view), status, key

    return app


def serve(app: dash.Dash, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Run the app's server (blocking). Loopback by default: results are not for the network."""
    app.run(host=host, port=port, debug=False)
