"""The spans the recorder keeps while they are open, and their dict form.

Pure: names only, no SDK, no asyncio, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import names as n

if TYPE_CHECKING:
    from ._shapes import TaskShape
    from .observer import TaskInfo

__all__ = [
    "LiveSpan",
    "LiveWorkflow",
    "count",
    "exception_event",
    "plain_attributes",
    "plain_value",
    "span_dict",
]

# The lifecycle steps before a task starts, in order: (LiveSpan attribute,
# span event name). The engine event of each is in the recorder.
STEPS = (
    ("t_resolved", n.SPAN_EVENT_RESOLVED),
    ("t_queued", n.SPAN_EVENT_QUEUED),
    ("t_submitted", n.SPAN_EVENT_SUBMITTED),
    ("t_started", n.SPAN_EVENT_STARTED),
)


_NO_ATTRIBUTES: dict[str, Any] = {}


class LiveSpan:
    """One span being recorded (session, workflow or a user span), or a
    task's (or block's) span as a reader sees it.

    A task's span is kept on the task itself (``_task_span.TaskSpan``); its
    ``LiveSpan`` is made only when something reads it (``read_traces()``,
    span processors, subscribers: ``_task_span.live_span``).
    """

    __slots__ = (
        "attempt_events",
        "attributes",
        "backend",
        "depends_on",
        "end_ns",
        "error_type",
        "exception",
        "extra",
        "fut",
        "id_base",
        "level",
        "name",
        "owner",
        "parent",
        "result",
        "shape",
        "slots",
        "span_id",
        "start_ns",
        "status",
        "status_description",
        "t_queued",
        "t_resolved",
        "t_started",
        "t_submitted",
        "uid",
        "workflow_id",
    )

    def __init__(self, span_id: int, parent: int | None, level: str, name: str) -> None:
        self.span_id = span_id
        self.parent = parent
        self.level = level
        self.name = name
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.t_resolved = self.t_queued = self.t_submitted = self.t_started = 0
        self.id_base = 0
        # Shared and empty until a span with attributes of its own (session,
        # workflow, user span) assigns a new dict; a task or block span reads
        # its attributes from the task and never writes here.
        self.attributes: dict[str, Any] = _NO_ATTRIBUTES
        self.backend: str | None = None
        self.uid: str | None = None
        self.workflow_id: str | None = None
        self.fut: TaskInfo | None = None  # tasks and blocks: attributes come from it
        self.shape: TaskShape | None = None  # tasks and blocks: what their kind shares
        self.result = ""
        self.error_type = ""
        self.exception: tuple[str, str, str] | None = None  # type, message, stack trace
        self.depends_on: tuple[str, ...] = ()
        self.extra: dict[str, Any] | None = None  # attributes added by enrichers
        self.slots: tuple[str, ...] = ()
        # (time in ns, attributes) of each attempt of a task with retries
        self.attempt_events: list[tuple[int, dict[str, Any]]] | None = None
        self.owner: LiveWorkflow | None = None
        self.status = n.STATUS_UNSET
        self.status_description = ""

    def attributes_dict(self) -> dict[str, Any]:
        """The span's attributes (built on demand for task and block spans)."""
        fut = self.fut
        if fut is None:
            return self.attributes
        td = fut.task_description
        attrs = shared_attributes(
            self.level,
            fut.workflow_name or "",
            fut.name,
            fut.kind,
            self.backend or "",
            count(td, "cpus", 1),
            count(td, "gpus", 0),
        )
        attrs.update(
            own_attributes(
                self.level,
                self.uid or "",
                self.workflow_id or "",
                self.depends_on,
                self.slots,
                self.result,
                self.error_type,
            )
        )
        if self.extra:
            attrs.update(self.extra)
        return attrs

    def span_events(self) -> list[tuple[str, int]]:
        """The lifecycle span events that happened, in order."""
        return [(name, t) for attr, name in STEPS if (t := getattr(self, attr))]

    def event_dicts(self) -> list[dict[str, Any]]:
        """Every span event as a dict: lifecycle steps, then attempts (with attributes)."""
        out: list[dict[str, Any]] = [{"name": name, "time_ns": t} for name, t in self.span_events()]
        for t, attrs in self.attempt_events or ():
            out.append({"name": n.SPAN_EVENT_ATTEMPT, "time_ns": t, "attributes": attrs})
        return out


class LiveWorkflow(LiveSpan):
    """A workflow span: it ends when its scope exited and its last task ended."""

    __slots__ = ("closed", "cut_off", "error", "failed", "pending")

    def __init__(self, span_id: int, parent: int | None, name: str) -> None:
        super().__init__(span_id, parent, n.LEVEL_WORKFLOW, name)
        self.pending = 0
        self.closed = False
        self.failed = False
        self.cut_off = False  # shutdown cancelled some of its tasks
        self.error: BaseException | None = None


