"""The campaign timeline. Pure: a run in, a plotly figure out (built as data, see ``_frame``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from . import _busy as b
from . import _frame as fr
from . import _webgl as w
from . import compute as c
from . import paths
from ._attempts import cache_hit_marks, cache_hit_text
from ._columns import Rows, Timeline, rows_of, timeline_of
from ._frame import LABELLED_ROWS, Trace
from ._plot import (
    CANCELED,
    CASCADE,
    FAILED,
    QUEUE,
    WAIT,
    empty_figure,
    slot_label,
    task_hover,
    type_colours,
)
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

__all__ = [
    "BAR_LIMIT",
    "MAX_STEPS",
    "campaign_figure",
    "zoom_window",
]

BAR_LIMIT = 2_000  # more tasks than this are drawn as WebGL line segments, not SVG bars
MAX_STEPS = c.ENVELOPE_POINTS


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


def _bars(rows: list[c.Row], run: Run, colours: Mapping[str, str]) -> list[go.BaseTraceType]:
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


def _critical_trace(
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


def campaign_figure(
    run: Run,
    *,
    types: Collection[str] | None = None,
    states: Collection[str] | None = None,
    capacity: Mapping[str, int] | None = None,
    bar_limit: int = BAR_LIMIT,
    max_steps: int = MAX_STEPS,
    window: tuple[float, float] | None = None,
) -> go.Figure:
    """The campaign timeline: a row per workflow instance, busy slots below, configuration beside.

    Args:
        run: the run.
        types: only these workflow types (``None``: all).
        states: only tasks in these states (``None``: all).
        capacity: slot capacities to draw when the run recorded none (``{"gpu": 4}``).
        bar_limit: up to this many tasks are SVG bars (labelled, hoverable);
            more are WebGL segments, so 100,000 tasks still draw in a blink.
        max_steps: step functions with more changes show per-bin peaks.
        window: the time range shown (seconds from the start), when the user
            zoomed: an aggregated timeline is aggregated again for it.
    """
    window = _valid_window(window)
    if len(run.tasks) > bar_limit:
        # Many tasks: drawn from columns, by whole-array operations.
        tl = timeline_of(run)
        all_rows = rows_of(tl)
        rows = all_rows if types is None and states is None else rows_of(tl, types, states)
        if len(rows.tasks) > bar_limit:
            return _aggregated(tl, all_rows, rows, capacity, max_steps, window)
        return _few_of_many(tl, all_rows, rows, capacity, max_steps)
    return _labelled(run, types, states, capacity, max_steps)


def _aggregated(
    tl: Timeline,
    all_rows: Rows,
    rows: Rows,
    capacity: Mapping[str, int] | None,
    max_steps: int,
    window: tuple[float, float] | None,
) -> go.Figure:
    """The timeline of many tasks: WebGL segments aggregated to the screen, from columns."""
    run = tl.run
    colours = type_colours(all_rows.types)
    top = 640
    traces, drawn = w.segment_traces(tl, rows, colours, top, window)
    found = w.critical_path(tl)
    critical = found[0] if found is not None else None
    if found is not None:
        critical, indices = found
        number = np.full(len(tl), -1, dtype=np.int64)
        number[rows.tasks] = rows.row
        where = {}
        for i, task in zip(indices, critical.tasks, strict=True):
            r = int(number[i])
            if r >= 0:
                where[task.uid] = (r, rows.keys[r], rows.label(r))
        traces.append(_critical_trace(critical, where, run))
    peaks: dict[str, int] = {}
    shown: dict[str, c.Steps] = {}
    for kind in c.KINDS:
        peaks[kind], shown[kind] = b.steps(tl, kind, max_steps)
    caps = b.capacities(tl, capacity, peaks)
    labels = [rows.label(i) for i in range(len(rows))] if len(rows) <= LABELLED_ROWS else []
    layout, panels = fr.frame(top, labels, rows.keys)
    data = [fr.placed(trace, panels.timeline) for trace in traces]
    data.append(fr.config_table(w.configuration(tl, all_rows), panels))
    data += fr.busy_traces(layout, panels, run.rel(run.end), peaks, shown, caps)
    title = f"{len(rows.tasks)} tasks in {len(rows)} workflow instances"
    title += f" (aggregated to screen resolution: {drawn} segments; WebGL)"
    if window is not None:
        layout[fr.axis_key(panels.timeline[0])]["range"] = list(window)
        title += f"; zoomed to {window[0]:.3f}-{window[1]:.3f} s"
    fr.title(layout, title, f"Critical path: {critical.breakdown()}" if critical else None)
    return fr.figure(data, layout)


def _labelled(
    run: Run,
    types: Collection[str] | None,
    states: Collection[str] | None,
    capacity: Mapping[str, int] | None,
    max_steps: int,
) -> go.Figure:
    """The timeline of a few tasks: an SVG bar per task, labelled and hoverable."""
    all_rows = c.timeline_rows(run)
    rows = all_rows if types is None and states is None else c.timeline_rows(run, types, states)
    if not rows:
        return empty_figure("No tasks to show" + (" for these filters." if run.tasks else " yet."))
    busy = {kind: c.busy_steps(run, kind) for kind in c.KINDS}
    return _bar_figure(
        run,
        rows,
        colours=type_colours(c.workflow_types(run, all_rows)),
        critical=paths.critical_path(run),
        peaks={kind: busy[kind].peak for kind in c.KINDS},
        shown={kind: c.envelope(busy[kind], max_steps) for kind in c.KINDS},
        caps=c.capacities(run, capacity, steps=busy),
        config=c.configuration(run, all_rows),
    )


def _few_of_many(
    tl: Timeline,
    all_rows: Rows,
    rows: Rows,
    capacity: Mapping[str, int] | None,
    max_steps: int,
) -> go.Figure:
    """A few tasks of many (filtered): :func:`_labelled`, reading only the shown tasks' records.

    The rest (busy slots, capacities, table, critical path) comes from the
    columns, as for the aggregated timeline.
    """
    if not len(rows):
        return empty_figure("No tasks to show for these filters.")
    ends = np.searchsorted(rows.row, np.arange(len(rows) + 1)).tolist()
    shown_rows = [
        c.Row(
            rows.keys[r],
            rows.types[r],
            rows.starts[r],
            tuple(tl.record(i) for i in rows.tasks[ends[r] : ends[r + 1]].tolist()),
        )
        for r in range(len(rows))
    ]
    peaks: dict[str, int] = {}
    shown: dict[str, c.Steps] = {}
    for kind in c.KINDS:
        peaks[kind], shown[kind] = b.steps(tl, kind, max_steps)
    found = w.critical_path(tl)
    return _bar_figure(
        tl.run,
        shown_rows,
        colours=type_colours(all_rows.types),
        critical=found[0] if found is not None else None,
        peaks=peaks,
        shown=shown,
        caps=b.capacities(tl, capacity, peaks),
        config=w.configuration(tl, all_rows),
    )


def _bar_figure(
    run: Run,
    rows: list[c.Row],
    *,
    colours: Mapping[str, str],
    critical: paths.CriticalPath | None,
    peaks: Mapping[str, int],
    shown: Mapping[str, c.Steps],
    caps: Mapping[str, c.Capacity],
    config: list[c.TypeConfig],
) -> go.Figure:
    """The figure of :func:`_labelled`: ``rows`` as bars, the rest as found by the caller."""
    count = sum(len(r.tasks) for r in rows)
    top = max(260, min(1100, 60 + 24 * len(rows)))
    layout, panels = fr.frame(top, [r.label for r in rows], [r.key for r in rows])
    bars = _bars(rows, run, colours)
    data = [fr.placed(trace.to_plotly_json(), panels.timeline) for trace in bars]
    if critical is not None:
        wanted = critical.uids
        where = {
            t.uid: (i, row.key, row.label)
            for i, row in enumerate(rows)
            for t in row.tasks
            if t.uid in wanted
        }
        data.append(fr.placed(_critical_trace(critical, where, run), panels.timeline))
    data.append(fr.config_table(config, panels))
    data += fr.busy_traces(layout, panels, run.rel(run.end), peaks, shown, caps)
    subtitle = f"Critical path: {critical.breakdown()}" if critical else None
    fr.title(layout, f"{count} tasks in {len(rows)} workflow instances", subtitle)
    return fr.figure(data, layout)


def _valid_window(window: tuple[float, float] | None) -> tuple[float, float] | None:
    if window is None:
        return None
    try:
        low, high = float(window[0]), float(window[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return None
    return low, high


def zoom_window(relayout: Mapping[str, Any] | None) -> tuple[str, tuple[float, float] | None]:
    """What a Plotly ``relayoutData`` event does to the timeline's time range.

    Returns ``("set", (low, high))`` for a new x range of the timeline,
    ``("reset", None)`` when its x axis went back to autorange (a double
    click), and ``("keep", None)`` for anything else (a y-only zoom, a
    resize, the busy-slot panel's own axis).
    """
    if not relayout:
        return "keep", None
    if relayout.get("xaxis.autorange") or relayout.get("xaxis2.autorange"):
        return "reset", None
    for axis in ("xaxis", "xaxis2"):  # the busy-slot panel shares the timeline's x
        pair = relayout.get(f"{axis}.range")
        if pair is None and f"{axis}.range[0]" in relayout:
            pair = (relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]"))
        if pair is not None:
            window = _valid_window(tuple(pair))
            return ("set", window) if window is not None else ("keep", None)
    return "keep", None
