"""What the figure builders share: colours, labels, compact arrays. Pure."""

from __future__ import annotations

import array
import base64
import math
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go

from asyncflow.telemetry import names as n

from .model import SpanRecord

__all__ = [
    "FAILED",
    "PALETTE",
    "empty_figure",
    "slot_label",
    "type_colours",
    "typed_array",
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
CANCELED = "#7F7F7F"
WAIT = "#D5D9DF"
QUEUE = "#F2B134"
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
