"""What the figure builders share: colours, labels, compact arrays. Pure."""

from __future__ import annotations

import array
import base64
import datetime
import html
import math
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from .model import (
    STATE_CANCELED,
    STATE_COMPLETED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    Run,
    SpanRecord,
    phases,
    status,
)

__all__ = [
    "CASCADE",
    "FAILED",
    "PALETTE",
    "STATUS_COLOURS",
    "clock",
    "clock_axes",
    "empty_figure",
    "escape_figure",
    "escape_text",
    "merge_segments",
    "slot_label",
    "task_hover",
    "template_text",
    "type_colours",
    "typed_array",
    "unescape_text",
    "values_of",
]

# Colour-blind-safe colours for workflow types; red is kept for failures.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#8C6D31",
    "#F0E442",
    "#6A3D9A",
    "#999999",
    "#1B9E77",
)
FAILED = "#D62728"
CASCADE = "#F4A3A3"  # skipped because a dependency failed: a paler red than a root failure
CANCELED = "#7F7F7F"
WAIT = "#D5D9DF"
QUEUE = "#F2B134"
RUN = "#0072B2"
STATUS_COLOURS = {
    STATE_WAITING: WAIT,
    STATE_QUEUED: QUEUE,
    STATE_RUNNING: "#56B4E9",
    STATE_COMPLETED: "#009E73",
    STATE_FAILED: FAILED,
    STATE_DEPENDENCY_FAILED: CASCADE,
    STATE_CANCELED: CANCELED,
}
GPU_COLOUR = "#6A3D9A"
CPU_COLOUR = "#0072B2"
TEMPLATE = "plotly_white"
AXIS_TIME = "seconds since the session started"

_CODES = {"f": "f4", "d": "f8", "H": "u2", "I": "u4"}


def type_colours(types: Iterable[str]) -> dict[str, str]:
    """A colour per workflow type, in sorted order, so colours stay put as a run grows."""
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(sorted(set(types)))}


def slot_label(task: SpanRecord) -> str:
    """``"gpu:1"``, ``"gpu:0,cpu:3"``; without assigned slots what it asked for: ``"1 gpu"``."""
    if task.slots:
        return ",".join(task.slots)
    if task.gpus:
        return f"{task.gpus} {n.KIND_GPU}"
    return f"{task.cpus} {n.KIND_CPU}"


def clock(t: float, *, date: bool = False) -> str:
    """Epoch seconds as this machine's clock time: ``"14:03:07.250"``, or with date and zone."""
    moment = datetime.datetime.fromtimestamp(t).astimezone()
    if date:
        return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


AXIS_CLOCK = "clock time"
_SECONDS_HOVER = "%{x:.3f} s"


def clock_axes(fig: go.Figure, start: float) -> go.Figure:
    """A copy of a time figure with its x axes in clock time instead of seconds since ``start``.

    Every x value of the figure must be seconds since ``start`` (the
    timeline, Gantt, utilisation and slot figures). Plotly date axes take
    milliseconds; shifting by this machine's UTC offset makes them read as
    its local clock, as the header does.
    """
    out = go.Figure(fig)
    moment = datetime.datetime.fromtimestamp(start).astimezone()
    offset = moment.utcoffset() or datetime.timedelta()
    zero = (start + offset.total_seconds()) * 1000.0
    for trace in out.data:
        if trace.type not in ("bar", "scatter", "scattergl"):
            continue
        xs = values_of(trace.x)
        if trace.type == "bar" and trace.base is not None:
            trace.base = [zero + b * 1000.0 for b in values_of(trace.base)]
            trace.x = [v * 1000.0 for v in xs]
        else:
            shifted = [zero + v * 1000.0 for v in xs]
            if isinstance(trace.x, dict) or trace.type == "scattergl":
                trace.x = typed_array(shifted, "d")
            else:
                trace.x = [None if math.isnan(v) else v for v in shifted]
        template = trace.hovertemplate
        if isinstance(template, str) and _SECONDS_HOVER in template:
            trace.hovertemplate = template.replace(_SECONDS_HOVER, "%{x|%H:%M:%S.%L}")
    zone = moment.strftime("%Z") or "local"
    for name in out.layout:
        if name.startswith("xaxis"):
            axis = out.layout[name]
            axis.type = "date"
            axis.rangemode = None
            axis.range = None
            if axis.title.text:
                axis.title.text = f"{AXIS_CLOCK} ({zone})"
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


