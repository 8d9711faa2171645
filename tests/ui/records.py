"""A small campaign written out by hand, as checkpoint-shaped span dicts.

Times are seconds after the session start ``T0``; every number below is
known, so the figure tests can check bars, step values and capacities.

    row  instance  type      task   gpus  slots            run        state
    0    wf-a      simulate  t1     1     gpu:0,cpu:0      1.0 - 3.0  completed
    1    wf-b      simulate  t2     1     gpu:1,cpu:1      1.5 - 4.0  completed
    2    wf-c      train     t3     1     gpu:0,cpu:2      3.0 - 5.0  completed
    3    wf-d      evaluate  t4     0     cpu:0            5.0 - 6.0  completed
    3    wf-d      evaluate  t5     0     cpu:1            6.0 - 6.5  failed (ValueError)

GPU busy: 0 before 1.0, 1 on [1.0, 1.5), 2 on [1.5, 4.0), 1 on [4.0, 5.0),
0 from 5.0. CPU busy (slots): 1, 2, 2, 1, then 1 on [5.0, 6.5), 0 after.
Recorded capacity: 4 GPUs and 8 CPUs.
"""

from __future__ import annotations

from typing import Any

from asyncflow.dashboard.model import Run, RunBuilder
from asyncflow.telemetry import names as n

T0 = 1_800_000_000.0
NS = 1_000_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

TASKS = [
    # uid, workflow, type, gpus, slots, started, finished, result
    ("task.000001", "wf-a", "simulate", 1, ["gpu:0", "cpu:0"], 1.0, 3.0, "completed"),
    ("task.000002", "wf-b", "simulate", 1, ["gpu:1", "cpu:1"], 1.5, 4.0, "completed"),
    ("task.000003", "wf-c", "train", 1, ["gpu:0", "cpu:2"], 3.0, 5.0, "completed"),
    ("task.000004", "wf-d", "evaluate", 0, ["cpu:0"], 5.0, 6.0, "completed"),
    ("task.000005", "wf-d", "evaluate", 0, ["cpu:1"], 6.0, 6.5, "failed"),
]
ROWS = ["wf-a", "wf-b", "wf-c", "wf-d"]
TYPE_OF = {"wf-a": "simulate", "wf-b": "simulate", "wf-c": "train", "wf-d": "evaluate"}
GPU_CAPACITY, CPU_CAPACITY = 4, 8


def ns(t: float) -> int:
    """Seconds after ``T0`` as epoch nanoseconds."""
    return round((T0 + t) * NS)


def task_span(
    uid: str,
    workflow: str,
    wf_type: str,
    gpus: int,
    slots: list[str] | None,
    started: float | None,
    finished: float,
    result: str = "completed",
    created: float | None = None,
    depends_on: tuple[str, ...] = (),
    name: str = "step",
) -> dict[str, Any]:
    """A task span as the checkpoint file writes it."""
    created = (
        (started - 0.5 if started is not None else finished - 0.5) if created is None else created
    )
    attrs: dict[str, Any] = {
        n.LEVEL: n.LEVEL_TASK,
        n.WORKFLOW_NAME: wf_type,
        n.TASK_NAME: name,
        n.TASK_TYPE: n.TYPE_FUNCTION,
        n.BACKEND: "local",
        n.TASK_CPUS: 1,
        n.TASK_GPUS: gpus,
        n.WORKFLOW_ID: workflow,
        n.TASK_UID: uid,
        n.TASK_DEPENDS_ON: list(depends_on),
        n.TASK_RESULT: result,
    }
    if slots is not None:
        attrs[n.TASK_SLOTS] = slots
    if result == "failed":
        attrs[n.ERROR_TYPE] = "ValueError"
    events = [{"name": n.SPAN_EVENT_RESOLVED, "time_ns": ns(created + 0.1)}]
    if started is not None:
        events += [
            {"name": n.SPAN_EVENT_QUEUED, "time_ns": ns(created + 0.2)},
            {"name": n.SPAN_EVENT_SUBMITTED, "time_ns": ns(created + 0.3)},
            {"name": n.SPAN_EVENT_STARTED, "time_ns": ns(started)},
        ]
    return {
        "section": n.SECTION_SPAN,
        "name": n.span_name(n.LEVEL_TASK, name),
        "span_id": f"{int(uid.split('.')[1]):016x}",
        "trace_id": TRACE,
        "parent_span_id": None,
        "start_ns": ns(created),
        "end_ns": ns(finished),
        "status_code": "ERROR" if result == "failed" else "OK",
        "status_description": "evaluation set is empty" if result == "failed" else "",
        "attributes": attrs,
        "events": events,
    }


def session_span(end: float = 7.0) -> dict[str, Any]:
    """The session span: its start is the zero of the time axes."""
    return {
        "section": n.SECTION_SPAN,
        "name": n.SPAN_SESSION,
        "span_id": "00000000000000ff",
        "trace_id": TRACE,
        "parent_span_id": None,
        "start_ns": ns(0.0),
        "end_ns": ns(end),
        "status_code": "UNSET",
        "status_description": "",
        "attributes": {n.LEVEL: n.LEVEL_SESSION, n.SESSION_ID: "asyncflow.session.test"},
        "events": [],
    }


def metric_snapshot(t: float = 7.0) -> dict[str, Any]:
    """A metric snapshot with the slot capacities."""
    return {
        "section": n.SECTION_METRIC,
        "time_s": T0 + t,
        "resource_slots": {
            f"local/{n.KIND_GPU}/{n.SLOT_BUSY}": 0,
            f"local/{n.KIND_GPU}/{n.SLOT_IDLE}": GPU_CAPACITY,
            f"local/{n.KIND_CPU}/{n.SLOT_BUSY}": 0,
            f"local/{n.KIND_CPU}/{n.SLOT_IDLE}": CPU_CAPACITY,
        },
    }


def campaign_spans(*, slots: bool = True) -> list[dict[str, Any]]:
    """The task spans of the campaign above (without slots: as today's backends write them)."""
    return [
        task_span(uid, wf, kind, gpus, list(s) if slots else None, start, end, result)
        for uid, wf, kind, gpus, s, start, end, result in TASKS
    ]


def campaign(*, slots: bool = True, snapshot: bool = True) -> Run:
    """The run of the campaign above."""
    builder = RunBuilder("test campaign")
    builder.add_span(session_span())
    for span in campaign_spans(slots=slots):
        builder.add_span(span)
    if snapshot:
        builder.add_metric_snapshot(metric_snapshot())
    return builder.snapshot()
