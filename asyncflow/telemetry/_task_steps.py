"""The hooks the engine calls at every step of every task: the hot path of telemetry.

:meth:`TaskSteps.completed` is the common way out; anything it does not
cover takes :meth:`~asyncflow.telemetry._task_ends.TaskEnds.task_finished`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from . import names as n
from ._aggregate import FOLD_AT
from ._records import (
    ASSIGNED,
    COMPLETED_PACKED,
    CREATED_INTS,
    CREATED_PACKED,
    CREATED_READY_PACKED,
    ENDED_SPAN_INTS,
    ID_ASSIGNED,
    ID_QUEUED,
    ID_RESOLVED,
    ID_STARTED,
    ID_SUBMITTED,
    INSTANT_PACKED,
    INSTANT_READY_PACKED,
    READY,
    READY_ENDED_INTS,
    READY_ENDED_SPAN_INTS,
    STARTED,
    STEP,
    SUBMITTED_ALL,
    SUBMITTED_PER_RECORD,
    TASK_SPAN,
)
from ._spans import LiveSpan, count, span_dict
from ._task_ends import TaskEnds
from ._task_span import TaskSpan, live_span

__all__ = ["TaskSteps"]

_created_ints = CREATED_INTS.pack
_time_ns = time.time_ns
_ended_span_ints = ENDED_SPAN_INTS.pack
_ready_ints = READY_ENDED_INTS.pack
_ready_span_ints = READY_ENDED_SPAN_INTS.pack

# The steps before a task starts that the engine reports one by one:
# (TaskSpan attribute, engine event, offset of its event id).
_RESOLVED = ("span_resolved", n.EVENT_TASK_RESOLVED, ID_RESOLVED)
_QUEUED = ("span_queued", n.EVENT_TASK_QUEUED, ID_QUEUED)


class TaskSteps(TaskEnds):
    """A task's steps from its creation to its common end (``completed``):
    the engine calls these for every task, so they are written for speed.

    A task's span is the task itself (:class:`~._task_span.TaskSpan`): these
    hooks set its ``span_*`` fields; no span object is made per task.
    """

    def task_created(
        self,
        task: TaskSpan,
        backend: str,
        parent: LiveSpan | TaskSpan | None,
        scope_id: str | None,
        ready: bool = False,
    ) -> TaskSpan:
        owner = self._open_workflows.get(scope_id) if scope_id is not None else None
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
        # Every span field set once, to its final value so far.
        span_id = task.span_id = self._rng.getrandbits(64) or 1
        if parent is None:
            parent = owner
        parent_id = task.span_parent = (
            parent.span_id if parent is not None else self.session.span_id
        )
        start = task.span_start = _time_ns()
        task.span_end = task.span_submitted = task.span_started = 0
        if ready:  # resolved and queued as it was created: ready(), at its time
            task.span_resolved = task.span_queued = start
        else:
            task.span_resolved = task.span_queued = 0
        base = task.span_ids = next(self._blocks) << 3
        task.span_shape = shape
        task.span_owner = owner
        task.span_depends_on = task.span_slots = ()
        task.span_more = None
        active = shape.active
        if active is not None:
            active[0] += 1
        if owner is not None:
            owner.pending += 1
        put = self._put
        if put is not None:
            if not shape.sent:
                put(shape.record())
                shape.sent = True
            # records.Created, packed
            put(
                (
                    CREATED_READY_PACKED if ready else CREATED_PACKED,
                    task.uid,
                    task.workflow_id,
                    _created_ints(base, start, shape.id, span_id, parent_id),
                )
            )
        if self.subscribers_active and self.deliver is not None:
            seconds = start / 1e9
            live = live_span(task)
            self.deliver(n.EVENT_TASK_CREATED, live, seconds, {}, base)
            if ready:
                self.deliver(n.EVENT_TASK_RESOLVED, live, seconds, {}, base + ID_RESOLVED)
                self.deliver(n.EVENT_TASK_QUEUED, live, seconds, {}, base + ID_QUEUED)
        self._created += 1
        if not self._created & 1023 and self._relieve is not None:
            self._relieve()
        return task

    def _step(self, span: TaskSpan, step: tuple[str, str, int]) -> None:
        """One of the steps before a task starts: resolved, queued, submitted."""
        attr, event, offset = step
        t_ns = time.time_ns()
        setattr(span, attr, t_ns)
        if self._put is not None:
            self._put((STEP, span.uid, t_ns, offset))  # records.Step
        if self.subscribers_active and self.deliver is not None:
            self.deliver(event, live_span(span), t_ns / 1e9, {}, span.span_ids + offset)

    def resolved(self, span: TaskSpan) -> None:
        self._step(span, _RESOLVED)

    def ready(self, span: TaskSpan) -> None:
        """``resolved`` and ``queued`` at once (one clock reading)."""
        span.span_resolved = span.span_queued = t_ns = time.time_ns()
        if self._put is not None:
            self._put((READY, span.uid, t_ns))  # records.Ready
        if self.subscribers_active and self.deliver is not None:
            base, seconds, live = span.span_ids, t_ns / 1e9, live_span(span)
            self.deliver(n.EVENT_TASK_RESOLVED, live, seconds, {}, base + ID_RESOLVED)
            self.deliver(n.EVENT_TASK_QUEUED, live, seconds, {}, base + ID_QUEUED)

    def queued(self, span: TaskSpan) -> None:
        self._step(span, _QUEUED)

    def submitted_all(self, spans: list[TaskSpan]) -> None:
        """``spans`` were handed to their backend in one ``submit_tasks``
        call: one clock reading for the batch."""
        self.submitted_total += len(spans)
        t_ns = time.time_ns()
        for span in spans:
            span.span_submitted = t_ns
        put = self._put
        if put is not None:
            # In pieces: the telemetry process renders a record at a time,
            # and its memory must not grow with a batch of a million tasks.
            uids = [span.uid for span in spans]
            for at in range(0, len(uids), SUBMITTED_PER_RECORD):
                put((SUBMITTED_ALL, t_ns, tuple(uids[at : at + SUBMITTED_PER_RECORD])))
        if self.subscribers_active and self.deliver is not None:
            seconds = t_ns / 1e9
            for span in spans:
                self.deliver(
                    n.EVENT_TASK_SUBMITTED,
                    live_span(span),
                    seconds,
                    {},
                    span.span_ids + ID_SUBMITTED,
                )

    def assigned(self, span: TaskSpan, slots: Iterable[Any]) -> None:
        """A backend gave the task its resource slots (just before it starts;
        again before each later attempt)."""
        # A later attempt's assignment is an event of its own: a fresh id (the
        # task's block of ids has one place for it).
        later = bool(span.span_slots)
        event_id = self.new_event_id() if later else span.span_ids + ID_ASSIGNED
        # On the task itself, not in a SpanMore: every task of a slot-aware
        # backend has them, and the future outlives the task's end.
        span.span_slots = tuple(str(s) for s in slots)
        t_ns = time.time_ns()
        td = span.task_description
        extra = {
            "slots": list(span.span_slots),
            "cpus": count(td, "cpus", 1),
            "gpus": count(td, "gpus", 0),
        }
        if self._put is not None:
            # A later attempt's line says its event id (readers make the
            # first one's from the task's block of ids).
            fields = {**extra, n.TL_ASSIGNED_ID: event_id} if later else extra
            self._put((ASSIGNED, span.uid, t_ns, fields))  # records.Assigned
        if self.subscribers_active and self.deliver is not None:
            self.deliver(n.EVENT_RESOURCE_ASSIGNED, live_span(span), t_ns / 1e9, extra, event_id)

    def started(self, span: TaskSpan) -> None:
        span.span_started = t_ns = time.time_ns()
        shape = span.span_shape
        active = shape.active
        if active is not None:  # a task
            active[0] -= 1
            active[1] += 1
            if span.span_resolved:  # the queue wait phase
                shape.add(0, (t_ns - span.span_resolved) / 1e9)
        if self._put is not None:
            self._put((STARTED, span.uid, t_ns))  # records.Started
        if self.subscribers_active and self.deliver is not None:
            self.deliver(
                n.EVENT_TASK_STARTED, live_span(span), t_ns / 1e9, {}, span.span_ids + ID_STARTED
            )

    def completed(self, span: TaskSpan, ran: bool, depends_on: tuple[str, ...]) -> None:
        """``started`` (unless ``ran``: it did) and ``task_finished`` of a
        task that completed, in one call.

        The way out of nearly every task, so a task's common case is written
        out here in one body (one clock reading when it did not report
        running, no call per histogram); anything else takes the two hooks.
        """
        shape = span.span_shape
        rows = shape.rows
        active = shape.active
        if (
            active is None
            or rows[1] is None
            or rows[2] is None
            or (not ran and rows[0] is None and span.span_resolved)
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
        span.span_end = t_ns = time.time_ns()
        put = self._put
        uid = span.uid
        span.span_depends_on = depends_on
        start = span.span_start
        ready_instant = not ran and span.span_resolved == start
        if ready_instant:
            # Ready as it was created and ran for no time (a dry run): its
            # total is all the histograms need, counted in bulk.
            span.span_started = t_ns
            active[0] -= 1
            instant = shape.instant
            if instant is None:
                instant = shape.instant_totals(self.run_stats)
            values = instant.values
            values.append(t_ns - start)
            if len(values) >= FOLD_AT:
                instant.fold()
        else:
            bounds = self.task_duration.bounds  # every duration histogram's
            total = (t_ns - start) / 1e9
            at = bisect_left(bounds, total)
            row = rows[1]
            row[at] += 1
            row[-2] += 1
            row[-1] += total
            if ran:
                started = span.span_started
                if started:
                    active[1] -= 1
                    self._ran_for((t_ns - started) / 1e9, rows[2], bounds)
                else:  # never reported running: a cache hit, a retried dry run
                    active[0] -= 1
            else:  # started as it ended (a dry run): it ran for no time
                span.span_started = t_ns
                active[0] -= 1
                resolved = span.span_resolved
                if resolved:  # the queue wait phase
                    wait = (t_ns - resolved) / 1e9
                    queue = rows[0]
                    assert queue is not None
                    queue[bisect_left(bounds, wait)] += 1
                    queue[-2] += 1
                    queue[-1] += wait
                row = rows[2]
                row[self._zero_bucket] += 1
                row[-2] += 1
                stats = self.run_stats  # _ran(0.0), inline
                stats[0] += 1
                if stats[2] > 0.0:
                    stats[2] = 0.0
        # _finish_task(), inline, for a task with nothing more to say
        more = span.span_more
        plain = not span.span_slots
        if more is not None:  # attributes of a cache miss or attempts
            more.result = n.RESULT_COMPLETED
            more.status = n.STATUS_OK
            more.status_description = ""
            plain = plain and not more.extra
        self.spans_finished += 1
        self.ring.append(span)
        if put is not None:
            wf = span.workflow_id or ""
            if ready_instant and plain:
                # records.Instant, without the times its start and end say
                if self.task_spans:
                    put(
                        (
                            INSTANT_READY_PACKED,
                            uid,
                            depends_on,
                            wf,
                            _ready_span_ints(
                                t_ns,
                                span.span_submitted,
                                start,
                                span.span_id,
                                span.span_parent,
                                shape.id,
                            ),
                        )
                    )
                else:
                    put(
                        (
                            INSTANT_READY_PACKED,
                            uid,
                            depends_on,
                            _ready_ints(t_ns, span.span_submitted, start),
                        )
                    )
            elif self.task_spans and plain:
                # records.Completed and, after it, its TaskSpan's fields:
                # one record for the file and the span, packed
                put(
                    (
                        COMPLETED_PACKED if ran else INSTANT_PACKED,
                        uid,
                        depends_on,
                        wf,
                        _ended_span_ints(
                            t_ns,
                            span.span_resolved,
                            span.span_queued,
                            span.span_submitted,
                            span.span_started,
                            span.span_id,
                            span.span_parent,
                            start,
                            shape.id,
                        ),
                    )
                )
            else:
                if self.task_spans:
                    put((TASK_SPAN, uid, span.span_id, span.span_parent, start, shape.id, wf))
                self._put_end(span, n.STATUS_OK, "", n.EVENT_TASK_COMPLETED, not ran)
        if self.span_sink is not None:
            self.span_sink(span_dict(live_span(span), self.trace_hex))
        if span.span_owner is not None:
            self._leave_workflow(span)