HOVER_MESSAGE_CHARS = 300  # the first characters of an error message in a hover


def task_hover(task: SpanRecord, run: Run, where: str) -> str:
    """What hovering over a task says: ids, workflow, state, start, the phases, slots, error.

    Plotly renders a hover as a little HTML, so every recorded string is
    escaped. An unfinished phase counts up to the latest time seen.

    Args:
        task: the task.
        run: its run (for the session start and "now").
        where: the workflow instance it belongs to, as the view names it.
    """
    esc = html.escape
    state = status(task)
    took = phases(task)
    now = run.end
    lines = [
        f"<b>{esc(task.uid)} {esc(task.name or '?')}</b>",
        f"workflow: {esc(where)}",
        f"state: {state}",
    ]
    first = task.started if task.started is not None else task.created
    step = "start" if task.started is not None else "created"
    lines.append(f"{step}: {clock(first)} (+{run.rel(first):.3f} s)")
    wait = took[n.PHASE_DEPENDENCY_WAIT]
    if wait is None and state == STATE_WAITING:
        lines.append(f"{n.PHASE_DEPENDENCY_WAIT}: {_seconds(now - task.created)} so far")
    else:
        lines.append(f"{n.PHASE_DEPENDENCY_WAIT}: {_seconds(wait)}")
    queue = took[n.PHASE_QUEUE_WAIT]
    if queue is None and state == STATE_QUEUED and task.resolved is not None:
        lines.append(f"{n.PHASE_QUEUE_WAIT}: {_seconds(now - task.resolved)} so far")
    else:
        lines.append(f"{n.PHASE_QUEUE_WAIT}: {_seconds(queue)}")
    ran = took[n.PHASE_RUN_TIME]
    if ran is None and state == STATE_RUNNING and task.started is not None:
        lines.append(f"{n.PHASE_RUN_TIME}: {_seconds(now - task.started)} so far")
    else:
        lines.append(f"{n.PHASE_RUN_TIME}: {_seconds(ran)}")
    lines.append(f"slots: {esc(slot_label(task))}")
    if task.error_type:
        message = task.message[:HOVER_MESSAGE_CHARS]
        lines.append(f"error: {esc(task.error_type)}: {esc(message)}")
    return "<br>".join(lines)


def typed_array(values: Sequence[float], code: str = "f") -> dict[str, str]:
    """A plotly.js typed array (base64): a quarter of the bytes of JSON numbers.

    Args:
        values: the numbers; NaN breaks a line.
        code: ``"f"`` float32, ``"d"`` float64, ``"H"`` uint16, ``"I"`` uint32.
    """
    return {"dtype": _CODES[code], "bdata": base64.b64encode(array.array(code, values)).decode()}


def values_of(value: Any) -> list[float]:
    """The numbers of a trace property: a list, a tuple or a typed array."""
    if isinstance(value, dict) and "bdata" in value:
        codes = {v: k for k, v in _CODES.items()}
        return list(array.array(codes[value["dtype"]], base64.b64decode(value["bdata"])))
    if value is None:
        return []
    return [math.nan if v is None else v for v in value]


