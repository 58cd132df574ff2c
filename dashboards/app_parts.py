"""A study view as Dash components: findings header, figures, collapsible tables (the app's page body).

Kept apart from :mod:`salient.dashboards.app` (the server, its callbacks and polling) so the page's
structure is readable on its own; :mod:`salient.dashboards.report` writes the same structure as
static HTML.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from dash import dcc, html
from salient.dashboards import names
from salient.dashboards.findings_header import Card, Header, keep_intervals_whole
from salient.dashboards.study_progress import StudyState
from salient.dashboards.views import WIDE_FIGURES, StudyView

__all__ = ["csv_name", "figure_block", "header_block", "progress_block", "render_view", "table_block"]

#: Columns of a card's table (one row per arm and held-out set).
CARD_COLUMNS = ("prevalence", "therapeutic dose", "validation gain", "test gain there", "toxic dose")


def csv_name(title: str) -> str:
    """A file name for a table's CSV: ``"Table 1 (test AUPRC ...)"`` -> ``"table_1_test_auprc....csv"``."""
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    return (slug[:80] or "table") + ".csv"


def _gain_cell(lines: tuple[str, str]) -> html.Td:
    """A gain over its interval (the interval never broken across lines)."""
    main, interval = lines
    parts: list[Any] = [main]
    if interval:
        parts += [html.Br(), html.Span(keep_intervals_whole(interval), className="ci")]
    return html.Td(parts, className="num")


def _card(card: Card) -> html.Article:
    rows: list[Any] = []
    arms = list(dict.fromkeys(r.arm for r in card.rows))
    for arm in arms:
        if len(arms) > 1:
            rows.append(html.Tr(html.Th(names.ARM_LABELS.get(arm, arm), colSpan=len(CARD_COLUMNS)), className="arm"))
        for r in (r for r in card.rows if r.arm == arm):
            rows.append(
                html.Tr(
                    [
                        html.Td(r.prevalence),
                        html.Td(r.dose, className=f"verdict {'gain' if r.dose != 'none' else 'none'}"),
                        _gain_cell(r.validation),
                        _gain_cell(r.test),
                        html.Td(r.toxic, className=f"verdict {'toxic' if r.toxic != 'none' else 'none'}"),
                    ],
                    title=r.detail,
                )
            )
    return html.Article(
        [
            html.H3(card.title),
            html.P(card.verdict, className=f"verdict {card.kind}"),
            html.P(card.headline, className="headline"),
            *[html.P(line, className="line") for line in card.lines],
            html.Div(
                html.Table(
                    [html.Thead(html.Tr([html.Th(c) for c in CARD_COLUMNS])), html.Tbody(rows)], className="curves"
                ),
                className="table-scroll",
            ),
        ],
        className=f"card {card.kind}",
    )


def header_block(header: Header) -> html.Section:
    """The answer first: the lead sentence, one card per seed size, how decisions were made."""
    return html.Section(
        [
            html.H2("Findings"),
            html.P(header.lead, className="lead"),
            html.Div([_card(c) for c in header.cards], className="cards"),
            html.P(header.note, className="method"),
        ],
        className="findings",
        id="findings",
    )


def figure_block(fig_id: str, fig: go.Figure, group: str = "figure") -> html.Div:
    return html.Div(
        dcc.Graph(
            id={"type": group, "name": fig_id},
            figure=fig,
            config={"displaylogo": False, "responsive": True},
            style={"width": "100%"},
        ),
        className="figure wide" if fig_id in WIDE_FIGURES else "figure",
    )


def table_block(title: str, frame: pd.DataFrame) -> html.Details:
    """A collapsed table with its row count and a CSV download button (``{"type": "csv", "table": title}``)."""
    head = html.Tr([html.Th(str(c)) for c in frame.columns])
    body = [html.Tr([html.Td(str(v)) for v in row]) for row in frame.itertuples(index=False)]
    return html.Details(
        [
            html.Summary([title, html.Span(f" ({len(frame)} rows)", className="rows")]),
            html.Button(f"download {csv_name(title)}", id={"type": "csv", "table": title}, className="csv"),
            html.Div(html.Table([html.Thead(head), html.Tbody(body)], className="results"), className="table-scroll"),
        ],
        className="table",
    )


def render_view(view: StudyView) -> list[Any]:
    """The page body: findings header, notes, figures, then the tables collapsed."""
    out: list[Any] = []
    if view.header is not None:
        out.append(header_block(view.header))
    out += [html.P(note, className="note") for note in view.notes]
    if view.figures:
        out.append(html.H2("Figures"))
        out.append(html.Div([figure_block(k, f) for k, f in view.figures.items()], className="figures"))
    if view.tables:
        out.append(html.H2("Tables"))
        out += [table_block(title, frame) for title, frame in view.tables.items()]
    return out


def progress_block(state: StudyState | None, finished: int, now: float | None = None) -> list[Any]:
    """The live progress line and bar (done / running / failed out of the total)."""
    if state is None:
        return []
    text = state.describe(now)
    if not text:
        return []
    parts: list[Any] = [html.Span(text, className="progress-text")]
    p = state.progress
    if p is not None and p.total > 0:
        parts.append(
            html.Div(
                [
                    html.Span(className=k, style={"width": f"{100 * v / p.total:.2f}%"}, title=f"{v} {k}")
                    for k, v in (("done", p.done), ("running", p.running), ("failed", p.failed))
                    if v
                ],
                className="bar",
            )
        )
    if p is not None and p.done != finished and state.running:
        parts.append(html.Span(f" ({finished} finished trial(s) logged to MLflow so far)", className="status"))
    return parts
