"""The Dash app: a researcher's cockpit over a tracking store - the answer first, the evidence one click away.

Pick a study: its findings header (what the study found, per seed size, chosen on validation and
reported on test) comes first, then the figures, then the tables collapsed with CSV downloads.
Pick more studies to compare: their curves and gains are overlaid on the same axes. A running
study shows its progress (from the driver's progress tag) and redraws its figures as trials
finish - only then: the page polls every :data:`REFRESH_MS`, and an unchanged study keeps the
user's zoom. Every point carries its MLflow run: hover shows the id; a click opens the run in
the MLflow UI when its address was given, and otherwise shows the id ready to copy.

The app reads through a :class:`ResultsSource` (the platform passes its MLflow reader), so this
module knows nothing about MLflow. It binds 127.0.0.1 unless told otherwise (see ``serve``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import dash
import numpy as np
import pandas as pd
from dash import ALL, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from salient.dashboards.app_parts import csv_name, figure_block, progress_block, render_view
from salient.dashboards.compare import CompareInput, compare_dose_response, compare_gains
from salient.dashboards.links import normalise_ui_url
from salient.dashboards.study_progress import StudyState
from salient.dashboards.views import StudyView, build_view

__all__ = ["REFRESH_MS", "ResultsSource", "create_app", "preview_for", "serve"]

log = logging.getLogger(__name__)
REFRESH_MS = 5000
ASSETS = Path(__file__).with_name("assets")
#: Views kept in memory (per study and set of finished trials): a redraw, a CSV download or a
#: comparison reuses them instead of redoing the significance analysis.
VIEW_CACHE = 16


class StudyLike(Protocol):
    run_id: str
    name: str

    @property
    def label(self) -> str: ...


class ResultsSource(Protocol):
    """What the app reads: studies, one study's results, params and state, a trial's preview,
    per-subject scores and training histories."""

    def studies(self) -> Sequence[StudyLike]: ...

    def results(self, study_run_id: str) -> pd.DataFrame: ...

    def study_params(self, study_run_id: str) -> Mapping[str, Any]: ...

    def preview(self, trial_run_id: str) -> Mapping[str, np.ndarray] | None: ...

    def scores(self, results: pd.DataFrame) -> pd.DataFrame | None:
        """Per-subject scores of the given trials (``trial, role, subject, label, score, ...``)."""
        ...

    def histories(self, results: pd.DataFrame) -> pd.DataFrame | None:
        """Training-loss histories of the given trials (``run_id, trial, stage, step, value``)."""
        ...

    def state(self, study_run_id: str) -> StudyState:
        """The study run's status and its driver's last progress report."""
        ...


def preview_for(source: ResultsSource, results: pd.DataFrame) -> Mapping[str, np.ndarray] | None:
    """The preview of the study's highest-dose trial (the largest synthetic sample), if any."""
    if results.empty or "run_id" not in results.columns:
        return None
    ordered = results.sort_values("dose", ascending=False) if "dose" in results.columns else results
    for run_id in ordered["run_id"]:
        if (found := source.preview(str(run_id))) is not None:
            return found
    return None


def trials_key(study: str, results: pd.DataFrame) -> str:
    """What a study's page depends on: the study and its finished trials."""
    return study + ":" + ",".join(sorted(map(str, results.get("run_id", []))))


def finished_in(key: str | None, study: str) -> int:
    """How many finished trials a :func:`trials_key` of ``study`` lists (0 for another study's)."""
    if not key or not key.startswith(study + ":"):
        return 0
    ids = key.split(":", 1)[1]
    return len(ids.split(",")) if ids else 0


class _Views:
    """A small LRU of built views; one build at a time (two cores, and a refresh and a comparison
    asking for the same study at once must not analyse it twice)."""

    def __init__(self, size: int = VIEW_CACHE):
        self.size = size
        self._views: OrderedDict[str, StudyView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, build: Callable[[], StudyView]) -> StudyView:
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
            view = build()
            self._views[key] = view
            while len(self._views) > self.size:
                self._views.popitem(last=False)
            return view

    def latest(self, study: str) -> StudyView | None:
        with self._lock:
            found = [v for k, v in self._views.items() if k.startswith(study + ":")]
            return found[-1] if found else None


