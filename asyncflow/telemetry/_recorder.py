"""The hot path of telemetry: what the engine calls at every task transition.

Kept cheap enough to leave on. A task's record holds plain integers (its
lifecycle timestamps) until it ends; attributes are built once, at the end.
Checkpoint lines are rendered by the writer from queued records (their
layout is declared in ``_records.py``), and
OpenTelemetry ``ReadableSpan`` objects are built only when a span processor
wants them, event objects only when someone subscribed. The OpenTelemetry
SDK is not imported here.

Every event line is written as it happens (a live dashboard sees what waits
and what runs, and a crash loses no step already taken); the span is written
with the final event when the task ends. Subscribers get every event as it
happens.

:class:`Recorder` is the engine's :class:`~asyncflow.telemetry.observer.TaskObserver`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from . import names as n
from ._aggregate import Counters, Histograms
from ._failures import exception_record, process_attributes
from ._records import (
    ASSIGNED,
    ATTEMPT,
    COMPLETED,
    CREATED,
    CREATED_READY,
    FINISHED,
    ID_ASSIGNED,
    ID_FINAL,
    ID_QUEUED,
    ID_RESOLVED,
    ID_STARTED,
    ID_SUBMITTED,
    INSTANT,
    LINE,
    NOTE,
    READY,
    SPAN,
    STARTED,
    STEP,
    TASK_SPAN,
)
from ._render import LineRenderer
from ._shapes import TaskShape
from ._spans import LiveSpan, LiveWorkflow, count, span_dict
from .observer import TaskInfo
from .redact import describer, redactor

__all__ = ["Recorder"]

logger = logging.getLogger("asyncflow.telemetry")

# The steps before a task starts that the engine reports one by one:
# (LiveSpan attribute, engine event, offset of its event id).
_RESOLVED = ("t_resolved", n.EVENT_TASK_RESOLVED, ID_RESOLVED)
_QUEUED = ("t_queued", n.EVENT_TASK_QUEUED, ID_QUEUED)


class Recorder:
    """Turns engine transitions into events, spans and metric points.

    The engine's :class:`~asyncflow.telemetry.observer.TaskObserver`.

    Args:
        session_id: the engine uid.
        node_id: this host's name.
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
        # The writer's relieve(), called every 1,024 created tasks: a burst
        # of task calls in one loop turn queues a bounded number of records.
        self._relieve: Callable[[], None] | None = None
        self._created = 0
        self._lines = LineRenderer(session_id, node_id, self.trace_hex)
        self.ring: deque[LiveSpan] = deque(maxlen=max(1, ring_size))
        self.span_sink = span_sink
        # The telemetry process exports OTLP: send a TaskSpan record per task.
        self.task_spans = False
        self.enrichers: list[Callable[[Any, dict[str, Any]], Any]] = []
        self.subscribers_active = False
        self.deliver: Callable[..., None] | None = None
        # Error text becomes a span description only through this (secrets out).
        self.describe: Callable[[str], str] = describer(True)
        self.redact: Callable[[str], str] = redactor(True)
        # Event ids come in blocks of 8: a task's events are base + offset.
        self._blocks = itertools.count(1)
        # Live gauges, read by observable instruments.
        # Tasks pending and running, by backend: [pending, running].
        self._active: dict[str, list[int]] = {}
        self.active_workflows: dict[str, int] = {}
        self._open_workflows: dict[str, LiveWorkflow] = {}
        # One TaskShape per kind of task: (name, type, backend, workflow type, cpus, gpus).
        self._shapes: dict[tuple[str, str, str, str, int, int], TaskShape] = {}
        # Aggregates: they never grow with the number of tasks.
        self.task_duration = Histograms(
            n.METRIC_TASK_DURATION, n.METRIC_ATTRIBUTES[n.METRIC_TASK_DURATION], n.DURATION_BUCKETS
        )
        self.queue_duration = Histograms(
            n.METRIC_TASK_QUEUE_DURATION,
            n.METRIC_ATTRIBUTES[n.METRIC_TASK_QUEUE_DURATION],
            n.DURATION_BUCKETS,
        )
        self.run_duration = Histograms(
            n.METRIC_TASK_RUN_DURATION,
            n.METRIC_ATTRIBUTES[n.METRIC_TASK_RUN_DURATION],
            n.DURATION_BUCKETS,
        )
        self.workflow_duration = Histograms(
            n.METRIC_WORKFLOW_DURATION,
            n.METRIC_ATTRIBUTES[n.METRIC_WORKFLOW_DURATION],
            n.DURATION_BUCKETS,
        )
        self.retries = Counters(
            n.METRIC_TASK_RETRIES, n.METRIC_ATTRIBUTES[n.METRIC_TASK_RETRIES], n.UNIT_RETRIES
        )
        self.cache_lookups = Counters(
            n.METRIC_CACHE_LOOKUPS, n.METRIC_ATTRIBUTES[n.METRIC_CACHE_LOOKUPS], n.UNIT_LOOKUPS
        )
        self.spans_finished = 0
        # For RHAPSODY's summary(): tasks handed to a backend, and the run
        # time (started -> ended) of tasks that started: count, total, min, max.
        self.submitted_total = 0
        self.run_stats: list[float] = [0, 0.0, math.inf, 0.0]
        # The bucket of a task that ran for no time (a dry run's).
        self._zero_bucket = bisect_left(self.run_duration.bounds, 0.0)
        # User events, as span events of the session span (what OTLP gets).
        self.session_notes: deque[tuple[str, int, dict[str, Any]]] = deque(
            maxlen=n.SESSION_NOTES_KEPT
        )
        self.session = self.new_span(None, n.LEVEL_SESSION, n.SPAN_SESSION)
        self.session.attributes = {n.LEVEL: n.LEVEL_SESSION, n.SESSION_ID: session_id}

    def attach(self, writer: Any) -> None:
        """Send checkpoint records to ``writer`` (a checkpoint sink) from now on."""
        self.writer = writer
        self._put = getattr(writer, "put", writer.write)
        self._relieve = getattr(writer, "relieve", None)
        for shape in self._shapes.values():  # a new writer knows no kind yet
            shape.sent = False

    @property
    def active_tasks(self) -> dict[tuple[str, str], int]:
        """Live task counts by (state, backend): ``pending`` and ``running``."""
        out: dict[tuple[str, str], int] = {}
        for backend, (pending, running) in list(self._active.items()):
            out[(n.STATE_PENDING, backend)] = pending
            out[(n.STATE_RUNNING, backend)] = running
        return out

    def _shape(self, key: tuple[str, str, str, str, int, int]) -> TaskShape:
        backend = key[2]
        active = self._active.get(backend)
        if active is None:
            active = self._active[backend] = [0, 0]
        shape = self._shapes[key] = TaskShape(
            len(self._shapes),
            key,
            active,
            (self.queue_duration, self.task_duration, self.run_duration),
        )
        return shape

    def flush_soon(self) -> None:
        """The engine is about to complete a future: this loop turn's records
        go to the checkpoint writer before that future's waiters run."""
        if self.writer is not None:
            self.writer.flush_soon()

    # ------------------------------------------------------------------ ids and events
    def new_span(self, parent: int | None, level: str, name: str) -> LiveSpan:
        """A new span with a fresh id (``parent``: the parent span's id)."""
        return LiveSpan(self._rng.getrandbits(64) or 1, parent, level, name)

    def new_event_id(self) -> int:
        """A fresh event id (thread-safe)."""
        return next(self._blocks) << 3

    def _event(
        self, name: str, rec: LiveSpan | None, t_ns: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Record a session-level engine event now: a checkpoint line and subscribers."""
        event_id = self.new_event_id()
        if self._put is not None:
            self._put((LINE, self._lines.session_event(name, t_ns, event_id, self.session.span_id)))
        if self.subscribers_active and self.deliver is not None:
            self.deliver(name, rec, t_ns / 1e9, extra or {}, event_id)

    # ------------------------------------------------------------------ session
    def session_started(self) -> None:
        self._event(n.EVENT_SESSION_STARTED, None, self.session.start_ns)

    def session_ended(self) -> None:
        for workflow in list(self._open_workflows.values()):
            workflow.closed = True  # a scope still open at shutdown ends here
            workflow.cut_off = True
            self._end_workflow(workflow)
        rec = self.session
        rec.end_ns = time.time_ns()
        self._event(n.EVENT_SESSION_ENDED, None, rec.end_ns)
        self.finish_span(rec, n.STATUS_UNSET, "")

    # ------------------------------------------------------------------ workflows
    def workflow_started(self, wf_id: str, name: str | None, parent: int | None) -> LiveWorkflow:
        rec = LiveWorkflow(
            self._rng.getrandbits(64) or 1,
            parent or self.session.span_id,
            n.span_name(n.LEVEL_WORKFLOW, name or wf_id),
        )
        rec.attributes = {
            n.LEVEL: n.LEVEL_WORKFLOW,
            n.WORKFLOW_ID: wf_id,
            n.WORKFLOW_NAME: name or "",
        }
        self._open_workflows[wf_id] = rec
        key = name or ""
        self.active_workflows[key] = self.active_workflows.get(key, 0) + 1
        return rec

    def open_workflow(self, wf_id: str) -> LiveWorkflow | None:
        return self._open_workflows.get(wf_id)

    def workflow_ended(self, workflow: LiveWorkflow, error: BaseException | None) -> None:
        """The scope exited; the span ends when its last task has ended too."""
        workflow.closed = True
        workflow.error = error
        if workflow.pending <= 0:
            self._end_workflow(workflow)

    def _end_workflow(self, rec: LiveWorkflow) -> None:
        if rec.end_ns:  # ended already (shutdown ended it before its scope exited)
            return
        wf_id = rec.attributes[n.WORKFLOW_ID]
        if self._open_workflows.get(wf_id) is rec:
            del self._open_workflows[wf_id]
        name = rec.attributes[n.WORKFLOW_NAME]
        self.active_workflows[name] = self.active_workflows.get(name, 1) - 1
        rec.end_ns = time.time_ns()
        error = rec.error
        error_status = n.STATUS_ERROR
        if error is not None and not isinstance(error, asyncio.CancelledError):
            result, status = n.RESULT_FAILED, error_status
            desc = self.describe(f"{type(error).__name__}: {error}")
            rec.attributes[n.ERROR_TYPE] = type(error).__name__
        elif error is not None:
            result, status, desc = n.RESULT_CANCELED, error_status, "canceled"
        elif rec.failed:
            result, status, desc = n.RESULT_FAILED, error_status, "a task of the workflow failed"
        elif rec.cut_off:
            result, status, desc = n.RESULT_CANCELED, error_status, "canceled: engine shut down"
        else:
            result, status, desc = n.RESULT_COMPLETED, n.STATUS_UNSET, ""
        rec.attributes[n.WORKFLOW_RESULT] = result
        self.workflow_duration.record((name, result), (rec.end_ns - rec.start_ns) / 1e9)
        self.finish_span(rec, status, desc)

    # ------------------------------------------------------------------ tasks and blocks
    def task_created(
        self,
        task: TaskInfo,
        backend: str,
        parent: LiveSpan | None,
        scope_id: str | None,
        ready: bool = False,
    ) -> LiveSpan:
        owner = self._open_workflows.get(scope_id) if scope_id is not None else None
        if parent is None:
            parent = owner
        td = task.task_description
        key = (
            task.name,
            task.kind,
            backend or "",
            task.workflow_name or "",
            count(td, "cpus", 1) if td else 1,
            count(td, "gpus", 0) if td else 0,
        )
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(key)
        rec = LiveSpan(
            self._rng.getrandbits(64) or 1,
            parent.span_id if parent is not None else self.session.span_id,
            shape.level,
            shape.span_name,
        )
        rec.fut = task
        rec.shape = shape
        rec.uid = task.uid
        rec.workflow_id = task.workflow_id
        base = rec.id_base = next(self._blocks) << 3
        if owner is not None:
            owner.pending += 1
            rec.owner = owner
        active = shape.active
        if active is not None:
            rec.backend = backend
            active[0] += 1
        put = self._put
        if put is not None:
            if not shape.sent:
                put(shape.record())
                shape.sent = True
            # records.Created
            put(
                (
                    CREATED_READY if ready else CREATED,
                    rec.uid,
                    base,
                    rec.start_ns,
                    shape.id,
                    rec.workflow_id,
                    rec.span_id,
                    rec.parent,
                )
            )
        if ready:  # resolved and queued as it was created: ready(), at its time
            rec.t_resolved = rec.t_queued = rec.start_ns
        if self.subscribers_active and self.deliver is not None:
            seconds = rec.start_ns / 1e9
            self.deliver(n.EVENT_TASK_CREATED, rec, seconds, {}, base)
            if ready:
                self.deliver(n.EVENT_TASK_RESOLVED, rec, seconds, {}, base + ID_RESOLVED)
                self.deliver(n.EVENT_TASK_QUEUED, rec, seconds, {}, base + ID_QUEUED)
        self._created += 1
        if not self._created & 1023 and self._relieve is not None:
            self._relieve()
        return rec

    def _step(self, rec: LiveSpan, step: tuple[str, str, int]) -> None:
        """One of the steps before a task starts: resolved, queued, submitted."""
        attr, event, offset = step
        t_ns = time.time_ns()
        setattr(rec, attr, t_ns)
        if self._put is not None:
            self._put((STEP, rec.uid, t_ns, offset))  # records.Step
        if self.subscribers_active and self.deliver is not None:
            self.deliver(event, rec, t_ns / 1e9, {}, rec.id_base + offset)

    def resolved(self, span: LiveSpan) -> None:
        self._step(span, _RESOLVED)

    def ready(self, span: LiveSpan) -> None:
        """``resolved`` and ``queued`` at once (one clock reading)."""
        span.t_resolved = span.t_queued = t_ns = time.time_ns()
        if self._put is not None:
            self._put((READY, span.uid, t_ns))  # records.Ready
        if self.subscribers_active and self.deliver is not None:
            base, seconds = span.id_base, t_ns / 1e9
            self.deliver(n.EVENT_TASK_RESOLVED, span, seconds, {}, base + ID_RESOLVED)
            self.deliver(n.EVENT_TASK_QUEUED, span, seconds, {}, base + ID_QUEUED)

    def queued(self, span: LiveSpan) -> None:
        self._step(span, _QUEUED)

    def submitted(self, span: LiveSpan) -> None:
        self.submitted_total += 1
        span.t_submitted = t_ns = time.time_ns()  # _step(), inline: every task's
        if self._put is not None:
            self._put((STEP, span.uid, t_ns, ID_SUBMITTED))  # records.Step
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_SUBMITTED, span, t_ns / 1e9, {}, span.id_base + ID_SUBMITTED)

    def submitted_all(self, spans: list[LiveSpan]) -> None:
        """``submitted`` for each of ``spans``, handed over in one
        ``submit_tasks`` call: one clock reading for the batch."""
        self.submitted_total += len(spans)
        t_ns = time.time_ns()
        put = self._put
        for span in spans:
            span.t_submitted = t_ns
            if put is not None:
                put((STEP, span.uid, t_ns, ID_SUBMITTED))  # records.Step
        if self.subscribers_active and self.deliver is not None:
            seconds = t_ns / 1e9
            for span in spans:
                self.deliver(n.EVENT_TASK_SUBMITTED, span, seconds, {}, span.id_base + ID_SUBMITTED)

    def assigned(self, span: LiveSpan, slots: Iterable[Any]) -> None:
        """A backend gave the task its resource slots (just before it starts)."""
        span.slots = tuple(str(s) for s in slots)
        t_ns = time.time_ns()
        event_id = span.id_base + ID_ASSIGNED
        fut = span.fut
        td = fut.task_description if fut is not None else None
        extra = {
            "slots": list(span.slots),
            "cpus": count(td, "cpus", 1),
            "gpus": count(td, "gpus", 0),
        }
        if self._put is not None:
            self._put((ASSIGNED, span.uid, t_ns, extra))  # records.Assigned
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_RESOURCE_ASSIGNED, span, t_ns / 1e9, extra, event_id)

    def started(self, span: LiveSpan) -> None:
        span.t_started = t_ns = time.time_ns()
        shape = span.shape
        if shape is not None and shape.active is not None:  # a task
            active = shape.active
            active[0] -= 1
            active[1] += 1
            if span.t_resolved:  # the queue wait phase
                shape.add(0, (t_ns - span.t_resolved) / 1e9)
        if self._put is not None:
            self._put((STARTED, span.uid, t_ns))  # records.Started
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_TASK_STARTED, span, t_ns / 1e9, {}, span.id_base + ID_STARTED)

    def completed(self, span: LiveSpan, ran: bool, depends_on: tuple[str, ...]) -> None:
        """``started`` (unless ``ran``: it did) and ``task_finished`` of a
        task that completed, in one call.

        The way out of nearly every task, so a task's common case is written
        out here in one body (one clock reading when it did not report
        running, no call per histogram); anything else takes the two hooks.
        """
        shape = span.shape
        rows = shape.rows if shape is not None else None
        if (
            rows is None
            or shape is None
            or shape.active is None
            or rows[1] is None
            or rows[2] is None
            or (not ran and rows[0] is None and span.t_resolved)
            or self.subscribers_active
            or self.enrichers
            or self.queue_duration.track
            or self.task_duration.track
            or self.run_duration.track
        ):
            if not ran:
                self.started(span)
            self.task_finished(span, n.RESULT_COMPLETED, None, False, depends_on)
            return
        active = shape.active
        span.end_ns = t_ns = time.time_ns()
        put = self._put
        uid = span.uid
        bounds = self.task_duration.bounds  # every duration histogram's
        span.result = n.RESULT_COMPLETED
        span.depends_on = depends_on
        total = (t_ns - span.start_ns) / 1e9
        at = bisect_left(bounds, total)
        row = rows[1]
        row[at] += 1
        row[-2] += 1
        row[-1] += total
        if ran:
            started = span.t_started
            active[1] -= 1
            if started:
                self._ran_for((t_ns - started) / 1e9, rows[2], bounds)
        else:  # started as it ended (a dry run): it ran for no time
            span.t_started = t_ns
            active[0] -= 1
            resolved = span.t_resolved
            if resolved:  # the queue wait phase, the whole time for a task ready at once
                wait = total if resolved == span.start_ns else (t_ns - resolved) / 1e9
                queue = rows[0]
                assert queue is not None
                queue[at if wait == total else bisect_left(bounds, wait)] += 1
                queue[-2] += 1
                queue[-1] += wait
            row = rows[2]
            row[self._zero_bucket] += 1
            row[-2] += 1
            stats = self.run_stats  # _ran(0.0), inline
            stats[0] += 1
            if stats[2] > 0.0:
                stats[2] = 0.0
        # finish_span(), inline, for a task with nothing more to say
        span.status = n.STATUS_OK
        span.status_description = ""
        self.spans_finished += 1
        self.ring.append(span)
        if put is not None:
            wf = span.workflow_id or ""
            if self.task_spans and not span.slots and not span.extra:
                # records.Completed and, after it, its TaskSpan's fields:
                # one record for the file and the span
                put(
                    (
                        COMPLETED if ran else INSTANT,
                        uid,
                        t_ns,
                        depends_on,
                        span.t_resolved,
                        span.t_queued,
                        span.t_submitted,
                        span.t_started,
                        span.span_id,
                        span.parent,
                        span.start_ns,
                        shape.id,
                        wf,
                    )
                )
            else:
                if self.task_spans:
                    put((TASK_SPAN, uid, span.span_id, span.parent, span.start_ns, shape.id, wf))
                self._put_end(span, n.STATUS_OK, "", n.EVENT_TASK_COMPLETED, not ran)
        if self.span_sink is not None:
            self.span_sink(span_dict(span, self.trace_hex))
        if span.owner is not None:
            self._leave_workflow(span)

    def attempt_ended(
        self,
        span: LiveSpan,
        attempt: int,
        started_ns: int,
        error: BaseException | None,
        retrying: bool,
    ) -> None:
        t_ns = time.time_ns()
        attrs: dict[str, Any] = {
            n.ATTEMPT_NUMBER: attempt,
            n.ATTEMPT_STARTED: started_ns,
            n.ATTEMPT_RETRIED: retrying,
        }
        error_type = ""
        if error is not None:
            error_type = type(error).__name__
            attrs[n.ERROR_TYPE] = error_type
            attrs[n.ATTEMPT_ERROR] = str(error)[:1000]
        if span.attempt_events is None:
            span.attempt_events = []
        span.attempt_events.append((t_ns, attrs))
        span.extra = {**(span.extra or {}), n.TASK_ATTEMPTS: attempt}
        if retrying:
            fut = span.fut
            self.retries.add(
                (
                    fut.name if fut is not None else "",
                    span.backend or "",
                    (fut.workflow_name or "") if fut is not None else "",
                    error_type,
                )
            )
        if self._put is not None:
            self._put((ATTEMPT, span.uid, t_ns, attrs))  # records.Attempt

    def cached(
        self, span: LiveSpan, state: str, source_session: str | None, source_task: str | None
    ) -> None:
        extra = {**(span.extra or {}), n.TASK_CACHE: state}
        if source_session is not None:
            extra[n.CACHE_SOURCE_SESSION] = source_session
        if source_task is not None:
            extra[n.CACHE_SOURCE_TASK] = source_task
        span.extra = extra
        fut = span.fut
        self.cache_lookups.add(
            (
                fut.name if fut is not None else "",
                (fut.workflow_name or "") if fut is not None else "",
                state,
            )
        )

    def task_finished(
        self,
        span: LiveSpan,
        result: str,
        error: BaseException | None,
        cut_off: bool,
        depends_on: tuple[str, ...],
    ) -> None:
        rec = span
        t_ns = rec.end_ns = time.time_ns()
        rec.result = result
        rec.depends_on = depends_on
        error_type = ""
        if result == n.RESULT_COMPLETED:
            status, desc, final = n.STATUS_OK, "", n.EVENT_TASK_COMPLETED
        elif result == n.RESULT_FAILED:
            error_type = rec.error_type = type(error).__name__ if error is not None else "Error"
            status, final = n.STATUS_ERROR, n.EVENT_TASK_FAILED
            desc = self.describe(str(error)) if error is not None else "failed"
            if error is not None:
                # Secrets out of the traceback and the stderr tail too.
                kind, message, stack = exception_record(error)
                rec.exception = (kind, self.redact(message), self.redact(stack))
                process = process_attributes(error)
                if process:
                    tail = process.get(n.PROCESS_STDERR_TAIL)
                    if tail:
                        process[n.PROCESS_STDERR_TAIL] = self.redact(tail)
                    rec.extra = process
            if rec.owner is not None:
                rec.owner.failed = True
        else:
            status, desc = (
                (n.STATUS_ERROR, "canceled: engine shut down") if cut_off else (n.STATUS_UNSET, "")
            )
            final = n.EVENT_TASK_CANCELED
            if cut_off and rec.owner is not None:
                rec.owner.cut_off = True
        if self.subscribers_active and self.deliver is not None:
            extra = {"error_type": error_type} if error_type else {}
            self.deliver(final, rec, t_ns / 1e9, extra, rec.id_base + ID_FINAL)
        if self.enrichers:
            self._enrich(rec)
        fut = rec.fut
        shape = rec.shape
        if shape is not None and shape.active is not None and fut is not None:  # a task
            total = (t_ns - rec.start_ns) / 1e9
            started = rec.t_started
            ran = (t_ns - started) / 1e9 if started else 0.0
            if started:
                self._ran(ran)
                shape.active[1] -= 1
            else:
                shape.active[0] -= 1
            # Counts by state, failure type and workflow type are read off
            # the total histogram's series by summary(): nothing else to count.
            if result == n.RESULT_COMPLETED:
                shape.add(1, total)
                if started:
                    shape.add(2, ran)
            else:
                backend, wf = shape.backend, shape.workflow_name
                self.task_duration.record(
                    (shape.name, shape.kind, result, backend, wf, error_type), total
                )
                if started:
                    self.run_duration.record((shape.name, shape.kind, result, backend, wf), ran)
        if self.task_spans and self._put is not None and shape is not None:
            # records.TaskSpan: the telemetry process builds the OTLP span from it
            self._put(
                (
                    TASK_SPAN,
                    rec.uid,
                    rec.span_id,
                    rec.parent,
                    rec.start_ns,
                    shape.id,
                    rec.workflow_id or "",
                )
            )
        self.finish_span(rec, status, desc, final)
        if rec.owner is not None:
            self._leave_workflow(rec)

    def _leave_workflow(self, rec: LiveSpan) -> None:
        """A task of a workflow ended: the workflow's span ends with its last
        task once its scope exited."""
        owner = rec.owner
        assert owner is not None
        rec.owner = None
        owner.pending -= 1
        if owner.closed and owner.pending <= 0:
            self._end_workflow(owner)

    def _ran_for(self, seconds: float, row: list[Any], bounds: tuple[float, ...]) -> None:
        """A task that completed ran for ``seconds``: its run histogram's
        ``row`` and ``run_stats``."""
        row[bisect_left(bounds, seconds)] += 1
        row[-2] += 1
        row[-1] += seconds
        stats = self.run_stats  # _ran(), inline
        stats[0] += 1
        stats[1] += seconds
        if seconds < stats[2]:
            stats[2] = seconds
        if seconds > stats[3]:
            stats[3] = seconds

    def _ran(self, seconds: float) -> None:
        """Count a task that ran for ``seconds`` in ``run_stats``."""
        stats = self.run_stats
        stats[0] += 1
        stats[1] += seconds
        if seconds < stats[2]:
            stats[2] = seconds
        if seconds > stats[3]:
            stats[3] = seconds

    def _enrich(self, rec: LiveSpan) -> None:
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
            rec.extra = {**(rec.extra or {}), **added}

    # ------------------------------------------------------------------ spans
    def finish_span(self, rec: LiveSpan, status: str, desc: str, final: str | None = None) -> None:
        """End a span; ``final`` is a task's final event, written with it."""
        if not rec.end_ns:
            rec.end_ns = time.time_ns()
        rec.status = status
        rec.status_description = desc
        self.spans_finished += 1
        self.ring.append(rec)
        if self._put is not None:
            if final is not None:
                self._put_end(rec, status, desc, final)
            else:
                # records.Span of a records.SpanFields
                self._put(
                    (
                        SPAN,
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
            self.span_sink(span_dict(rec, self.trace_hex, self._notes(rec)))

    def _put_end(
        self, rec: LiveSpan, status: str, desc: str, final: str, instant: bool = False
    ) -> None:
        """Send a task's (or block's) last record: ``Completed`` when it has
        nothing more to say, else ``Finished``.

        ``instant``: it started now and no ``Started`` record was sent.
        """
        assert self._put is not None
        if instant and not (status == n.STATUS_OK and not desc and not rec.extra and not rec.slots):
            self._put((STARTED, rec.uid, rec.t_started))  # records.Started
            instant = False
        if (
            status == n.STATUS_OK
            and not desc
            and not rec.extra
            and not rec.slots
            and rec.exception is None
        ):
            # records.Completed: all a task that completed has to say
            self._put(
                (
                    INSTANT if instant else COMPLETED,
                    rec.uid,
                    rec.end_ns,
                    rec.depends_on,
                    rec.t_resolved,
                    rec.t_queued,
                    rec.t_submitted,
                    rec.t_started,
                )
            )
        else:
            # records.Finished
            self._put(
                (
                    FINISHED,
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
                    rec.exception,
                )
            )

    def _notes(self, rec: LiveSpan) -> list[tuple[str, int, dict[str, Any]]]:
        return list(self.session_notes) if rec is self.session else []

    def session_note(self, name: str, t_ns: int, attributes: dict[str, Any]) -> None:
        """Keep a user event for the session span (the last ``SESSION_NOTES_KEPT``)."""
        self.session_notes.append((name, t_ns, attributes))
        if self._put is not None:
            self._put((NOTE, name, t_ns, attributes))  # records.Note

    def traces(self) -> list[dict[str, Any]]:
        """The finished spans in the ring, as dicts."""
        return [span_dict(rec, self.trace_hex, self._notes(rec)) for rec in list(self.ring)]
