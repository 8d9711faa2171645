"""The campaign figure as plain data: its panels, busy slots, configuration table and title.

Pure: numbers and strings in, Plotly's JSON (dicts and lists) out. Plotly's
objects check every value they are given; for the campaign timeline that
cost more than drawing it (the template alone about 10 ms a figure, 50 ms
for the first of a process), and a figure of 100,000 tasks has nothing to
check but the builders' own constants. These builders write the values
that checking would produce, the panels get the domains plotly's
``make_subplots`` would give them (:func:`grid`, computed here), and
:func:`figure` wraps the result without checking it again.
``tests/unit/test_dashboard_campaign.py`` holds the result to plotly's
checks and to the figure as plotly's objects drew it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from asyncflow.telemetry import names as n

from . import compute as c
from ._plot import AXIS_TIME, CPU_COLOUR, GPU_COLOUR, TEMPLATE

__all__ = ["LABELLED_ROWS", "Grid", "busy_traces", "config_table", "figure", "frame", "grid"]

Trace = dict[str, Any]
LABELLED_ROWS = 40  # rows named on the axis; beyond, the hover says which
BUSY_HEIGHT = 240  # the busy-slot panel, in pixels


@dataclasses.dataclass(frozen=True)
class Grid:
    """The panels of a campaign figure ``top`` pixels tall, as plotly lays them out.

    Attributes:
        layout: the layout before anything is drawn, pickled (a fresh copy per figure).
        timeline, busy, busy_right: the (x, y) axes of the timeline, the
            busy-slot panel and that panel's right-hand axis (``("x2", "y3")``).
        table: the configuration table's domain.
    """

    layout: bytes
    timeline: tuple[str, str]
    busy: tuple[str, str]
    busy_right: tuple[str, str]
    table: dict[str, list[float]]


def axis_key(ref: str) -> str:
    """The layout key of an axis a trace refers to: ``"y3"`` -> ``"yaxis3"``."""
    return f"{ref[0]}axis{ref[1:]}"


# The grid: two columns (the panels, the configuration table), two rows
# (the timeline, the busy slots; the table spans both), a secondary y axis on
# the busy-slot panel.
COLUMN_WIDTHS = (0.74, 0.26)
HORIZONTAL_SPACING = 0.02
# The width the columns share: plotly leaves the rest of the figure to a
# secondary y axis's title.
_SHARED_WIDTH = 0.94
_TITLES = ("Workflow instances", "Configuration", "Busy slots")


@functools.lru_cache(maxsize=64)
def grid(top: int) -> Grid:
    """The panels for a timeline ``top`` pixels tall.

    The numbers are those plotly's ``make_subplots`` computes for this grid
    (``tests/unit/test_dashboard_frame.py`` compares them, bit for bit,
    over many heights); computing them here saves the first figure of a
    process about 60 ms of plotly's subplot machinery.
    """
    vertical = 0.08 if top < 400 else 0.05
    across = _SHARED_WIDTH - HORIZONTAL_SPACING
    total = float(sum(COLUMN_WIDTHS))
    left_width, right_width = (across * (w / total) for w in COLUMN_WIDTHS)
    rows = float(top + BUSY_HEIGHT)
    busy_height = (1.0 - vertical) * (BUSY_HEIGHT / rows)
    top_height = (1.0 - vertical) * (top / rows)
    # Columns from the left, rows from the bottom; a domain end just past 1
    # (rounding) is 1.
    left = [0.0, 0.0 + left_width]
    right_start = left_width + HORIZONTAL_SPACING
    right = [right_start, right_start + right_width]
    timeline_start = busy_height + vertical
    timeline_y = [timeline_start, min(timeline_start + top_height, 1.0)]
    busy_y = [0.0, 0.0 + busy_height]
    table_y = [0.0, timeline_y[1]]
    layout: dict[str, Any] = {
        "xaxis": {
            "anchor": "y",
            "domain": list(left),
            "showticklabels": True,
            "rangemode": "tozero",
        },
        "yaxis": {"anchor": "x", "domain": timeline_y},
        "xaxis2": {
            "anchor": "y2",
            "domain": list(left),
            "title": {"text": AXIS_TIME},
            "matches": "x",
        },
        "yaxis2": {"anchor": "x2", "domain": busy_y},
        "yaxis3": {"anchor": "x2", "overlaying": "y2", "side": "right"},
        "annotations": [
            {
                "font": {"size": 16},
                "showarrow": False,
                "text": text,
                "x": sum(x) / 2.0,
                "xanchor": "center",
                "xref": "paper",
                "y": y[1],
                "yanchor": "bottom",
                "yref": "paper",
            }
            for text, x, y in zip(
                _TITLES, (left, right, left), (timeline_y, table_y, busy_y), strict=True
            )
        ],
        "legend": {"x": 0.755, "y": 0.0, "xanchor": "left", "yanchor": "bottom"},
        "margin": {"l": 10, "r": 10, "t": 70, "b": 50},
        "uniformtext": {"minsize": 8, "mode": "hide"},
        "height": top + BUSY_HEIGHT + 130,
        "barmode": "overlay",
        "hovermode": "closest",
        "uirevision": "campaign",  # a live refresh keeps the user's zoom
        # The template as plotly keeps it: checking it into the layout would
        # cost 50 ms for the first figure of a process, 10 ms for each size after.
        "template": pio.templates[TEMPLATE].to_plotly_json(),
    }
    return Grid(
        layout=pickle.dumps(layout),
        timeline=("x", "y"),
        busy=("x2", "y2"),
        busy_right=("x2", "y3"),
        table={"x": list(right), "y": table_y},
    )


def frame(top: int, labels: Sequence[str], keys: Sequence[str]) -> tuple[dict[str, Any], Grid]:
    """The figure's layout before any trace: the panels, the rows' axis and keys.

    Args:
        top: the timeline panel's height in pixels.
        labels: the rows' labels, shown on the axis up to ``LABELLED_ROWS`` rows.
        keys: the rows' keys (a click on a row says which), in row order.
    """
    panels = grid(top)
    layout: dict[str, Any] = pickle.loads(panels.layout)  # our own bytes: a deep copy
    axis = layout[axis_key(panels.timeline[1])]
    labelled = len(keys) <= LABELLED_ROWS
    if not labelled:
        axis["title"] = {"text": f"{len(keys)} workflow instances"}
    axis["range"] = [len(keys) - 0.5, -0.5]
    axis["tickmode"] = "array" if labelled else "auto"
    if labelled:
        axis["tickvals"] = list(range(len(keys)))
        axis["ticktext"] = list(labels)
    axis["automargin"] = True
    layout["meta"] = {"rows": list(keys)}
    return layout, panels


def placed(trace: Trace, axes: tuple[str, str]) -> Trace:
    """``trace`` drawn on ``axes`` (x, y); returns it."""
    trace["xaxis"], trace["yaxis"] = axes
    return trace


def busy_traces(
    layout: dict[str, Any],
    panels: Grid,
    end: float,
    peaks: Mapping[str, int],
    drawn: Mapping[str, c.Steps],
    caps: Mapping[str, c.Capacity],
) -> list[Trace]:
    """The busy-slot panel's traces; sets its axes in ``layout``.

    Args:
        layout, panels: the figure's, from :func:`frame`.
        end: the run's "now", in seconds since its start.
        peaks: the most slots of each kind busy at once.
        drawn: the busy steps of each kind as drawn (an envelope of many).
        caps: the capacities.
    """
    shown = [k for k in c.KINDS if peaks[k] or caps[k].value]
    traces: list[Trace] = []
    for kind, colour in ((n.KIND_GPU, GPU_COLOUR), (n.KIND_CPU, CPU_COLOUR)):
        if kind not in shown:
            continue
        # CPUs take the right axis only beside GPUs: an overlaying axis with
        # nothing under it would cover the whole figure and take its clicks.
        secondary = kind == n.KIND_CPU and n.KIND_GPU in shown
        axes = panels.busy_right if secondary else panels.busy
        steps, cap, label = drawn[kind], caps[kind], kind.upper()
        traces.append(
            {
                "hovertemplate": f"%{{x:.3f}} s: %{{y}} {label} busy<extra></extra>",
                "legendgroup": "busy",
                "line": {"color": colour, "shape": "hv", "width": 2},
                "mode": "lines",
                "name": f"{label} busy",
                "x": list(steps.times),
                "y": list(steps.values),
                "type": "scatter",
            }
        )
        traces.append(
            {
                "hovertemplate": f"{label} capacity {cap.value} ({cap.source})<extra></extra>",
                "legendgroup": "busy",
                "line": {"color": colour, "dash": "dash", "width": 1.5},
                "mode": "lines",
                "name": f"{label} capacity ({cap.source})",
                "x": [0.0, max(end, steps.times[-1])],
                "y": [cap.value, cap.value],
                "type": "scatter",
            }
        )
        for trace in traces[-2:]:
            placed(trace, axes)
        # Different headroom per axis keeps the two capacity lines apart.
        headroom = 1.35 if secondary else 1.12
        top = max(cap.value, peaks[kind], 1) * headroom
        layout[axis_key(axes[1])].update(
            title={"text": f"{label} busy slots"},
            range=[0, top],
            dtick=max(1, math.ceil(top / 5)),
            showgrid=not secondary,
        )
    return traces


def config_table(rows: Sequence[c.TypeConfig], panels: Grid) -> Trace:
    """The configuration table: a row per workflow type."""
    columns = [
        [r.workflow_type for r in rows],
        [r.instances for r in rows],
        [r.tasks for r in rows],
        [r.cpus for r in rows],
        [r.gpus for r in rows],
        [r.priority for r in rows],
        [", ".join(r.depends_on) or "-" for r in rows],
    ]
    return {
        "cells": {"align": "left", "font": {"size": 11}, "height": 24, "values": columns},
        "columnwidth": [1.5, 0.9, 0.9, 0.6, 0.6, 0.6, 1.3],
        "header": {
            "align": "left",
            "fill": {"color": "#EEF1F5"},
            "font": {"size": 11},
            "values": ["type", "n", "tasks", "cpus", "gpus", "prio", "after"],
        },
        "type": "table",
        "domain": {k: list(v) for k, v in panels.table.items()},
    }


def title(layout: dict[str, Any], text: str, subtitle: str | None) -> None:
    """Set the figure's title: plain text in both parts (``escape_figure`` escapes them)."""
    # Plotly draws the subtitle as the smaller second line (no <br><sup>
    # markup of the builders' own to keep apart from user text).
    layout["title"] = {
        "font": {"size": 15},
        **({"subtitle": {"text": subtitle}} if subtitle is not None else {}),
        "text": text,
        "x": 0.01,
        "y": 0.99,
        "yanchor": "top",
    }


def figure(traces: list[Trace], layout: dict[str, Any]) -> go.Figure:
    """The figure of ``traces`` and ``layout``, taken as they are (already plotly's values)."""
    return go.Figure({"data": traces, "layout": layout}, _validate=False)