# Clicking a point: its customdata is [run ids, MLflow UI page or ""] (see salient.dashboards.links).
_ON_CLICK = """
function(clicks) {
    const skip = window.dash_clientside.no_update;
    const trig = (window.dash_clientside.callback_context.triggered || [])[0];
    const points = trig && trig.value && trig.value.points;
    const data = points && points.length ? points[0].customdata : null;
    if (!Array.isArray(data) || data.length < 2) { return [skip, skip, skip, skip]; }
    const ids = String(data[0]), url = String(data[1] || "");
    if (url) { window.open(url, "_blank"); }
    return [ids, url, url ? {} : {display: "none"}, false];
}
"""


def _layout(title: str) -> html.Div:
    return html.Div(
        [
            html.Header(
                [
                    html.H1(title),
                    html.Div(
                        dcc.Dropdown(id="study", placeholder="pick a study", clearable=False),
                        className="picker",
                    ),
                    html.Div(
                        dcc.Dropdown(id="compare", placeholder="compare with other studies...", multi=True),
                        className="picker compare",
                    ),
                ],
                className="topbar",
            ),
            html.Main(
                [
                    html.Div(id="status", className="status"),
                    html.Div(id="progress", className="progress"),
                    html.Div(
                        [
                            html.Span("MLflow run of the clicked point:"),
                            dcc.Input(id="run-id", type="text", readOnly=True, value=""),
                            html.A("open in the MLflow UI", id="run-link", href="", target="_blank"),
                        ],
                        id="run-pick",
                        className="run-pick",
                        hidden=True,
                    ),
                    html.Div(id="compare-section"),
                    dcc.Loading(html.Div(id="content")),
                ],
                className="page",
            ),
            dcc.Download(id="download"),
            dcc.Interval(id="tick", interval=REFRESH_MS),
            dcc.Store(id="rendered"),  # which study and trials the page shows: redraw only on change
            dcc.Store(id="compared"),  # the same for the comparison
        ]
    )


