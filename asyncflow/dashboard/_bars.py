"""The campaign timeline of a few tasks: a bar per task; and the critical path's trace.

Pure: task records in, plotly traces (bars) and Plotly's JSON (the path,
see ``_frame``) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from . import compute as c
from . import paths
from ._attempts import cache_hit_marks, cache_hit_text
from ._frame import Trace
from ._plot import CANCELED, CASCADE, FAILED, QUEUE, WAIT, slot_label, task_hover
from .model import (
    STATE_CANCELED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    Run,
    SpanRecord,
    status,
)

__all__ = ["bars", "critical_trace"]


def _run_span(task: SpanRecord, run: Run) -> tuple[float, float] | None:
    if task.started is None:
        return None
    end = task.finished if task.finished is not None else run.end
    return task.started - run.start, end - run.start


# Unfinished tasks that have not started: a pale bar from when they began to
# wait up to "now" (never a failure mark).
_PENDING = {
    STATE_WAITING: ("waiting for dependencies", WAIT),
    STATE_QUEUED: ("queued for a slot or backend", QUEUE),
}
# Tasks that ended without running: a cross at their end.
_NEVER_RAN = {
    STATE_FAILED: ("failed, never ran", "x-thin", FAILED),
    STATE_DEPENDENCY_FAILED: ("skipped: a dependency failed", "x-thin", CASCADE),
    STATE_CANCELED: ("canceled, never ran", "x-thin", CANCELED),
}


def _pending_start(task: SpanRecord) -> float:
    return task.resolved if task.resolved is not None else task.created


def bars(rows: list[c.Row], run: Run, colours: Mapping[str, str]) -> list[go.BaseTraceType]:
    """A bar per task of ``rows`` that ran or waits, a mark per task that ended without running."""
    by_type: dict[str, dict[str, list[Any]]] = {}
    pending: dict[str, dict[str, list[Any]]] = {}
    never: dict[str, dict[str, list[Any]]] = {}
    hits: dict[str, list[Any]] = {"x": [], "y": [], "text": []}  # results from the cache
    now = run.rel(run.end)
    for index, row in enumerate(rows):
        for task in row.tasks:
            state = status(task)
            custom = [task.uid, task.name or "?", state, row.key, task.error_type]
            hover = task_hover(task, run, row.label)
            span = _run_span(task, run)
            if span is None and state in _PENDING:
                data = pending.setdefault(
                    state, {k: [] for k in ("base", "x", "y", "hover", "custom")}
                )
                low = run.rel(_pending_start(task))
                data["base"].append(low)
                data["x"].append(max(now - low, 0.0))
            elif span is None:
                end = task.finished if task.finished is not None else run.end
                if task.cache == n.CACHE_HIT:
                    hits["x"].append(end - run.start)
                    hits["y"].append(index)
                    hits["text"].append(cache_hit_text(task))
                    continue
                data = never.setdefault(state, {k: [] for k in ("x", "y", "hover", "custom")})
                data["x"].append(end - run.start)
            else:
                data = by_type.setdefault(
                    row.workflow_type,
                    {k: [] for k in ("base", "x", "y", "text", "line", "pattern", *_HOVER)},
                )
                data["base"].append(span[0])
                data["x"].append(span[1] - span[0])
                data["text"].append(slot_label(task))
                data["line"].append(_OUTLINE.get(state, "rgba(0,0,0,0)"))
                data["pattern"].append("/" if state == STATE_RUNNING else "")
            data["y"].append(index)
            data["hover"].append(hover)
            data["custom"].append(custom)
    traces: list[go.BaseTraceType] = []
    for state, data in pending.items():
        label, colour = _PENDING[state]
        traces.append(
            go.Bar(
                orientation="h",
                name=label,
                legendgroup=state,
                base=data["base"],
                x=data["x"],
                y=data["y"],
                width=0.3,
                marker={"color": colour, "line": {"width": 0}},
                opacity=0.8,
                customdata=data["custom"],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    for wf_type in sorted(by_type):
        data = by_type[wf_type]
        traces.append(
            go.Bar(
                orientation="h",
                name=wf_type or c.NO_WORKFLOW,
                legendgroup=wf_type,
                base=data["base"],
                x=data["x"],
                y=data["y"],
                width=0.72,
                text=data["text"],
                textposition="inside",
                insidetextanchor="middle",
                textangle=0,
                marker={
                    "color": colours[wf_type],
                    "line": {"color": data["line"], "width": 2},
                    "pattern": {"shape": data["pattern"], "fgcolor": "white"},
                },
                customdata=data["custom"],
                hovertext=data["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    for state, data in never.items():
        label, symbol, colour = _NEVER_RAN.get(state, (f"{state}, never ran", "x-thin", CANCELED))
        traces.append(
            go.Scatter(
                mode="markers",
                name=label,
                legendgroup=state,
                x=data["x"],
                y=data["y"],
                customdata=data["custom"],
                hovertext=data["hover"],
                marker={"symbol": symbol, "size": 9, "line": {"width": 2, "color": colour}},
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if hits["x"]:
        traces.append(cache_hit_marks(hits["x"], hits["y"], hits["text"]))
    return traces


_HOVER = ("hover", "custom")
# A bar's outline says how a task that ran ended.
_OUTLINE = {STATE_FAILED: FAILED, STATE_DEPENDENCY_FAILED: CASCADE, STATE_CANCELED: CANCELED}


def critical_trace(
    critical: paths.CriticalPath, where: Mapping[str, tuple[int, str, str]], run: Run
) -> Trace:
    """The critical path over the timeline: each task's run drawn dark, joined in order.

    ``where``: uid -> (row number, row key, row label) of the path's tasks shown.
    """
    xs: list[float | None] = []
    ys: list[float | None] = []
    custom: list[list[str]] = []
    hover: list[str] = []
    for task in critical.tasks:
        found = where.get(task.uid)
        if found is None or task.started is None or task.finished is None:
            continue
        i, key, label = found
        # Each task's run is drawn, not the waits between them: a line from
        # one task's end to the next one's start would read as a bar.
        xs += [run.rel(task.started), run.rel(task.finished), None]
        ys += [i, i, None]
        # A click on the path opens the task under it, as a click on its bar does.
        custom += [[task.uid, task.name or "?", status(task), key, task.error_type]] * 3
        text = f"critical path: {critical.breakdown()}<br>" + task_hover(task, run, label)
        hover += [text, text, text]
    return {
        "customdata": custom,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "hovertext": hover,
        "line": {"color": "#111111", "width": 3},
        "marker": {"color": "#111111", "size": 5},
        "mode": "lines+markers",
        "name": "critical path",
        "x": xs,
        "y": ys,
        "type": "scatter",
    }
