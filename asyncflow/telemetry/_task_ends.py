"""How a task's span ends, whatever its result: the hooks of the
:class:`~asyncflow.telemetry._recorder.Recorder` for an attempt that ended,
a cache hit and a task's end.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from . import names as n
from ._failures import error_text, exception_record, process_attributes
from ._recorder_base import RecorderBase
from ._records import (
    ATTEMPT,
    COMPLETED_PACKED,
    ENDED_INTS,
    FINISHED,
    ID_FINAL,
    INSTANT_PACKED,
    STARTED,
    TASK_SPAN,
)
from ._spans import plain_attributes, span_dict
from ._task_span import TaskSpan, live_span, more_of

__all__ = ["TaskEnds"]

logger = logging.getLogger("asyncflow.telemetry")

_ended_ints = ENDED_INTS.pack


def _backend(task: TaskSpan) -> str:
    """The backend a task runs on (empty for a block)."""
    shape = task.span_shape
    return shape.backend if shape.active is not None else ""


class TaskEnds(RecorderBase):
    """How a task ends: an attempt, a cache hit, the end itself (any result)."""

    def attempt_ended(
        self,
        span: TaskSpan,
        attempt: int,
        started_ns: int,
        error: BaseException | None,
        retrying: bool,
    ) -> None:
        t_ns = time.time_ns()
        more = more_of(span)
        attrs: dict[str, Any] = {
            n.ATTEMPT_NUMBER: attempt,
            n.ATTEMPT_STARTED: started_ns,
            n.ATTEMPT_RETRIED: retrying,
        }
        if span.span_slots and started_ns:
            # Each attempt's own: a later one may run on other slots.
            attrs[n.ATTEMPT_SLOTS] = list(span.span_slots)
        error_type = ""
        if error is not None:
            error_type = type(error).__name__
            attrs[n.ERROR_TYPE] = error_type
            attrs[n.ATTEMPT_ERROR] = error_text(error)[:1000]
        if more.attempt_events is None:
            more.attempt_events = []
        more.attempt_events.append((t_ns, attrs))
        more.extra = {**(more.extra or {}), n.TASK_ATTEMPTS: attempt}
        if retrying:
            self.retries.add((span.name, _backend(span), span.workflow_name or "", error_type))
        if self._put is not None:
            self._put((ATTEMPT, span.uid, t_ns, attrs))  # records.Attempt

    def cached(
        self, span: TaskSpan, state: str, source_session: str | None, source_task: str | None
    ) -> None:
        more = more_of(span)
        extra = {**(more.extra or {}), n.TASK_CACHE: state}
        if source_session is not None:
            extra[n.CACHE_SOURCE_SESSION] = source_session
        if source_task is not None:
            extra[n.CACHE_SOURCE_TASK] = source_task
        more.extra = extra
        self.cache_lookups.add((span.name, span.workflow_name or "", state))

    def task_finished(
        self,
        span: TaskSpan,
        result: str,
        error: BaseException | None,
        cut_off: bool,
        depends_on: tuple[str, ...],
    ) -> None:
        t_ns = span.span_end = time.time_ns()
        span.span_depends_on = depends_on
        # A task that completed has a SpanMore only if something else made one.
        more = span.span_more if result == n.RESULT_COMPLETED else more_of(span)
        if more is not None:
            more.result = result
        error_type = ""
        owner = span.span_owner
        if result == n.RESULT_COMPLETED:
            status, desc, final = n.STATUS_OK, "", n.EVENT_TASK_COMPLETED
        elif result == n.RESULT_FAILED:
            assert more is not None
            error_type = more.error_type = type(error).__name__ if error is not None else "Error"
            status, final = n.STATUS_ERROR, n.EVENT_TASK_FAILED
            desc = self.describe(error_text(error)) if error is not None else "failed"
            if error is not None:
                # Secrets out of the traceback and the stderr tail too.
                kind, message, stack = exception_record(error)
                more.exception = (kind, self.redact(message), self.redact(stack))
                process = process_attributes(error)
                if process:
                    tail = process.get(n.PROCESS_STDERR_TAIL)
                    if tail:
                        process[n.PROCESS_STDERR_TAIL] = self.redact(tail)
                    more.extra = process
            if owner is not None:
                owner.failed = True
        else:
            status, desc = (
                (n.STATUS_ERROR, "canceled: engine shut down") if cut_off else (n.STATUS_UNSET, "")
            )
            final = n.EVENT_TASK_CANCELED
            if cut_off and owner is not None:
                owner.cut_off = True
        if self.subscribers_active and self.deliver is not None:
            extra = {"error_type": error_type} if error_type else {}
            self.deliver(final, live_span(span), t_ns / 1e9, extra, span.span_ids + ID_FINAL)
        if self.enrichers:
            self._enrich(span)
        shape = span.span_shape
        active = shape.active
        if active is not None:  # a task
            total = (t_ns - span.span_start) / 1e9
            started = span.span_started
            ran = (t_ns - started) / 1e9 if started else 0.0
            if started:
                self._ran(ran)
                active[1] -= 1
            else:
                active[0] -= 1
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
        if self.task_spans and self._put is not None:
            # records.TaskSpan: the telemetry process builds the OTLP span from it
            self._put(
                (
                    TASK_SPAN,
                    span.uid,
                    span.span_id,
                    span.span_parent,
                    span.span_start,
                    shape.id,
                    span.workflow_id or "",
                )
            )
        self._finish_task(span, result, status, desc, final)
        if span.span_owner is not None:
            self._leave_workflow(span)

    def _finish_task(self, span: TaskSpan, result: str, status: str, desc: str, final: str) -> None:
        """End a task's span (its end time is set): the ring, its last
        record with its ``final`` event, span processors."""
        more = span.span_more
        if more is not None:
            more.result = result
            more.status = status
            more.status_description = desc
        self.spans_finished += 1
        self.ring.append(span)
        if self._put is not None:
            self._put_end(span, status, desc, final)
        if self.span_sink is not None:
            self.span_sink(span_dict(live_span(span), self.trace_hex))

    def _put_end(
        self, span: TaskSpan, status: str, desc: str, final: str, instant: bool = False
    ) -> None:
        """Send a task's (or block's) last record: ``Completed`` when it has
        nothing more to say, else ``Finished``.

        ``instant``: it started now and no ``Started`` record was sent.
        """
        assert self._put is not None
        more = span.span_more
        plain = status == n.STATUS_OK and not desc
        if span.span_slots or (more is not None and more.extra):
            plain = False
        if instant and not plain:
            self._put((STARTED, span.uid, span.span_started))  # records.Started
            instant = False
        if plain and (more is None or more.exception is None):
            # records.Completed, packed: all a task that completed has to say
            self._put(
                (
                    INSTANT_PACKED if instant else COMPLETED_PACKED,
                    span.uid,
                    span.span_depends_on,
                    _ended_ints(
                        span.span_end,
                        span.span_resolved,
                        span.span_queued,
                        span.span_submitted,
                        span.span_started,
                    ),
                )
            )
        else:
            # records.Finished (no SpanMore: a task that completed, with slots)
            error_type, result, extra, exception = (
                (more.error_type, more.result, more.extra, more.exception)
                if more is not None
                else ("", n.RESULT_COMPLETED, None, None)
            )
            self._put(
                (
                    FINISHED,
                    span.uid,
                    final,
                    error_type,
                    span.span_end,
                    status,
                    desc,
                    span.span_resolved,
                    span.span_queued,
                    span.span_submitted,
                    span.span_started,
                    result,
                    span.span_depends_on,
                    extra,
                    span.span_slots,
                    exception,
                )
            )

    def _leave_workflow(self, span: TaskSpan) -> None:
        """A task of a workflow ended: the workflow's span ends with its last
        task once its scope exited."""
        owner = span.span_owner
        assert owner is not None
        span.span_owner = None
        owner.pending -= 1
        if owner.closed and owner.pending <= 0:
            self._end_workflow(owner)

    def _ran_for(self, seconds: float, row: list[Any], bounds: tuple[float, ...]) -> None:
        """A task that completed ran for ``seconds``: its run histogram's
        ``row`` and ``run_stats``."""
        row[bisect_left(bounds, seconds)] += 1
        row[-2] += 1
        row[-1] += seconds
        self._ran(seconds)

    def _ran(self, seconds: float) -> None:
        """Count a task that ran for ``seconds`` in ``run_stats``."""
        stats = self.run_stats
        stats[0] += 1
        stats[1] += seconds
        if seconds < stats[2]:
            stats[2] = seconds
        if seconds > stats[3]:
            stats[3] = seconds

    def _enrich(self, span: TaskSpan) -> None:
        attrs = live_span(span).attributes_dict()
        added: dict[str, Any] = {}
        for enrich in list(self.enrichers):
            try:
                extra = enrich(span, attrs)
                if extra is not None and not isinstance(extra, Mapping):
                    raise TypeError(
                        f"a span enricher returns a dict or None, not {type(extra).__name__}"
                    )
                if extra:
                    extra = plain_attributes({str(k): v for k, v in extra.items()})
            except Exception:  # an enricher never breaks a task
                self.enrichers.remove(enrich)
                logger.exception("span enricher %r failed and was removed", enrich)
                continue
            if extra:
                attrs.update(extra)
                added.update(extra)
        if added:
            more = more_of(span)
            more.extra = {**(more.extra or {}), **added}
