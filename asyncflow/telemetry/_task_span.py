"""A task's span kept on the task itself: no span object per task.

The engine makes one future per task anyway; the recorder keeps the state of
that task's span (its ids, its step times, its kind) in slots of the future
(:class:`TaskSpan`, declared here, is what it needs of it). What few tasks
have (an error, slots, attempts, attributes an enricher added, a status
other than OK) lives in one :class:`SpanMore`, made only for them.

Readers that want a span object (``read_traces()``, span processors,
subscribers) get a :class:`~asyncflow.telemetry._spans.LiveSpan` made on
demand by :func:`live_span`.

Pure: names only, no SDK, no asyncio, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from . import names as n
from ._spans import _NO_ATTRIBUTES, LiveSpan

if TYPE_CHECKING:
    from ._shapes import TaskShape
    from ._spans import LiveWorkflow

__all__ = ["SpanMore", "TaskSpan", "live_span", "more_of", "span_status"]


class TaskSpan(Protocol):
    """A task (or block) with its span's state in its own fields.

    The engine's ``TaskFuture`` has these slots; only telemetry sets or reads
    them, from ``task_created`` on (times are epoch ns, 0 until the step
    happened).
    """

    uid: str
    name: str
    kind: str
    workflow_id: str | None
    workflow_name: str | None
    task_description: dict[str, Any]
    span_id: int
    span_parent: int  # the parent span's id
    span_start: int  # created
    span_end: int
    span_resolved: int
    span_queued: int
    span_submitted: int
    span_started: int
    span_ids: int  # the first of its block of 8 event ids
    span_shape: TaskShape  # what its kind shares
    span_owner: LiveWorkflow | None  # the workflow scope it keeps open
    span_depends_on: tuple[str, ...]  # set when it ends
    span_slots: tuple[str, ...]  # its resource slots, once a backend gave them
    span_more: SpanMore | None  # what few tasks have; None: nothing of it


class SpanMore:
    """The parts of a task's span few tasks have, made only for them.

    A task that ended without one completed with status OK.
    """

    __slots__ = (
        "attempt_events",
        "error_type",
        "exception",
        "extra",
        "result",
        "status",
        "status_description",
    )

    def __init__(self) -> None:
        self.result = ""  # names.RESULT_* once it ended
        self.error_type = ""
        self.exception: tuple[str, str, str] | None = None  # type, message, stack trace
        self.extra: dict[str, Any] | None = None  # attributes: process, cache, attempts, enrichers
        # (time in ns, attributes) of each attempt of a task with retries
        self.attempt_events: list[tuple[int, dict[str, Any]]] | None = None
        self.status = n.STATUS_UNSET
        self.status_description = ""


def more_of(task: TaskSpan) -> SpanMore:
    """``task``'s :class:`SpanMore`, made now if it has none."""
    more = task.span_more
    if more is None:
        more = task.span_more = SpanMore()
    return more


def span_status(task: TaskSpan) -> tuple[str, str, str]:
    """``task``'s result, status and status description (all empty or
    unset while it runs)."""
    more = task.span_more
    if more is not None:
        return more.result, more.status, more.status_description
    if task.span_end:
        return n.RESULT_COMPLETED, n.STATUS_OK, ""
    return "", n.STATUS_UNSET, ""


def live_span(task: TaskSpan) -> LiveSpan:
    """``task``'s span as a :class:`LiveSpan`, made now: what it says at this
    moment, for a reader (``span_dict``, subscribers)."""
    shape = task.span_shape
    span = LiveSpan.__new__(LiveSpan)
    span.span_id = task.span_id
    span.parent = task.span_parent
    span.level = shape.level
    span.name = shape.span_name
    span.start_ns = task.span_start
    span.end_ns = task.span_end
    span.t_resolved = task.span_resolved
    span.t_queued = task.span_queued
    span.t_submitted = task.span_submitted
    span.t_started = task.span_started
    span.id_base = task.span_ids
    span.attributes = _NO_ATTRIBUTES
    span.backend = shape.backend if shape.active is not None else None
    span.uid = task.uid
    span.workflow_id = task.workflow_id
    span.fut = task
    span.shape = shape
    span.depends_on = task.span_depends_on
    span.owner = task.span_owner
    span.result, span.status, span.status_description = span_status(task)
    more = task.span_more
    if more is None:
        span.error_type = ""
        span.exception = span.extra = span.attempt_events = None
    else:
        span.error_type = more.error_type
        span.exception = more.exception
        span.extra = more.extra
        span.attempt_events = more.attempt_events
    span.slots = task.span_slots
    return span
