"""The workflow Gantt: a row per task with its phases. Pure: a run in, a plotly figure out."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from . import _choices as ch
from ._attempts import add_attempts_and_hits
from ._plot import (
    AXIS_TIME,
    CANCELED,
    CASCADE,
    FAILED,
    QUEUE,
    RUN,
    TEMPLATE,
    WAIT,
    empty_figure,
    task_hover,
)
from .model import STATE_CANCELED, STATE_DEPENDENCY_FAILED, STATE_FAILED, Run, status

__all__ = ["GANTT_LIMIT", "gantt_figure"]

GANTT_LIMIT = 400  # tasks drawn in one workflow Gantt
_HOVER = ("hover", "custom")


def gantt_figure(
    run: Run, key: str, *, limit: int = GANTT_LIMIT, critical: Collection[str] | None = None
) -> go.Figure:
    """One workflow instance: a row per task with its dependency wait, queue wait and run time.

    Failed tasks are marked with a red cross, cascades (a dependency failed)
    with a pale one, cancelled ones with a grey circle; arrows join a task to
    the dependencies it waited for; tasks on the campaign's critical path are
    outlined.

    Args:
        run: the run.
        key: the workflow instance (a timeline row key).
        limit: draw at most this many tasks (the first created).
        critical: uids of the tasks on the critical path (``None``: the run's).
    """
    records = ch.instance_records(run, key)
    if not records:
        return empty_figure(f"No tasks in workflow {key!r}.")
    if critical is None:
        path = ch.critical_path(run)
        critical = path.uids if path is not None else frozenset()
    total = len(records)
    records = records[:limit]
    index = {r.uid: i for i, r in enumerate(records)}
    origin, now = run.start, run.end
    names = (n.PHASE_DEPENDENCY_WAIT, n.PHASE_QUEUE_WAIT, n.PHASE_RUN_TIME)
    segments: dict[str, dict[str, list[Any]]] = {
        name: {k: [] for k in ("base", "x", "y", "line", *_HOVER)} for name in names
    }
    marks: dict[str, dict[str, list[Any]]] = {
        s: {k: [] for k in ("x", "y", *_HOVER)} for s in _GANTT_MARKS
    }
    dep_x: list[float | None] = []
    dep_y: list[float | None] = []
    outside: dict[int, list[str]] = {}
    where = next((r.label for r in ch.instances(run)[1] if r.key == key), key)
    for i, r in enumerate(records):
        end = r.finished if r.finished is not None else now
        ready = r.resolved if r.resolved is not None else (r.started or end)
        start = r.started if r.started is not None else end
        hover = task_hover(r, run, where)
        custom = [r.uid, r.name or "?", status(r), key, r.error_type]
        outline = "#111" if r.uid in critical else "rgba(0,0,0,0)"
        for name, lo, hi in (
            (n.PHASE_DEPENDENCY_WAIT, r.created, min(ready, end)),
            (n.PHASE_QUEUE_WAIT, min(ready, end), start),
            (n.PHASE_RUN_TIME, start, end),
        ):
            if hi > lo or (name == n.PHASE_RUN_TIME and r.started is not None):
                seg = segments[name]
                seg["base"].append(lo - origin)
                seg["x"].append(hi - lo)
                seg["y"].append(i)
                seg["line"].append(outline if name == n.PHASE_RUN_TIME else "rgba(0,0,0,0)")
                seg["hover"].append(hover)
                seg["custom"].append(custom)
        state = status(r)
        if state in marks:
            mark = marks[state]
            mark["x"].append(end - origin)
            mark["y"].append(i)
            mark["hover"].append(hover)
            mark["custom"].append(custom)
        for dep in r.depends_on:
            j = index.get(dep)
            dep_run = records[j] if j is not None else None
            if dep_run is None or dep_run.finished is None:
                outside.setdefault(i, []).append(dep)
                continue
            dep_x += [dep_run.finished - origin, ready - origin, None]
            dep_y += [j, i, None]
    colours = {n.PHASE_DEPENDENCY_WAIT: WAIT, n.PHASE_QUEUE_WAIT: QUEUE, n.PHASE_RUN_TIME: RUN}
    fig = go.Figure()
    for name, seg in segments.items():
        fig.add_trace(
            go.Bar(
                orientation="h",
                name=name,
                base=seg["base"],
                x=seg["x"],
                y=seg["y"],
                width=0.6,
                marker={"color": colours[name], "line": {"color": seg["line"], "width": 2}},
                customdata=seg["custom"],
                hovertext=seg["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if dep_x:
        fig.add_trace(
            go.Scatter(
                x=dep_x,
                y=dep_y,
                mode="lines+markers",
                name="dependency",
                line={"color": "#555", "width": 1},
                marker={"symbol": "arrow", "angleref": "previous", "size": 8, "color": "#555"},
                hoverinfo="skip",
            )
        )
    for state, (label, symbol, colour) in _GANTT_MARKS.items():
        if marks[state]["x"]:
            fig.add_trace(
                go.Scatter(
                    x=marks[state]["x"],
                    y=marks[state]["y"],
                    mode="markers",
                    name=label,
                    marker={"symbol": symbol, "size": 12, "color": colour, "line": {"width": 2}},
                    customdata=marks[state]["custom"],
                    hovertext=marks[state]["hover"],
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
    add_attempts_and_hits(fig, records, origin, now)
    labels = []
    for i, r in enumerate(records):
        label = f"{r.uid} {r.name}" if r.level == n.LEVEL_TASK else f"{r.level} {r.name}"
        if i in outside:
            label += f"  (after {', '.join(outside[i])})"
        labels.append(label)  # escaped with the figure (figures.py)
    title = f"Workflow {key}: {total} task(s)"
    if total > limit:
        title += f", the first {limit} shown"
    on_path = sum(1 for r in records if r.uid in critical)
    if on_path:
        title += f"; {on_path} on the critical path (outlined)"
    fig.update_layout(
        template=TEMPLATE,
        barmode="overlay",
        height=max(260, min(2400, 130 + 26 * len(records))),
        title={"text": title, "x": 0.01, "y": 0.99, "yanchor": "top", "font": {"size": 15}},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0.0},
        margin={"l": 10, "r": 10, "t": 80, "b": 50},
        xaxis={"title_text": AXIS_TIME, "rangemode": "tozero"},
        yaxis={
            "tickmode": "array",
            "tickvals": list(range(len(records))),
            "ticktext": labels,
            "range": [len(records) - 0.5, -0.5],
            "automargin": True,
        },
        hovermode="closest",
    )
    return fig


_GANTT_MARKS = {
    STATE_FAILED: ("failed", "x", FAILED),
    STATE_DEPENDENCY_FAILED: ("skipped: a dependency failed", "x", CASCADE),
    STATE_CANCELED: ("canceled", "circle-open", CANCELED),
}
