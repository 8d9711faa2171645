"""The campaign timeline. Pure: a run in, a plotly figure out (built as data, see ``_frame``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from . import _busy as b
from . import _frame as fr
from . import _webgl as w
from . import compute as c
from . import paths
from ._bars import bars, critical_trace
from ._columns import Rows, Timeline, rows_of, timeline_of
from ._frame import LABELLED_ROWS
from ._plot import empty_figure, type_colours
from .model import Run

__all__ = [
    "BAR_LIMIT",
    "MAX_STEPS",
    "campaign_figure",
    "zoom_window",
]

BAR_LIMIT = 2_000  # more tasks than this are drawn as WebGL line segments, not SVG bars
MAX_STEPS = c.ENVELOPE_POINTS


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
        traces.append(critical_trace(critical, where, run))
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
    drawn = bars(rows, run, colours)
    data = [fr.placed(trace.to_plotly_json(), panels.timeline) for trace in drawn]
    if critical is not None:
        wanted = critical.uids
        where = {
            t.uid: (i, row.key, row.label)
            for i, row in enumerate(rows)
            for t in row.tasks
            if t.uid in wanted
        }
        data.append(fr.placed(critical_trace(critical, where, run), panels.timeline))
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
