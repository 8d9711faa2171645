"""The hot path of telemetry: what the engine calls at every task transition.

Kept cheap enough to leave on. A task's record holds plain integers (its
lifecycle timestamps) until it ends; attributes are built once, at the end.
Checkpoint lines are rendered by the writer thread from queued records, and
OpenTelemetry ``ReadableSpan`` objects are built only when a span processor
wants them, event objects only when someone subscribed. The OpenTelemetry
SDK is not imported here.

Every event line is written as it happens (a live dashboard sees what waits
and what runs, and a crash loses no step already taken); the span is written
with the final event when the task ends. Subscribers get every event as it
happens.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import names as n
from ._aggregate import Histograms
from ._render import (
    ID_ASSIGNED,
    ID_FINAL,
    ID_QUEUED,
    ID_RESOLVED,
    ID_STARTED,
    ID_SUBMITTED,
    LineRenderer,
)

__all__ = ["Recorder", "SpanRecord", "WorkflowRecord", "span_dict"]

logger = logging.getLogger("asyncflow.telemetry")

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

_ID_RESOLVED, _ID_QUEUED, _ID_SUBMITTED, _ID_STARTED, _ID_FINAL, _ID_ASSIGNED = (
    ID_RESOLVED,
    ID_QUEUED,
    ID_SUBMITTED,
    ID_STARTED,
    ID_FINAL,
    ID_ASSIGNED,
)
_STEPS = (
    ("t_resolved", n.SPAN_EVENT_RESOLVED, n.EVENT_TASK_RESOLVED, _ID_RESOLVED),
    ("t_queued", n.SPAN_EVENT_QUEUED, n.EVENT_TASK_QUEUED, _ID_QUEUED),
    ("t_submitted", n.SPAN_EVENT_SUBMITTED, n.EVENT_TASK_SUBMITTED, _ID_SUBMITTED),
    ("t_started", n.SPAN_EVENT_STARTED, n.EVENT_TASK_STARTED, _ID_STARTED),
)


class SpanRecord:
    """One span being recorded (session, block, task or a user span)."""

    __slots__ = (
        "attributes",
        "backend",
        "depends_on",
        "end_ns",
        "error_type",
        "extra",
        "fut",
        "id_base",
        "level",
        "name",
        "owner",
        "parent",
        "result",
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
        self.attributes: dict[str, Any] = {}
        self.backend: str | None = None
        self.uid: str | None = None
        self.workflow_id: str | None = None
        self.fut: Any = None  # tasks and blocks: their future (attributes come from it)
        self.result = ""
        self.error_type = ""
        self.depends_on: tuple[str, ...] = ()
        self.extra: dict[str, Any] | None = None  # attributes added by enrichers
        self.slots: tuple[str, ...] = ()
        self.owner: WorkflowRecord | None = None
        self.status = "UNSET"
        self.status_description = ""

    def attributes_dict(self) -> dict[str, Any]:
        """The span's attributes (built on demand for task and block spans)."""
        fut = self.fut
        if fut is None:
            return self.attributes
        uid = self.uid
        if self.level == n.LEVEL_BLOCK:
            attrs: dict[str, Any] = {
                n.LEVEL: n.LEVEL_BLOCK,
                n.WORKFLOW_ID: uid,
                n.WORKFLOW_NAME: fut.workflow_name or "",
                n.BLOCK_UID: uid,
                n.BLOCK_SCOPE: self.workflow_id or "",
            }
        else:
            td = fut.task_description
            attrs = {
                n.LEVEL: n.LEVEL_TASK,
                n.WORKFLOW_ID: self.workflow_id or "",
                n.WORKFLOW_NAME: fut.workflow_name or "",
                n.TASK_UID: uid,
                n.TASK_NAME: fut.name,
                n.TASK_TYPE: fut.kind,
                n.BACKEND: self.backend or "",
                n.TASK_CPUS: _count(td, "cpus", 1),
                n.TASK_GPUS: _count(td, "gpus", 0),
                n.TASK_DEPENDS_ON: list(self.depends_on),
            }
        if self.slots:
            attrs[n.TASK_SLOTS] = list(self.slots)
        if self.result:
            attrs[n.TASK_RESULT] = self.result
        if self.error_type:
            attrs[n.ERROR_TYPE] = self.error_type
        if self.extra:
            attrs.update(self.extra)
        return attrs

    def span_events(self) -> list[tuple[str, int]]:
        """The lifecycle span events that happened, in order."""
        return [(name, t) for attr, name, _, _ in _STEPS if (t := getattr(self, attr))]


