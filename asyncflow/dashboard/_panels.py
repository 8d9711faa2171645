"""The utilisation and summary figures. Pure: a run in, a plotly figure out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from asyncflow.telemetry import names as n

from . import compute as c
from ._plot import AXIS_TIME, PALETTE, STATUS_COLOURS, TEMPLATE, empty_figure, template_text
from .model import Run, status

__all__ = ["STATE_COLOURS", "summary_figure", "utilisation_figure"]

STATE_COLOURS = STATUS_COLOURS
_SAMPLES = ("CPU %", "memory %", "GPU %")


def utilisation_figure(
    run: Run, *, capacity: Mapping[str, int] | None = None, max_steps: int = c.ENVELOPE_POINTS
) -> go.Figure:
    """Slot occupancy per backend and resource kind, and sampled node utilisation.

    Args:
        run: the run.
        capacity: capacities to draw when the run recorded none (``{"gpu": 4}``).
        max_steps: step functions with more changes show per-bin peaks.
    """
    if not run.tasks and not run.samples:
        return empty_figure("Nothing to show yet: no tasks and no node samples.")
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.33, 0.33, 0.34],
        vertical_spacing=0.08,
        subplot_titles=(
            "GPU slots busy, per backend",
            "CPU slots busy, per backend",
            "Node utilisation (sampled)",
        ),
    )
    end = run.rel(run.end)
    names = c.backends(run)
    for index, backend in enumerate(names):
        hue = PALETTE[index % len(PALETTE)]
        given = capacity if len(names) == 1 else None
        busy = {kind: c.busy_steps(run, kind, backend) for kind in c.KINDS}
        caps = c.capacities(run, given, backend, steps=busy)
        for row, kind in enumerate(c.KINDS, start=1):
            steps = c.envelope(busy[kind], max_steps)
            cap = caps[kind]
            if not steps.peak and not cap.value:
                continue
            label = f"{backend} {kind.upper()}"
            fig.add_trace(
                go.Scatter(
                    x=steps.times,
                    y=steps.values,
                    mode="lines",
                    line={"shape": "hv", "color": hue, "width": 2},
                    name=f"{label} busy",
                    hovertemplate=f"%{{x:.3f}} s: %{{y}} busy<extra>{template_text(label)}</extra>",
                ),
                row=row,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=[0.0, max(end, steps.times[-1])],
                    y=[cap.value, cap.value],
                    mode="lines",
                    line={"dash": "dash", "color": hue, "width": 1.5},
                    name=f"{label} capacity {cap.value} ({cap.source})",
                    hoverinfo="skip",
                ),
                row=row,
                col=1,
            )
            fig.update_yaxes(range=[0, max(cap.value, steps.peak, 1) * 1.15], row=row, col=1)
    by_node: dict[str, list[tuple[float, tuple[float | None, ...]]]] = defaultdict(list)
    for s in run.samples:
        by_node[s.node].append((run.rel(s.time), (s.cpu, s.memory, s.gpu)))
    for node, samples in sorted(by_node.items()):
        samples.sort(key=lambda sample: sample[0])
        for position, label in enumerate(_SAMPLES):
            points = [(t, v[position]) for t, v in samples if v[position] is not None]
            if not points:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in points],
                    y=[p[1] for p in points],
                    mode="lines+markers",
                    marker_size=4,
                    name=f"{node} {label}",
                    hovertemplate=(
                        f"%{{x:.1f}} s: %{{y:.1f}} {label}<extra>{template_text(node)}</extra>"
                    ),
                ),
                row=3,
                col=1,
            )
    if not by_node:
        # An empty trace keeps the third subplot's axes, which the note is placed on.
        fig.add_trace(
            go.Scatter(x=[0.0, end], y=[None, None], showlegend=False, hoverinfo="skip"),
            row=3,
            col=1,
        )
        fig.add_annotation(
            text="No node samples in this run (the engine samples every resource_poll_interval).",
            showarrow=False,
            xref="x domain",
            yref="y domain",
            x=0.5,
            y=0.5,
            row=3,
            col=1,
        )
    fig.update_yaxes(title_text="busy slots", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="busy slots", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="percent", range=[0, 105], row=3, col=1)
    fig.update_xaxes(title_text=AXIS_TIME, row=3, col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=700,
        margin={"l": 10, "r": 10, "t": 60, "b": 50},
        legend={"orientation": "v"},
        hovermode="closest",
    )
    return fig


def summary_figure(run: Run) -> go.Figure:
    """Tasks by state per workflow type, and run durations per task name."""
    if not run.tasks:
        return empty_figure("No tasks recorded yet.")
    rows = c.timeline_rows(run)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        for task in row.tasks:
            counts[status(task)][row.workflow_type or c.NO_WORKFLOW] += 1
    summary = c.summarize(run)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=(
            "Tasks by state and workflow type",
            f"{n.PHASE_RUN_TIME.capitalize()} per task name (mean, p95)",
        ),
    )
    types = sorted({r.workflow_type or c.NO_WORKFLOW for r in rows})
    for state, colour in STATE_COLOURS.items():
        if state in counts:
            fig.add_trace(
                go.Bar(
                    x=types,
                    y=[counts[state].get(t, 0) for t in types],
                    name=state,
                    marker_color=colour,
                ),
                row=1,
                col=1,
            )
    stats = summary.by_task_name
    if stats:
        fig.add_trace(
            go.Bar(
                x=[s.mean for s in stats],
                y=[s.name for s in stats],
                orientation="h",
                name=f"mean {n.PHASE_RUN_TIME}",
                marker_color="#0072B2",
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(s.p95 - s.mean, 0.0) for s in stats],
                    "arrayminus": [0.0] * len(stats),
                },
                customdata=[[s.count, s.p50, s.p95, s.max] for s in stats],
                hovertemplate=(
                    "%{y}: %{customdata[0]} runs, mean %{x:.3f} s, p50 %{customdata[1]:.3f} s, "
                    "p95 %{customdata[2]:.3f} s, max %{customdata[3]:.3f} s<extra></extra>"
                ),
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="seconds", row=1, col=2)
    fig.update_yaxes(title_text="tasks", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        barmode="stack",
        height=max(360, min(900, 120 + 22 * len(stats))),
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig
