"""The campaign figure's panels: the numbers plotly's ``make_subplots`` gives them.

``_frame.grid`` computes the domains itself (plotly's subplot machinery cost
the first figure of a process about 60 ms); here plotly lays the same grid
out, and every value must be the same, bit for bit, whatever the height.
"""

from __future__ import annotations

import pickle
from typing import Any

import plotly.io as pio
import pytest
from plotly.subplots import make_subplots

from asyncflow.dashboard import _frame as fr
from asyncflow.dashboard._plot import AXIS_TIME, TEMPLATE


def laid_out_by_plotly(top: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The layout and the table's domain as plotly makes them for this grid."""
    fig = make_subplots(
        rows=2,
        cols=2,
        column_widths=list(fr.COLUMN_WIDTHS),
        row_heights=[top, fr.BUSY_HEIGHT],
        specs=[
            [{"type": "xy"}, {"type": "table", "rowspan": 2}],
            [{"type": "xy", "secondary_y": True}, None],
        ],
        vertical_spacing=0.08 if top < 400 else 0.05,
        horizontal_spacing=fr.HORIZONTAL_SPACING,
        subplot_titles=("Workflow instances", "Configuration", "Busy slots"),
    )
    fig.update_xaxes(matches="x", row=2, col=1, title_text=AXIS_TIME)
    fig.update_xaxes(showticklabels=True, row=1, col=1, rangemode="tozero")
    fig.update_layout(
        height=top + fr.BUSY_HEIGHT + 130,
        barmode="overlay",
        legend={"x": 0.755, "y": 0.0, "xanchor": "left", "yanchor": "bottom"},
        margin={"l": 10, "r": 10, "t": 70, "b": 50},
        uniformtext={"minsize": 8, "mode": "hide"},
        hovermode="closest",
        uirevision="campaign",
    )
    layout = fig.to_plotly_json()["layout"]
    layout["template"] = pio.templates[TEMPLATE].to_plotly_json()
    table = fig.get_subplot(1, 2)
    return layout, {"x": list(table.x), "y": list(table.y)}


@pytest.mark.parametrize("top", [1, 40, 200, 333, 399, 400, 401, 640, 641, 977, 1500, 4000, 65_536])
def test_the_panels_are_where_plotly_puts_them(top: int) -> None:
    layout, table = laid_out_by_plotly(top)
    panels = fr.grid(top)
    assert pickle.loads(panels.layout) == layout
    assert panels.table == table
    assert (panels.timeline, panels.busy, panels.busy_right) == (
        ("x", "y"),
        ("x2", "y2"),
        ("x2", "y3"),
    )
