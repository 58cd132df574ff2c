"""A study as one self-contained HTML file, laid out like the app: findings first, figures, tables.

Opens offline: plotly.js and the stylesheet are inlined, tables' CSV downloads are ``data:`` URIs,
and nothing is fetched from the network (no CDN script, no web fonts). Clicking a point opens its
MLflow run in the MLflow UI when the report was written with its address, and otherwise shows
the run id ready to copy.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs
from salient.dashboards import names
from salient.dashboards.app_parts import CARD_COLUMNS, csv_name
from salient.dashboards.findings_header import Card, Header, keep_intervals_whole
from salient.dashboards.views import WIDE_FIGURES, StudyView

__all__ = ["csv_data_uri", "render_report"]

STYLESHEET = Path(__file__).with_name("assets") / "salient.css"

# The same behaviour as the app's click callback, on plotly.js's own event (customdata: [run ids, UI page]).
_ON_CLICK = """
function salientRunLinks() {
  document.querySelectorAll(".plotly-graph-div").forEach(function (gd) {
    if (!gd.on || gd.dataset.runLinks) { return; }
    gd.dataset.runLinks = "1";
    gd.on("plotly_click", function (event) {
      var point = event && event.points && event.points[0];
      var data = point && point.customdata;
      if (!Array.isArray(data) || data.length < 2) { return; }
      document.getElementById("run-pick").hidden = false;
      document.getElementById("run-id").value = String(data[0]);
      var link = document.getElementById("run-link");
      if (data[1]) {
        link.href = String(data[1]);
        link.style.display = "";
        window.open(String(data[1]), "_blank");
      } else {
        link.removeAttribute("href");
        link.style.display = "none";
      }
    });
  });
}
window.addEventListener("load", salientRunLinks);
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def csv_data_uri(frame: pd.DataFrame) -> str:
    """The table as a ``data:`` URI a link can download offline (UTF-8 CSV, base64)."""
    payload = base64.b64encode(frame.to_csv(index=False).encode("utf-8")).decode("ascii")
    return f"data:text/csv;charset=utf-8;base64,{payload}"


def _gain_cell(lines: tuple[str, str]) -> str:
    """A gain over its interval (the interval never broken across lines), as in the app."""
    main, interval = lines
    below = f'<br><span class="ci">{_e(keep_intervals_whole(interval))}</span>' if interval else ""
    return f'<td class="num">{_e(main)}{below}</td>'


def _card(card: Card) -> str:
    rows = []
    arms = list(dict.fromkeys(r.arm for r in card.rows))
    for arm in arms:
        if len(arms) > 1:
            label = names.ARM_LABELS.get(arm, arm)
            rows.append(f'<tr class="arm"><th colspan="{len(CARD_COLUMNS)}">{_e(label)}</th></tr>')
        for r in (r for r in card.rows if r.arm == arm):
            dose = "verdict gain" if r.dose != "none" else "verdict none"
            toxic = "verdict toxic" if r.toxic != "none" else "verdict none"
            rows.append(
                f'<tr title="{_e(r.detail)}"><td>{_e(r.prevalence)}</td><td class="{dose}">{_e(r.dose)}</td>'
                f"{_gain_cell(r.validation)}{_gain_cell(r.test)}"
                f'<td class="{toxic}">{_e(r.toxic)}</td></tr>'
            )
    head = "".join(f"<th>{_e(c)}</th>" for c in CARD_COLUMNS)
    lines = "".join(f'<p class="line">{_e(line)}</p>' for line in card.lines)
    return (
        f'<article class="card {_e(card.kind)}"><h3>{_e(card.title)}</h3>'
        f'<p class="verdict {_e(card.kind)}">{_e(card.verdict)}</p>'
        f'<p class="headline">{_e(card.headline)}</p>{lines}'
        f'<div class="table-scroll"><table class="curves"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></article>"
    )


def _header(header: Header) -> str:
    cards = "".join(_card(c) for c in header.cards)
    return (
        '<section class="findings" id="findings"><h2>Findings</h2>'
        f'<p class="lead">{_e(header.lead)}</p><div class="cards">{cards}</div>'
        f'<p class="method">{_e(header.note)}</p></section>'
    )


def _table(title: str, frame: pd.DataFrame) -> str:
    name = csv_name(title)
    return (
        f'<details class="table"><summary>{_e(title)} <span class="rows">({len(frame)} rows)</span></summary>'
        f'<a class="csv" download="{_e(name)}" href="{csv_data_uri(frame)}">download {_e(name)}</a>'
        f'<div class="table-scroll">{frame.to_html(index=False, classes="results", border=0, escape=True)}</div>'
        "</details>"
    )


def render_report(view: StudyView, title: str, meta: Mapping[str, Any] | None = None) -> str:
    """The report's HTML text. ``meta`` (study name, run id, tracking URI, progress ...) is listed
    at the top."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLESHEET.read_text(encoding='utf-8')}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f'<header class="topbar"><h1>{_e(title)}</h1></header>',
        '<main class="page">',
    ]
    if meta:
        parts.append('<dl class="meta">')
        parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta.items()]
        parts.append("</dl>")
    parts.append(
        '<div id="run-pick" class="run-pick" hidden><span>MLflow run of the clicked point:</span>'
        '<input id="run-id" type="text" readonly value="">'
        '<a id="run-link" target="_blank">open in the MLflow UI</a></div>'
    )
    if view.header is not None:
        parts.append(_header(view.header))
    parts += [f'<p class="note">{_e(n)}</p>' for n in view.notes]
    if view.figures:
        parts.append('<h2>Figures</h2><div class="figures">')
        for fig_id, fig in view.figures.items():
            wide = " wide" if fig_id in WIDE_FIGURES else ""
            figure = pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs=False,
                div_id=f"figure-{fig_id}",
                config={"displaylogo": False, "responsive": True},
            )
            parts.append(f'<div class="figure{wide}" id="{_e(fig_id)}">{figure}</div>')
        parts.append("</div>")
    if view.tables:
        parts.append("<h2>Tables</h2>")
        parts += [_table(t, frame) for t, frame in view.tables.items()]
    parts += ["</main>", f"<script>{_ON_CLICK}</script>", "</body></html>"]
    return "\n".join(parts)
