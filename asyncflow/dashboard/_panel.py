"""The task panel: everything recorded about one task, as Dash components.

Dash renders text as text (React escapes it), so recorded strings are never
read as HTML here. Links to a task's dependencies and dependents are
buttons with a pattern-matching id (``{"type": TASK_LINK, "uid": ...}``)
that the app's callbacks turn into a new selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from asyncflow.telemetry import names as n

from . import compute as c
from ._plot import clock, slot_label
from .model import Run, SpanRecord, phases, status

__all__ = ["TASK_LINK", "find_task", "task_link", "task_panel"]

TASK_LINK = "task-link"
LINKS_SHOWN = 50  # dependents listed in the panel; the rest are counted


def find_task(run: Run, uid: str) -> SpanRecord | None:
    """The task or block ``uid`` of ``run``."""
    for record in (*run.tasks, *run.blocks):
        if record.uid == uid:
            return record
    return None


def task_link(uid: str, label: str | None = None) -> html.Button:
    """A button that opens task ``uid`` in the panel."""
    return html.Button(
        label or uid, id={"type": TASK_LINK, "uid": uid}, className="task-link", n_clicks=0
    )


def _when(run: Run, t: float | None) -> str:
    return "-" if t is None else f"{clock(t)} (+{run.rel(t):.3f} s)"


def _rows(pairs: Sequence[tuple[str, Any]]) -> html.Table:
    return html.Table(
        html.Tbody([html.Tr([html.Th(k), html.Td(v)]) for k, v in pairs]),
        className="table panel-table",
    )


def _host(run: Run) -> str:
    """The node the engine sampled (its tasks ran there unless a backend says otherwise)."""
    nodes = sorted({s.node for s in run.samples if s.node})
    return ", ".join(nodes) if nodes else "-"


def task_panel(run: Run, uid: str) -> list[Any]:
    """The panel of task ``uid``: ids, workflow, state history, phases, slots, failure, links."""
    task = find_task(run, uid)
    if task is None:
        return [html.P(f"No task {uid} in this run.", className="message warning")]
    keys = c.row_key(run)
    instance = keys.get(task.workflow_id, task.workflow_id) or c.NO_WORKFLOW
    state = status(task)
    took = phases(task)
    title: list[Any] = [html.B(f"{task.uid} {task.name}"), f"  {state}"]
    ids = [
        ("uid", task.uid),
        ("level", task.level),
        ("task type", task.kind or "-"),
        ("workflow instance", instance),
        ("workflow type", task.workflow_type or "-"),
        ("span id", task.span_id or "-"),
        ("backend", task.backend or "-"),
        ("host", _host(run)),
        ("slots", slot_label(task)),
        ("requested", f"{task.cpus} cpu, {task.gpus} gpu"),
    ]
    history = [
        (n.STEP_CREATED, _when(run, task.created)),
        (n.STEP_RESOLVED, _when(run, task.resolved)),
        (n.SPAN_EVENT_QUEUED, _when(run, task.queued)),
        (n.STEP_SUBMITTED, _when(run, task.submitted)),
        (n.STEP_STARTED, _when(run, task.started)),
        (f"{n.STEP_ENDED} ({task.state})", _when(run, task.finished)),
    ]
    timings = [(phase, "-" if v is None else f"{v:.3f} s") for phase, v in took.items()]
    out: list[Any] = [
        html.Div(
            [html.Span(title), html.Button("close", id="task-close", className="close")],
            className="panel-title",
        ),
        html.Div(
            [
                html.Div([html.H5("Task"), _rows(ids)]),
                html.Div([html.H5("State history"), _rows(history)]),
                html.Div([html.H5("Phases"), _rows(timings)]),
            ],
            className="panel-columns",
        ),
    ]
    if task.extra:
        out += [html.H5("Attributes"), _rows(list(task.extra))]
    if task.error_type or task.failure:
        out.append(html.H5(f"Error: {task.error_type}" if task.error_type else "Error"))
        if task.message:
            out.append(html.P(task.message, className="panel-message"))
        if task.failure:
            out.append(html.Pre(task.failure, className="traceback"))
        elif task.state == n.RESULT_FAILED:
            out.append(html.P("No traceback or stderr was recorded for this task."))
    out += _links(run, task)
    return out


def _links(run: Run, task: SpanRecord) -> list[Any]:
    dependents = [t.uid for t in run.tasks if task.uid in t.depends_on]
    out: list[Any] = []
    if task.depends_on:
        out += [html.H5("Depends on"), html.Div([task_link(d) for d in task.depends_on])]
    if dependents:
        shown: list[Any] = [task_link(d) for d in dependents[:LINKS_SHOWN]]
        if len(dependents) > LINKS_SHOWN:
            shown.append(html.Span(f" and {len(dependents) - LINKS_SHOWN} more"))
        out += [html.H5("Dependents"), html.Div(shown)]
    return out