def shared_attributes(
    level: str, workflow_name: str, name: str, kind: str, backend: str, cpus: int, gpus: int
) -> dict[str, Any]:
    """The attributes every task (or block) span of one kind shares, first in
    its attributes (the telemetry process encodes them once per kind)."""
    if level == n.LEVEL_BLOCK:
        return {n.LEVEL: n.LEVEL_BLOCK, n.WORKFLOW_NAME: workflow_name}
    return {
        n.LEVEL: n.LEVEL_TASK,
        n.WORKFLOW_NAME: workflow_name,
        n.TASK_NAME: name,
        n.TASK_TYPE: kind,
        n.BACKEND: backend,
        n.TASK_CPUS: cpus,
        n.TASK_GPUS: gpus,
    }


def own_attributes(
    level: str,
    uid: str,
    workflow_id: str,
    depends_on: Iterable[str],
    slots: Iterable[str],
    result: str,
    error_type: str,
) -> dict[str, Any]:
    """A task's (or block's) own span attributes, after the shared ones."""
    attrs: dict[str, Any]
    if level == n.LEVEL_BLOCK:
        attrs = {n.WORKFLOW_ID: uid, n.BLOCK_UID: uid, n.BLOCK_SCOPE: workflow_id}
    else:
        attrs = {n.WORKFLOW_ID: workflow_id, n.TASK_UID: uid, n.TASK_DEPENDS_ON: list(depends_on)}
    if slots:
        attrs[n.TASK_SLOTS] = list(slots)
    if result:
        attrs[n.TASK_RESULT] = result
    if error_type:
        attrs[n.ERROR_TYPE] = error_type
    return attrs


def plain_value(value: Any) -> Any:
    """``value`` as a plain ``str``, ``bool``, ``int``, ``float`` or list of
    them: what a span attribute can be, and what the checkpoint writer's
    ``marshal`` carries as itself.

    ``marshal`` writes any object with a memory buffer (a numpy number or
    array, a numpy string) as its raw bytes, silently: a user's
    ``np.float64(0.5)`` reached the file as ``"b'\\x00...'"``. Numbers and
    arrays become what their ``tolist()`` gives; anything else its ``str``.
    """
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list or kind is tuple:
        return [plain_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    tolist = getattr(value, "tolist", None)  # numpy numbers and arrays
    if callable(tolist):
        try:
            return plain_value(tolist())
        except Exception:  # noqa: BLE001 - not numpy's: its text, below
            pass
    for plain in (bool, int, float, str):  # subclasses: an IntEnum, a str subclass
        if isinstance(value, plain):
            return plain(value)
    return str(value)


def plain_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with every value plain (see :func:`plain_value`); the same
    dict when they all are."""
    for value in attrs.values():
        kind = type(value)
        if not (kind is str or kind is int or kind is float or kind is bool):
            return {str(k): plain_value(v) for k, v in attrs.items()}
    return attrs


def count(td: dict[str, Any] | None, key: str, default: int) -> int:
    """``td[key]`` as an int (``default`` when missing or not a number)."""
    if not td:
        return default
    try:
        return int(td.get(key, default))
    except (TypeError, ValueError):
        return default


def span_dict(
    rec: LiveSpan, trace_hex: str, notes: Iterable[tuple[str, int, dict[str, Any]]] = ()
) -> dict[str, Any]:
    """A finished span as the checkpoint file's ``span`` record.

    ``notes`` are span events with attributes (the session's user events).
    """
    end = rec.end_ns
    events = rec.event_dicts()  # lifecycle steps, then attempts
    events += [{"name": name, "time_ns": t, "attributes": attrs} for name, t, attrs in notes]
    if rec.exception:
        events.append(exception_event(rec.exception, end))
    return {
        "section": n.SECTION_SPAN,
        "name": rec.name,
        "span_id": f"{rec.span_id:016x}",
        "trace_id": trace_hex,
        "parent_span_id": f"{rec.parent:016x}" if rec.parent else None,
        "start_ns": rec.start_ns,
        "end_ns": end,
        "start_time_s": rec.start_ns / 1e9,
        "end_time_s": end / 1e9,
        "duration_ms": (end - rec.start_ns) / 1e6,
        "status_code": rec.status,
        "status_description": rec.status_description,
        "attributes": rec.attributes_dict(),
        "events": events,
    }


def exception_event(exception: tuple[str, str, str], t_ns: int) -> dict[str, Any]:
    """The OTel ``exception`` span event of a failure: type, message, stack trace."""
    kind, message, stacktrace = exception
    return {
        "name": n.SPAN_EVENT_EXCEPTION,
        "time_ns": t_ns,
        "attributes": {
            n.EXCEPTION_TYPE: kind,
            n.EXCEPTION_MESSAGE: message,
            n.EXCEPTION_STACKTRACE: stacktrace,
        },
    }
