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
    ID_FINAL,
    TASK_SPAN,
)
from ._spans import LiveSpan, plain_attributes

__all__ = ["TaskEnds"]

logger = logging.getLogger("asyncflow.telemetry")


class TaskEnds(RecorderBase):
    """How a task ends: an attempt, a cache hit, the end itself (any result)."""

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
        if span.slots and started_ns:
            # Each attempt's own: a later one may run on other slots.
            attrs[n.ATTEMPT_SLOTS] = list(span.slots)
        error_type = ""
        if error is not None:
            error_type = type(error).__name__
            attrs[n.ERROR_TYPE] = error_type
            attrs[n.ATTEMPT_ERROR] = error_text(error)[:1000]
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
            desc = self.describe(error_text(error)) if error is not None else "failed"
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

    def _enrich(self, rec: LiveSpan) -> None:
        attrs = rec.attributes_dict()
        added: dict[str, Any] = {}
        for enrich in list(self.enrichers):
            try:
                extra = enrich(rec.fut, attrs)
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
            rec.extra = {**(rec.extra or {}), **added}