def merge_segments(
    spans: Mapping[tuple[int, str], list[tuple[float, float]]],
    kinds: list[str],
    group: int,
    pixel: float,
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Per type, WebGL line segments of ``spans`` with gaps under a pixel closed.

    Args:
        spans: ``(line, type)`` -> ``(start, end)`` pairs; ``line`` numbers a
            group of ``group`` rows.
        kinds: every type, sorted: within a group, each type keeps a sub-line.
        group: rows per line.
        pixel: the time one pixel shows.

    Returns:
        x and y per type (NaN between segments), and the number of segments.
    """
    xs: dict[str, list[float]] = defaultdict(list)
    ys: dict[str, list[float]] = defaultdict(list)
    nan, drawn = math.nan, 0
    for (line_no, wf_type), found in spans.items():
        x, y = xs[wf_type], ys[wf_type]
        share = (kinds.index(wf_type) + 0.5) / len(kinds) if group > 1 else 0.5
        row_y = line_no * group + share * group - 0.5
        found.sort()
        lo, hi = found[0] if found else (0.0, -math.inf)
        for start, end in found[1:]:
            if start > hi + pixel:
                x += (lo, hi, nan)
                y += (row_y, row_y, row_y)
                drawn += 1
                lo = start
            hi = max(hi, end)
        if found:
            x += (lo, hi, nan)
            y += (row_y, row_y, row_y)
            drawn += 1
    return xs, ys, drawn


def empty_figure(message: str, height: int = 320) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font_size=15
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        xaxis_visible=False,
        yaxis_visible=False,
        margin={"l": 20, "r": 20, "t": 30, "b": 20},
    )
    return fig


# Plotly renders a subset of HTML in every text it draws (``<a href>``,
# ``<span style>``, ``<br>``): a task named ``<a href="...">`` would become a
# live link. Entities are decoded, so escaped text shows as written.
# Hover texts and templates are not here: their builders write them as a
# little HTML (line breaks, bold) and escape what they put in (see task_hover,
# template_text).
_TRACE_TEXT = ("name", "text", "customdata", "x", "y", "labels")
_TABLE_TEXT = ("header", "cells")


def escape_text(text: str) -> str:
    """``text`` as Plotly shows it literally (``&``, ``<`` and ``>`` escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def template_text(text: str) -> str:
    """``text`` for a hover or text template, which Plotly shows as written.

    Escaped as :func:`escape_text` does, and ``%`` as its character
    reference: Plotly fills in a template's ``%{...}`` before it decodes the
    references, so a ``%{y}`` in a backend's name is not filled in.
    """
    return escape_text(text).replace("%", "&#37;")


def unescape_text(text: str) -> str:
    """The text :func:`escape_text` was given (e.g. from a click's customdata)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


_NUMBERS = frozenset({int, float, bool, type(None)})


def _escaped(value: Any) -> Any:
    """``value`` with every string in it escaped; ``value`` itself when none needed it."""
    if isinstance(value, str):
        return escape_text(value) if ("<" in value or ">" in value or "&" in value) else value
    if isinstance(value, (list, tuple)):
        # Most arrays of a figure are numbers: told at C speed, not walked.
        if _NUMBERS.issuperset(map(type, value)):
            return value
        escaped = [_escaped(v) for v in value]
        return value if all(map(operator.is_, escaped, value)) else escaped
    if getattr(value, "dtype", None) is not None and value.dtype.kind in "OU":
        listed = value.tolist()
        escaped = _escaped(listed)
        return value if escaped is listed else escaped
    return value  # numbers, typed arrays, None


def _escape_props(obj: Any, names: Iterable[str]) -> None:
    for name in names:
        if name not in obj:  # not a property of this trace type
            continue
        value = obj[name]
        escaped = _escaped(value)
        if escaped is not value:
            obj[name] = escaped


def escape_figure(fig: go.Figure) -> go.Figure:
    """Escape every text of ``fig`` that can hold user strings; returns ``fig``.

    Trace names, texts, custom data, category values, table cells, titles
    and subtitles, tick labels and annotations: all of them plain text,
    never the builders' markup. Hover texts and templates are left alone:
    the builders write them as a little HTML and escape what they put in.
    """
    for trace in fig.data:
        _escape_props(trace, _TRACE_TEXT)
        if trace.type == "table":
            for part in _TABLE_TEXT:
                _escape_props(trace[part], ("values",))
    layout = fig.layout
    _escape_props(layout.title, ("text",))
    _escape_props(layout.title.subtitle, ("text",))
    for key in list(layout):
        if key.startswith(("xaxis", "yaxis")):
            axis = layout[key]
            _escape_props(axis, ("ticktext",))
            _escape_props(axis.title, ("text",))
    for note in layout.annotations:
        _escape_props(note, ("text",))
    _escape_props(layout.legend.title, ("text",))
    return fig
