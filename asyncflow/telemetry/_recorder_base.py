"""The recorder's state and the spans it ends: the base of the
:class:`~asyncflow.telemetry._recorder.Recorder`.

Ids, the checkpoint writer, the live gauges and the aggregates; workflows
(their spans end here, when their last task leaves) and how any span ends.
Pure: no I/O of its own (records go to the writer), no SDK, no asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import names as n
from ._aggregate import Counters, Histograms, consistent
from ._failures import error_text
from ._records import LINE, SPAN
from ._render import LineRenderer
from ._shapes import TaskShape
from ._spans import LiveSpan, LiveWorkflow, plain_attributes, span_dict
from .redact import describer, redactor

if TYPE_CHECKING:
    from ._task_span import TaskSpan

__all__ = ["RecorderBase"]


def _no_writer() -> None:
    """``flush_soon`` without a checkpoint writer: nothing to send."""


class RecorderBase:
    """What the recorder keeps and the spans it ends: ids, the checkpoint
    writer, the live gauges, the aggregates, workflows. Its arguments are
    :class:`~asyncflow.telemetry._recorder.Recorder`'s."""

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
        # The engine is about to complete a future: this loop turn's records
        # go to the checkpoint writer before that future's waiters run. The
        # writer's own method once one is attached (called for every task
        # that ends: one call, not two).
        self.flush_soon: Callable[[], None] = _no_writer
        # The writer's relieve(), called every 1,024 created tasks: a burst
        # of task calls in one loop turn queues a bounded number of records.
        self._relieve: Callable[[], None] | None = None
        self._created = 0
        self._lines = LineRenderer(session_id, node_id, self.trace_hex)
        # Finished spans; a task's is the task itself (see _task_span.py).
        self.ring: deque[LiveSpan | TaskSpan] = deque(maxlen=max(1, ring_size))
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
        # The same, by span id: a scope opened inside another is one of its
        # members (the outer one ends after it, failed if it failed).
        self._workflow_spans: dict[int, LiveWorkflow] = {}
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
        self.flush_soon = getattr(writer, "flush_soon", _no_writer)
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

    def run_totals(self) -> list[float]:
        """``run_stats`` with the instant tasks whose totals are not counted
        in yet (any thread)."""
        instant = [s.instant for s in list(self._shapes.values()) if s.instant is not None]
        stats, held = consistent(self.run_stats, instant)
        count = sum(map(len, held))
        if count:
            stats[0] += count
            stats[2] = min(stats[2], 0.0)
        return stats

    def _shape(self, key: tuple[str, str, str, str, int, int]) -> TaskShape:
        backend = key[2]
        active = self._active.get(backend)
        if active is None:
            active = self._active[backend] = [0, 0]
        # Once per kind: its names as plain str (a numpy string would reach
        # the writer as bytes, see plain_value).
        name, kind, _, workflow_name, cpus, gpus = key
        plain = (str(name), str(kind), str(backend), str(workflow_name), cpus, gpus)
        shape = self._shapes[key] = TaskShape(
            len(self._shapes),
            plain,
            active,
            (self.queue_duration, self.task_duration, self.run_duration),
        )
        return shape

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
        self._workflow_spans[rec.span_id] = rec
        owner = self._workflow_spans.get(parent) if parent is not None else None
        if owner is not None:  # a scope inside a scope: a member of it
            owner.pending += 1
            rec.owner = owner
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
            desc = self.describe(f"{type(error).__name__}: {error_text(error)}")
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
        self._workflow_spans.pop(rec.span_id, None)
        owner = rec.owner
        if owner is not None:  # the scope it was opened in ends after it
            rec.owner = None
            if result == n.RESULT_FAILED:
                owner.failed = True
            elif rec.cut_off:
                owner.cut_off = True
            owner.pending -= 1
            if owner.closed and owner.pending <= 0:
                self._end_workflow(owner)

    # ------------------------------------------------------------------ spans
    def finish_span(self, rec: LiveSpan, status: str, desc: str) -> None:
        """End a span (the session, a workflow, a user span; a task's ends in
        ``TaskEnds._finish_task``)."""
        if not rec.end_ns:
            rec.end_ns = time.time_ns()
        rec.status = status
        rec.status_description = desc
        self.spans_finished += 1
        self.ring.append(rec)
        if self._put is not None:
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
                        plain_attributes(rec.attributes_dict()),
                        rec.span_events(),
                    ),
                )
            )
        if self.span_sink is not None:
            self.span_sink(span_dict(rec, self.trace_hex, self._notes(rec)))

    def _notes(self, rec: LiveSpan) -> list[tuple[str, int, dict[str, Any]]]:
        return list(self.session_notes) if rec is self.session else []
