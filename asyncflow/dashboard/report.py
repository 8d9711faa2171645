"""``asyncflow report``: the dashboard's figures in one self-contained HTML file.

For people without a server (HPC login nodes): plotly.js is inlined, so the
file opens offline in any browser. :func:`render_report` is pure (a run in,
HTML text out); :func:`write_report` reads the source and writes the file.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from . import compute as c
from . import figures as f
from ._base import SpanSource
from .model import STATE_FAILED, Run

__all__ = ["render_report", "write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px 24px; color: #1d232b; }
h1 { font-size: 22px; color: #0b4f8a; margin-bottom: 2px; }
.source { font-family: monospace; color: #4a5563; }
.message { background: #fff5dc; border: 1px solid #ecd189; border-radius: 6px; padding: 8px 12px; }
table { border-collapse: collapse; margin-bottom: 12px; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e7ec; padding: 3px 10px; text-align: left; }
th { background: #eef1f5; }
section { margin: 20px 0; }
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: go.Figure, div_id: str) -> str:
    return str(
        pio.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            div_id=div_id,
            config={"displaylogo": False},
        )
    )


def report_workflows(run: Run, limit: int) -> list[str]:
    """The instances whose Gantt the report shows: failed ones first, then by start."""
    rows = c.timeline_rows(run)
    failed = [r.key for r in rows if any(t.state == STATE_FAILED for t in r.tasks)]
    rest = [r.key for r in rows if r.key not in set(failed)]
    return (failed + rest)[:limit]


def render_report(
    run: Run, *, capacity: Mapping[str, int] | None = None, workflows: int = 10
) -> str:
    """The whole report as HTML text (plotly.js included).

    Args:
        run: the run.
        capacity: slot capacities to draw when the run recorded none.
        workflows: how many workflow Gantt charts to include.
    """
    parts = [
        f"<h1>asyncflow run report</h1><div class='source'>{html.escape(run.source)}</div>",
    ]
    parts += [f"<p class='message'>{html.escape(m)}</p>" for m in c.notices(run)]
    if run.tasks:
        counts = c.count_states(run.tasks)
        states = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        summary = c.summarize(run, capacity)
        parts.append(f"<p>{len(run.tasks)} tasks: {states}. {html.escape(c.headline(summary))}</p>")
    sections = [
        ("Campaign timeline", f.campaign_figure(run, capacity=capacity), "campaign"),
        ("Slot lanes", f.slots_figure(run), "slots"),
        ("Utilisation", f.utilisation_figure(run, capacity=capacity), "utilisation"),
        ("Summary", f.summary_figure(run), "summary"),
    ]
    for title, fig, div_id in sections:
        parts.append(f"<section><h2>{title}</h2>{_figure(fig, div_id)}</section>")
    if run.tasks:
        tables = "".join(
            f"<h3>{html.escape(t)}</h3>" + (_table(h, r) if r else "<p>None.</p>")
            for t, h, r in c.summary_tables(c.summarize(run, capacity))
        )
        parts.append(f"<section>{tables}</section>")
        keys = report_workflows(run, workflows)
        if keys:
            parts.append(f"<h2>Workflows ({len(keys)} of {len(c.timeline_rows(run))})</h2>")
        for i, key in enumerate(keys):
            parts.append(f"<section>{_figure(f.gantt_figure(run, key), f'workflow-{i}')}</section>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>asyncflow report: {html.escape(run.source)}</title>"
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def write_report(
    source: SpanSource,
    path: str | os.PathLike[str],
    *,
    capacity: Mapping[str, int] | None = None,
    workflows: int = 10,
) -> Path:
    """Read ``source`` once and write the report to ``path``; returns the path.

    Raises:
        SourceError: the source cannot be read.
    """
    text = render_report(source.poll(), capacity=capacity, workflows=workflows)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