def create_app(source: ResultsSource, title: str = "SALIENT dose response", mlflow_ui: str | None = None) -> dash.Dash:
    """The app over ``source``; ``mlflow_ui`` (the MLflow UI's address) makes a click on a point
    open its run there."""
    ui = normalise_ui_url(mlflow_ui) if mlflow_ui else None
    app = dash.Dash(__name__, title=title, assets_folder=str(ASSETS), serve_locally=True)
    app.layout = _layout(title)
    views = _Views()

    def view_of(study: str, results: pd.DataFrame) -> StudyView:
        return views.get(
            trials_key(study, results),
            lambda: build_view(
                results,
                source.study_params(study),
                preview_for(source, results),
                source.scores(results),
                source.histories(results),
                ui,
            ),
        )

    @app.callback(
        Output("study", "options"),
        Output("study", "value"),
        Output("compare", "options"),
        Input("tick", "n_intervals"),
        State("study", "value"),
        State("study", "options"),
    )
    def list_studies(_: int | None, current: str | None, shown: list[dict[str, str]] | None) -> tuple[Any, ...]:
        studies = source.studies()
        options = [{"label": s.label, "value": s.run_id} for s in studies]
        # Set the study only once (the newest): re-setting it would refire every callback reading it.
        value = studies[0].run_id if current is None and studies else dash.no_update
        if options == shown:  # an open dropdown is not redrawn under the user's pointer
            return dash.no_update, value, dash.no_update
        return options, value, options

    @app.callback(
        Output("rendered", "data"),
        Output("status", "children"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("rendered", "data"),
    )
    def poll(study: str | None, _: int | None, shown: str | None) -> tuple[str, str]:
        """Cheap, every tick: has the study's set of finished trials changed? Only then is the
        page redrawn (outside the loading overlay, so a poll never blanks the page)."""
        if not study:
            return "", "no study in this tracking store yet"
        results = source.results(study)
        key = trials_key(study, results)
        if key == shown:  # nothing new: keep the page (and the user's zoom) as it is
            raise PreventUpdate
        return key, f"study {study}: {len(results)} finished trial(s)"

    @app.callback(Output("content", "children"), Input("rendered", "data"), State("study", "value"))
    def show(key: str | None, study: str | None) -> list[Any]:
        if not key or not study:
            return []
        results = source.results(study)
        try:
            view = view_of(study, results)
        except ValueError as exc:  # a results table the analysis cannot read: say so on the page
            log.warning("study %s: %s", study, exc)
            return [html.P(f"cannot analyse this study's trials: {exc}", className="error")]
        return render_view(view)

    @app.callback(
        Output("progress", "children"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("rendered", "data"),
    )
    def progress(study: str | None, _: int | None, shown: str | None) -> list[Any]:
        if not study:
            return []
        state = source.state(study)
        if state.progress is None and not state.running:
            return []
        return progress_block(state, finished_in(shown, study))

    @app.callback(
        Output("compare-section", "children"),
        Output("compared", "data"),
        Input("compare", "value"),
        Input("study", "value"),
        Input("tick", "n_intervals"),
        State("compared", "data"),
    )
    def compare(picked: list[str] | None, study: str | None, _: int | None, shown: str | None) -> tuple[Any, str]:
        chosen = list(dict.fromkeys([s for s in [study, *(picked or [])] if s]))
        if len(chosen) < 2:
            if not shown:
                raise PreventUpdate
            return [], ""
        named = {s.run_id: f"{s.name} ({s.run_id[:8]})" for s in source.studies()}
        tables = {run_id: source.results(run_id) for run_id in chosen}
        key = "|".join(trials_key(r, t) for r, t in tables.items())
        if key == shown:
            raise PreventUpdate
        inputs: dict[str, CompareInput] = {}
        skipped = []
        for run_id, results in tables.items():
            label = named.get(run_id, run_id[:8])
            try:
                view = view_of(run_id, results)
            except ValueError as exc:
                skipped.append(f"{label}: {exc}")
                continue
            if view.results.empty or "dose-response" not in view.figures:
                skipped.append(f"{label}: no dose-response curves")
                continue
            inputs[label] = CompareInput(view.results, view.findings, view.links)
        body: list[Any] = [html.H2(f"Comparison of {len(chosen)} studies")]
        body += [html.P(f"left out: {s}", className="note") for s in skipped]
        if len(inputs) >= 2:
            figures = {"compare-dose-response": compare_dose_response(inputs), "compare-gain": compare_gains(inputs)}
            body.append(html.Div([figure_block(k, f) for k, f in figures.items()], className="figures"))
        return html.Section(body, className="comparison", id="comparison"), key

    @app.callback(
        Output("download", "data"),
        Input({"type": "csv", "table": ALL}, "n_clicks"),
        State("study", "value"),
        prevent_initial_call=True,
    )
    def download(clicks: list[int | None], study: str | None) -> dict[str, Any]:
        trigger = dash.ctx.triggered_id
        if not study or not isinstance(trigger, Mapping) or not any(clicks):
            raise PreventUpdate  # the buttons were just drawn, not clicked
        view = views.latest(study)
        title = str(trigger.get("table"))
        if view is None or title not in view.tables:
            raise PreventUpdate
        return dcc.send_data_frame(view.tables[title].to_csv, csv_name(title), index=False)

    app.clientside_callback(
        _ON_CLICK,
        Output("run-id", "value"),
        Output("run-link", "href"),
        Output("run-link", "style"),
        Output("run-pick", "hidden"),
        Input({"type": "figure", "name": ALL}, "clickData"),
        prevent_initial_call=True,
    )
    return app


def serve(app: dash.Dash, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Run the app's server (blocking). Loopback by default: results are not for the network."""
    app.run(host=host, port=port, debug=False)
