"""A study as one self-contained HTML file: every figure (plotly.js embedded once) and table.

Opens offline: nothing is fetched from the network (no CDN script, no web fonts).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs
from salient.dashboards.views import StudyView

__all__ = ["render_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table.results { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
table.results th, table.results td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
table.results th { background: #f2f2f2; }
.note { color: #a05a00; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
"""


def render_report(view: StudyView, title: str, meta: Mapping[str, Any] | None = None) -> str:
    """The report's HTML text. ``meta`` (study name, run id, tracking URI ...) is listed at the top."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append("<dl>")
        for k, v in meta.items():
            parts.append(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>")
        parts.append("</dl>")
    if view.findings:
        parts.append("<h2>Findings</h2><ul>")
        parts += [f'<li class="finding">{html.escape(f.sentence())}</li>' for f in view.findings]
        parts.append("</ul>")
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in view.notes]
    for name, frame in view.tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(frame.to_html(index=False, classes="results", border=0, escape=True))
    for fig_id, fig in view.figures.items():
        parts.append(f'<h2 id="{html.escape(fig_id)}">{html.escape(fig_id.replace("-", " "))}</h2>')
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"figure-{fig_id}"))
    parts.append("</body></html>")
    return "\n".join(parts)