class WorkflowRecord(SpanRecord):
    """A workflow span: it ends when its scope exited and its last task ended."""

    __slots__ = ("closed", "cut_off", "error", "failed", "pending")

    def __init__(self, span_id: int, parent: int | None, name: str) -> None:
        super().__init__(span_id, parent, n.LEVEL_WORKFLOW, name)
        self.pending = 0
        self.closed = False
        self.failed = False
        self.cut_off = False  # shutdown cancelled some of its tasks
        self.error: BaseException | None = None


def _count(td: dict[str, Any] | None, key: str, default: int) -> int:
    if not td:
        return default
    try:
        return int(td.get(key, default))
    except (TypeError, ValueError):
        return default


def span_dict(rec: SpanRecord, trace_hex: str) -> dict[str, Any]:
    """A finished span as the checkpoint file's ``span`` record."""
    end = rec.end_ns
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
        "events": [{"name": name, "time_ns": t} for name, t in rec.span_events()],
    }


class Recorder:
    """Turns engine transitions into events, spans and metric points.

    Args:
        session_id: the engine uid.
        node_id: this host's name.
        writer: the checkpoint writer, or None.
        ring_size: how many finished spans stay in memory for ``read_traces``.
        span_sink: called with each finished span dict when span processors
            want OpenTelemetry spans (None: nobody does).
    """

    def __init__(
        self,
        session_id: str,
        node_id: str,
        ring_size: int,
        span_sink: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self._rng = random.Random()
        self.trace_id = self._rng.getrandbits(128) or 1
        self.trace_hex = f"{self.trace_id:032x}"
        self.writer: Any = None
        self._put: Callable[[tuple[Any, ...]], None] | None = None
        self._lines = LineRenderer(session_id, node_id, self.trace_hex)
        self.ring: deque[SpanRecord] = deque(maxlen=max(1, ring_size))
        self.span_sink = span_sink
        self.enrichers: list[Callable[[Any, dict[str, Any]], Any]] = []
        self.subscribers_active = False
        self.deliver: Callable[..., None] | None = None
        # Event ids come in blocks of 8: a task's events are base + offset.
        self._blocks = itertools.count(1)
        # Live gauges, read by observable instruments.
        self.active_tasks: dict[tuple[str, str], int] = {}
        self.active_workflows: dict[str, int] = {}
        self.open_workflows: dict[str, WorkflowRecord] = {}
        # Aggregates: they never grow with the number of tasks.
        self.task_duration = Histograms(
            n.METRIC_TASK_DURATION, n.METRIC_ATTRIBUTES[n.METRIC_TASK_DURATION], n.DURATION_BUCKETS
        )
        self.queue_duration = Histograms(
            n.METRIC_TASK_QUEUE_DURATION,
            n.METRIC_ATTRIBUTES[n.METRIC_TASK_QUEUE_DURATION],
            n.DURATION_BUCKETS,
        )
        self.workflow_duration = Histograms(
            n.METRIC_WORKFLOW_DURATION,
            n.METRIC_ATTRIBUTES[n.METRIC_WORKFLOW_DURATION],
            n.DURATION_BUCKETS,
        )
        self.spans_finished = 0
        self.session = self._span(None, n.LEVEL_SESSION, n.SPAN_SESSION)
        self.session.attributes = {n.LEVEL: n.LEVEL_SESSION, n.SESSION_ID: session_id}

    def attach(self, writer: Any) -> None:
        """Send checkpoint records to ``writer`` (a checkpoint sink) from now on."""
        self.writer = writer
        self._put = writer.write

    # ------------------------------------------------------------------ ids and events
    def _span(self, parent: int | None, level: str, name: str) -> SpanRecord:
        return SpanRecord(self._rng.getrandbits(64) or 1, parent, level, name)

    def new_event_id(self) -> int:
        """A fresh event id (thread-safe)."""
        return next(self._blocks) << 3

    def _event(
        self, name: str, rec: SpanRecord | None, t_ns: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Record a session-level engine event now: a checkpoint line and subscribers."""
        event_id = self.new_event_id()
        if self._put is not None:
            self._put(("L", self._lines.session_event(name, t_ns, event_id, self.session.span_id)))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(name, rec, t_ns / 1e9, extra or {}, event_id)

    # ------------------------------------------------------------------ session
    def session_started(self) -> None:
        self._event(n.EVENT_SESSION_STARTED, None, self.session.start_ns)

    def session_ended(self) -> None:
        for workflow in list(self.open_workflows.values()):
            workflow.closed = True  # a scope still open at shutdown ends here
            workflow.cut_off = True
            self._end_workflow(workflow)
        rec = self.session
        rec.end_ns = time.time_ns()
        self._event(n.EVENT_SESSION_ENDED, None, rec.end_ns)
        self.finish_span(rec, "UNSET", "")

    # ------------------------------------------------------------------ workflows
    def workflow_started(self, wf_id: str, name: str | None, parent: int | None) -> WorkflowRecord:
        rec = WorkflowRecord(
            self._rng.getrandbits(64) or 1,
            parent or self.session.span_id,
            n.span_name(n.LEVEL_WORKFLOW, name or wf_id),
        )
        rec.attributes = {
            n.LEVEL: n.LEVEL_WORKFLOW,
            n.WORKFLOW_ID: wf_id,
            n.WORKFLOW_NAME: name or "",
        }
        self.open_workflows[wf_id] = rec
        key = name or ""
        self.active_workflows[key] = self.active_workflows.get(key, 0) + 1
        return rec

    def workflow_ended(self, rec: WorkflowRecord, error: BaseException | None) -> None:
        """The scope exited; the span ends when its last task has ended too."""
        rec.closed = True
        rec.error = error
        if rec.pending <= 0:
            self._end_workflow(rec)

    def _end_workflow(self, rec: WorkflowRecord) -> None:
        if rec.end_ns:  # ended already (shutdown ended it before its scope exited)
            return
        wf_id = rec.attributes[n.WORKFLOW_ID]
        if self.open_workflows.get(wf_id) is rec:
            del self.open_workflows[wf_id]
        name = rec.attributes[n.WORKFLOW_NAME]
        self.active_workflows[name] = self.active_workflows.get(name, 1) - 1
        rec.end_ns = time.time_ns()
        error = rec.error
        if error is not None and not isinstance(error, asyncio.CancelledError):
            result, status, desc = n.RESULT_FAILED, "ERROR", f"{type(error).__name__}: {error}"
            rec.attributes[n.ERROR_TYPE] = type(error).__name__
        elif error is not None:
            result, status, desc = n.RESULT_CANCELED, "ERROR", "canceled"
        elif rec.failed:
            result, status, desc = n.RESULT_FAILED, "ERROR", "a task of the workflow failed"
        elif rec.cut_off:
            result, status, desc = n.RESULT_CANCELED, "ERROR", "canceled: engine shut down"
        else:
            result, status, desc = n.RESULT_COMPLETED, "UNSET", ""
        rec.attributes[n.WORKFLOW_RESULT] = result
        self.workflow_duration.record((name, result), (rec.end_ns - rec.start_ns) / 1e9)
        self.finish_span(rec, status, desc)

    # ------------------------------------------------------------------ tasks and blocks
    def task_created(
        self,
        fut: Any,
        backend: str | None,
        parent: SpanRecord | None,
        scope: tuple[Any, ...] | None,
    ) -> SpanRecord:
        owner = self.open_workflows.get(scope[0]) if scope is not None else None
        if parent is None:
            parent = owner
        level = n.LEVEL_BLOCK if fut.kind == n.TYPE_BLOCK else n.LEVEL_TASK
        rec = SpanRecord(
            self._rng.getrandbits(64) or 1,
            parent.span_id if parent is not None else self.session.span_id,
            level,
            f"{level} {fut.name}",
        )
        rec.fut = fut
        rec.uid = fut.uid
        rec.workflow_id = fut.workflow_id
        base = rec.id_base = next(self._blocks) << 3
        if owner is not None:
            owner.pending += 1
            rec.owner = owner
        if level == n.LEVEL_TASK:
            rec.backend = backend
            key = (n.STATE_PENDING, backend or "")
            self.active_tasks[key] = self.active_tasks.get(key, 0) + 1
        if self._put is not None:
            td = fut.task_description
            self._put(
                (
                    "C",
                    rec.uid,
                    base,
                    rec.start_ns,
                    backend,
                    rec.workflow_id,
                    rec.span_id,
                    rec.parent,
                    level,
                    fut.name,
                    fut.kind,
                    fut.workflow_name or "",
                    _count(td, "cpus", 1),
                    _count(td, "gpus", 0),
                )
            )
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_CREATED, rec, rec.start_ns / 1e9, {}, base)
        return rec

    def resolved(self, rec: SpanRecord) -> None:
        rec.t_resolved = t_ns = time.time_ns()
        if self._put is not None:
            self._put(("E", rec.uid, t_ns, _ID_RESOLVED))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_RESOLVED, rec, t_ns / 1e9, {}, rec.id_base + _ID_RESOLVED)

    def queued(self, rec: SpanRecord) -> None:
        rec.t_queued = t_ns = time.time_ns()
        if self._put is not None:
            self._put(("E", rec.uid, t_ns, _ID_QUEUED))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_QUEUED, rec, t_ns / 1e9, {}, rec.id_base + _ID_QUEUED)

    def submitted(self, rec: SpanRecord) -> None:
        rec.t_submitted = t_ns = time.time_ns()
        if self._put is not None:
            self._put(("E", rec.uid, t_ns, _ID_SUBMITTED))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_SUBMITTED, rec, t_ns / 1e9, {}, rec.id_base + _ID_SUBMITTED)

    def assigned(self, rec: SpanRecord, slots: Any) -> None:
        """A backend gave the task its resource slots (just before it starts)."""
        rec.slots = tuple(str(s) for s in slots)
        t_ns = time.time_ns()
        event_id = rec.id_base + _ID_ASSIGNED
        fut = rec.fut
        td = fut.task_description if fut is not None else None
        extra = {
            "slots": list(rec.slots),
            "cpus": _count(td, "cpus", 1),
            "gpus": _count(td, "gpus", 0),
        }
        if self._put is not None:
            self._put(("A", rec.uid, t_ns, extra))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_RESOURCE_ASSIGNED, rec, t_ns / 1e9, extra, event_id)

    def started(self, rec: SpanRecord) -> None:
        rec.t_started = t_ns = time.time_ns()
        event_id = rec.id_base + _ID_STARTED
        if rec.level == n.LEVEL_TASK:
            backend = rec.backend or ""
            active = self.active_tasks
            key = (n.STATE_PENDING, backend)
            active[key] = active.get(key, 1) - 1
            key = (n.STATE_RUNNING, backend)
            active[key] = active.get(key, 0) + 1
            if rec.t_submitted:
                self.queue_duration.record(
                    (backend, rec.fut.workflow_name or ""), (t_ns - rec.t_submitted) / 1e9
                )
        if self._put is not None:
            self._put(("S", rec.uid, t_ns))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_STARTED, rec, t_ns / 1e9, {}, event_id)

    def task_finished(
        self,
        rec: SpanRecord,
        result: str,
        error: BaseException | None,
        cut_off: bool,
        depends_on: tuple[str, ...],
    ) -> None:
        t_ns = rec.end_ns = time.time_ns()
        rec.result = result
        rec.depends_on = depends_on
        error_type = ""
        if result == n.RESULT_COMPLETED:
            status, desc, final = "OK", "", n.EVENT_TASK_COMPLETED
        elif result == n.RESULT_FAILED:
            error_type = rec.error_type = type(error).__name__ if error is not None else "Error"
            status, final = "ERROR", n.EVENT_TASK_FAILED
            desc = str(error) if error is not None else "failed"
            if rec.owner is not None:
                rec.owner.failed = True
        else:
            status, desc = ("ERROR", "canceled: engine shut down") if cut_off else ("UNSET", "")
            final = n.EVENT_TASK_CANCELED
            if cut_off and rec.owner is not None:
                rec.owner.cut_off = True
        if self.subscribers_active and self.deliver is not None:
            extra = {"error_type": error_type} if error_type else {}
            self.deliver(final, rec, t_ns / 1e9, extra, rec.id_base + _ID_FINAL)
        if self.enrichers:
            self._enrich(rec)
        if rec.level == n.LEVEL_TASK:
            fut = rec.fut
            backend = rec.backend or ""
            key = (n.STATE_RUNNING if rec.t_started else n.STATE_PENDING, backend)
            self.active_tasks[key] = self.active_tasks.get(key, 1) - 1
            workflow_name = fut.workflow_name or ""
            # Counts by state, failure type and workflow type are read off
            # this histogram's series by summary(): nothing else to count.
            self.task_duration.record(
                (fut.name, fut.kind, result, backend, workflow_name, error_type),
                (t_ns - rec.start_ns) / 1e9,
            )
        self.finish_span(rec, status, desc, final)
        owner = rec.owner
        if owner is not None:
            rec.owner = None
            owner.pending -= 1
            if owner.closed and owner.pending <= 0:
                self._end_workflow(owner)

    def _enrich(self, rec: SpanRecord) -> None:
        attrs = rec.attributes_dict()
        added: dict[str, Any] = {}
        for enrich in list(self.enrichers):
            try:
                extra = enrich(rec.fut, attrs)
            except Exception:  # an enricher never breaks a task
                self.enrichers.remove(enrich)
                logger.exception("span enricher %r failed and was removed", enrich)
                continue
            if extra:
                attrs.update(extra)
                added.update(extra)
        if added:
            rec.extra = added

    # ------------------------------------------------------------------ spans
    def finish_span(
        self, rec: SpanRecord, status: str, desc: str, final: str | None = None
    ) -> None:
        """End a span; ``final`` is a task's final event, written with it."""
        if not rec.end_ns:
            rec.end_ns = time.time_ns()
        rec.status = status
        rec.status_description = desc
        self.spans_finished += 1
        self.ring.append(rec)
        if self._put is not None:
            if final is not None:
                self._put(
                    (
                        "F",
                        rec.uid,
                        final,
                        rec.error_type,
                        rec.end_ns,
                        status,
                        desc,
                        rec.t_resolved,
                        rec.t_queued,
                        rec.t_submitted,
                        rec.t_started,
                        rec.result,
                        rec.depends_on,
                        rec.extra,
                        rec.slots,
                    )
                )
            else:
                self._put(
                    (
                        "P",
                        (
                            rec.name,
                            rec.span_id,
                            rec.parent,
                            rec.start_ns,
                            rec.end_ns,
                            status,
                            desc,
                            rec.attributes_dict(),
                            rec.span_events(),
                        ),
                    )
                )
        if self.span_sink is not None:
            self.span_sink(span_dict(rec, self.trace_hex))

    def traces(self) -> list[dict[str, Any]]:
        """The finished spans in the ring, as dicts."""
        return [span_dict(rec, self.trace_hex) for rec in list(self.ring)]
