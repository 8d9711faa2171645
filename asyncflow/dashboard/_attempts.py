"""Retries and cache hits on the workflow Gantt: what the span events and
attributes of a task with ``retries=`` or ``cache=True`` tell.

Every attempt of a task with retries is a segment on the task's row (a
failed attempt in the failure colour, the last one in the run colour); a
task whose result came from the cache is a hollow diamond where it would
have started, since it never ran. Pure: records in, traces out.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from ._plot import FAILED
from .model import SpanRecord

__all__ = [
    "ATTEMPT_FAILED",
    "ATTEMPT_OK",
    "CACHE_HIT_NAME",
    "add_attempts_and_hits",
    "cache_hit_marks",
    "cache_hit_text",
]

ATTEMPT_FAILED = "failed attempt"
ATTEMPT_OK = "last attempt"
CACHE_HIT_NAME = "cache hit (did not run)"
_OK = "#0072B2"
_HIT = "#009E73"


def add_attempts_and_hits(
    fig: go.Figure, records: Sequence[SpanRecord], origin: float, now: float
) -> None:
    """Add the attempt segments and cache-hit marks of ``records`` (row ``i`` is record ``i``)."""
    segments: dict[str, dict[str, list[object]]] = {
        name: {"base": [], "x": [], "y": [], "text": []} for name in (ATTEMPT_FAILED, ATTEMPT_OK)
    }
    hits: dict[str, list[object]] = {"x": [], "y": [], "text": []}
    for i, r in enumerate(records):
        if r.cache == n.CACHE_HIT:
            at = r.resolved if r.resolved is not None else (r.finished or r.created)
            hits["x"].append(at - origin)
            hits["y"].append(i)
            hits["text"].append(cache_hit_text(r))
        if len(r.attempts) < 2:
            continue
        for attempt in r.attempts:
            if not attempt.started:
                continue
            end = attempt.ended or (r.finished if r.finished is not None else now)
            name = ATTEMPT_FAILED if attempt.error_type else ATTEMPT_OK
            seg = segments[name]
            seg["base"].append(attempt.started - origin)
            seg["x"].append(max(end - attempt.started, 0.0))
            seg["y"].append(i)
            what = f"{attempt.error_type}: {attempt.message}" if attempt.error_type else "succeeded"
            where = f" on {', '.join(attempt.slots)}" if attempt.slots else ""
            seg["text"].append(
                html.escape(
                    f"{r.uid} {r.name}: attempt {attempt.number} of {len(r.attempts)}, "
                    f"{end - attempt.started:.3f} s{where}, {what}"
                )
            )
    for name, colour in ((ATTEMPT_FAILED, FAILED), (ATTEMPT_OK, _OK)):
        seg = segments[name]
        if seg["x"]:
            fig.add_trace(
                go.Bar(
                    orientation="h",
                    name=name,
                    base=seg["base"],
                    x=seg["x"],
                    y=seg["y"],
                    width=0.3,
                    marker={"color": colour, "line": {"color": "white", "width": 1}},
                    hovertext=seg["text"],
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
    if hits["x"]:
        fig.add_trace(cache_hit_marks(hits["x"], hits["y"], hits["text"]))


def cache_hit_text(r: SpanRecord) -> str:
    """The hover text of a cache hit (escaped here: figures escape every text
    but their hovers, which their builders write as a little HTML)."""
    source = f", stored by {r.cache_source}" if r.cache_source else ""
    return html.escape(f"{r.uid} {r.name}: result from the cache{source}")


def cache_hit_marks(
    x: Sequence[object], y: Sequence[object], text: Sequence[object], *, gl: bool = False
) -> go.Scatter | go.Scattergl:
    """Hollow diamonds for tasks whose result came from the cache (they never ran).

    ``gl``: a WebGL trace, for the aggregated timeline's WebGL traces.
    """
    trace = go.Scattergl if gl else go.Scatter
    return trace(
        x=list(x),
        y=list(y),
        mode="markers",
        name=CACHE_HIT_NAME,
        legendgroup=CACHE_HIT_NAME,
        marker={"symbol": "diamond-open", "size": 12, "color": _HIT, "line": {"width": 2}},
        hovertext=list(text),
        hovertemplate="%{hovertext}<extra></extra>",
    )
