"""The slot lanes: a row per GPU/CPU slot, the tasks waiting for a slot below. Pure."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from asyncflow.telemetry import names as n

from . import compute as c
from . import paths
from ._plot import (
    AXIS_TIME,
    QUEUE,
    TEMPLATE,
    empty_figure,
    merge_segments,
    task_hover,
    type_colours,
    typed_array,
)
from .model import Run, status

__all__ = ["LANE_BAR_LIMIT", "slots_figure"]

LANE_BAR_LIMIT = 2_000  # more task spans than this are drawn as aggregated WebGL segments
_PIXELS = 1_500
_CRITICAL = "#111111"
_OTHER = "#999999"


def slots_figure(run: Run, *, bar_limit: int = LANE_BAR_LIMIT) -> go.Figure:
    """One row per slot with the tasks that held it; below, the tasks waiting for a slot.

    Bars are coloured by workflow type; tasks on the critical path are
    outlined, and the title gives the makespan breakdown along it.

    Args:
        run: the run.
        bar_limit: up to this many task spans are SVG bars (hover, click);
            more are WebGL segments aggregated to the screen.
    """
    lanes = paths.slot_lanes(run)
    if not lanes.lanes:
        return empty_figure("No task has started yet: no slot lanes to draw.")
    all_rows = c.timeline_rows(run)
    colours = type_colours(c.workflow_types(run, all_rows))
    place = _places(run, all_rows)
    critical = paths.critical_path(run)
    on_path = critical.uids if critical is not None else frozenset()
    count = sum(len(lane.spans) for lane in lanes.lanes)
    rows = len(lanes.lanes)
    top = max(220, min(900, 60 + 22 * rows))
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[top, 200],
        vertical_spacing=0.06,
        subplot_titles=("Slots", "Tasks waiting for a slot (in their queue wait)"),
    )
    if count <= bar_limit:
        for trace in _bars(run, lanes, colours, on_path, place):
            fig.add_trace(trace, row=1, col=1)
    else:
        for trace in _segments(run, lanes, colours, place):
            fig.add_trace(trace, row=1, col=1)
    # Each bin's peak beyond ENVELOPE_POINTS changes, as the busy slots.
    waiting = c.envelope(c.Steps(*paths.waiting_for_slots(run)), c.ENVELOPE_POINTS)
    fig.add_trace(
        go.Scatter(
            x=waiting.times,
            y=waiting.values,
            mode="lines",
            line={"shape": "hv", "color": QUEUE, "width": 2},
            fill="tozeroy",
            name="tasks waiting for a slot",
            hovertemplate="%{x:.3f} s: %{y} task(s) waiting for a slot<extra></extra>",
        ),
        row=2,
        col=1,
    )
    labelled = rows <= 60
    fig.update_yaxes(
        row=1,
        col=1,
        range=[rows - 0.5, -0.5],
        tickmode="array" if labelled else "auto",
        tickvals=list(range(rows)) if labelled else None,
        ticktext=[lane.label for lane in lanes.lanes] if labelled else None,
        title_text=None if labelled else f"{rows} slots",
        automargin=True,
    )
    fig.update_yaxes(row=2, col=1, title_text="tasks", rangemode="tozero")
    fig.update_xaxes(row=2, col=1, title_text=AXIS_TIME)
    title = f"{rows} slot lanes, {count} task spans"
    if lanes.inferred:
        title += " (no slots recorded: lanes packed from the requested cpus and gpus)"
    path = f"Critical path: {critical.breakdown()} (outlined)" if critical is not None else None
    fig.update_layout(
        template=TEMPLATE,
        barmode="overlay",
        height=top + 200 + 140,
        title={
            "text": title,
            "subtitle_text": path,  # plain text, drawn smaller under the title
            "x": 0.01,
            "y": 0.99,
            "yanchor": "top",
            "font": {"size": 15},
        },
        margin={"l": 10, "r": 10, "t": 90, "b": 50},
        hovermode="closest",
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0.5},
        uirevision="slots",
    )
    return fig


def _places(run: Run, rows: list[c.Row]) -> dict[str, c.Row]:
    """Task uid -> its timeline row (its instance and the type it is coloured by)."""
    return {t.uid: row for row in rows for t in row.tasks}


def _bars(
    run: Run,
    lanes: paths.Lanes,
    colours: dict[str, str],
    on_path: frozenset[str],
    place: dict[str, c.Row],
) -> list[go.BaseTraceType]:
    keys = ("base", "x", "y", "line", "hover", "custom")
    by_type: dict[str, dict[str, list[Any]]] = {}
    for index, lane in enumerate(lanes.lanes):
        for task, start, end in lane.spans:
            row = place.get(task.uid)
            wf_type = row.workflow_type if row is not None else task.workflow_type
            key = row.key if row is not None else task.workflow_id
            where = row.label if row is not None else key
            data = by_type.setdefault(wf_type, {k: [] for k in keys})
            data["base"].append(run.rel(start))
            data["x"].append(end - start)
            data["y"].append(index)
            data["line"].append(_CRITICAL if task.uid in on_path else "rgba(0,0,0,0)")
            data["hover"].append(task_hover(task, run, where))
            data["custom"].append([task.uid, task.name or "?", status(task), key, task.error_type])
    return [
        go.Bar(
            orientation="h",
            name=wf_type or c.NO_WORKFLOW,
            legendgroup=wf_type,
            base=data["base"],
            x=data["x"],
            y=data["y"],
            width=0.8,
            marker={
                "color": colours.get(wf_type, _OTHER),
                "line": {"color": data["line"], "width": 2},
            },
            customdata=data["custom"],
            hovertext=data["hover"],
            hovertemplate="%{hovertext}<extra></extra>",
        )
        for wf_type, data in sorted(by_type.items())
    ]


def _segments(
    run: Run, lanes: paths.Lanes, colours: dict[str, str], place: dict[str, c.Row]
) -> list[go.BaseTraceType]:
    rows = len(lanes.lanes)
    group = max(1, math.ceil(rows / 160))
    pixel = max(run.rel(run.end), 1e-9) / _PIXELS
    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for index, lane in enumerate(lanes.lanes):
        for task, start, end in lane.spans:
            low = run.rel(start)
            row = place.get(task.uid)
            wf_type = row.workflow_type if row is not None else task.workflow_type
            spans[(index // group, wf_type)].append((low, max(run.rel(end), low + pixel)))
    kinds = sorted(colours.keys() | {k for _, k in spans})
    xs, ys, _ = merge_segments(spans, kinds, group, pixel)
    width = max(1.0, min(10.0, 500 / max(rows / group, 1)))
    return [
        go.Scattergl(
            mode="lines",
            name=wf_type or c.NO_WORKFLOW,
            legendgroup=wf_type,
            x=typed_array(xs[wf_type]),
            y=typed_array(ys[wf_type]),
            line={"color": colours.get(wf_type, _OTHER), "width": width},
            hovertemplate=f"%{{x:.3f}} s, slot row %{{y:.0f}}<extra>{n.PHASE_RUN_TIME}</extra>",
        )
        for wf_type in sorted(xs)
    ]
