"""Figure builders: pure functions from a :class:`~asyncflow.dashboard.model.Run` to plotly figures.

Used by the Dash app, by ``asyncflow report`` and by scripts such as
``examples/plot_campaign.py``. Nothing here reads a file or needs a browser.
"""

from __future__ import annotations

from ._gantt import GANTT_LIMIT, gantt_figure
from ._panels import STATE_COLOURS, summary_figure, utilisation_figure
from ._plot import (
    FAILED,
    PALETTE,
    STATUS_COLOURS,
    clock,
    clock_axes,
    empty_figure,
    slot_label,
    task_hover,
    type_colours,
    values_of,
)
from ._slots import LANE_BAR_LIMIT, slots_figure
from ._timeline import BAR_LIMIT, MAX_STEPS, campaign_figure, zoom_window

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
    "gantt_figure",
    "slot_label",
    "slots_figure",
    "summary_figure",
    "task_hover",
    "type_colours",
    "utilisation_figure",
    "values_of",
    "zoom_window",
]
