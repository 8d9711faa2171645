"""Figure builders: pure functions from a :class:`~asyncflow.dashboard.model.Run` to plotly figures.

Used by the Dash app, by ``asyncflow report`` and by scripts such as
``examples/plot_campaign.py``. Nothing here reads a file or needs a browser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from . import _gantt, _panels, _plot, _slots, _timeline
from ._gantt import GANTT_LIMIT
from ._panels import STATE_COLOURS
from ._plot import (
    FAILED,
    PALETTE,
    STATUS_COLOURS,
    clock,
    clock_axes,
    escape_text,
    slot_label,
    task_hover,
    type_colours,
    unescape_text,
    values_of,
)
from ._slots import LANE_BAR_LIMIT
from ._timeline import BAR_LIMIT, MAX_STEPS, zoom_window


def _escaping(build: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
    """``build``, with every user string of its figure escaped for Plotly."""

    @functools.wraps(build)
    def escaped(*args: Any, **kwargs: Any) -> go.Figure:
        return _plot.escape_figure(build(*args, **kwargs))

    return escaped


campaign_figure = _escaping(_timeline.campaign_figure)
gantt_figure = _escaping(_gantt.gantt_figure)
slots_figure = _escaping(_slots.slots_figure)
summary_figure = _escaping(_panels.summary_figure)
utilisation_figure = _escaping(_panels.utilisation_figure)
empty_figure = _escaping(_plot.empty_figure)

__all__ = [
    "BAR_LIMIT",
    "FAILED",
    "GANTT_LIMIT",
    "LANE_BAR_LIMIT",
    "MAX_STEPS",
    "PALETTE",
    "STATE_COLOURS",
    "STATUS_COLOURS",
    "campaign_figure",
    "clock",
    "clock_axes",
    "empty_figure",
    "escape_text",
    "gantt_figure",
    "slot_label",
    "slots_figure",
    "summary_figure",
    "task_hover",
    "type_colours",
    "unescape_text",
    "utilisation_figure",
    "values_of",
    "zoom_window",
]
