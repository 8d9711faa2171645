"""Finished OTLP spans from the recorder's records, in the telemetry process.

The recorder ships every task transition as a small record (``_records.py``)
to the writer process. With OTLP export on, it also sends a ``TaskSpan``
record just before each task's ``Finished`` record; from the two (and the
task's attempts, if it had any) this process encodes the span as OTLP
protobuf (``_otlp_proto``), keeping nothing per task. The span carries the
same name, attributes, events and status as the span the in-process path
(``SpanBridge``) builds from the recorder's ``LiveSpan``.

Pure: no I/O, no SDK, no asyncio.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import names as n
from ._otlp_proto import SpanEncoder
from ._records import (
    ATTEMPT,
    COMPLETED,
    FINISHED,
    INSTANT,
    NOTE,
    PACKED,
    SHAPE,
    SPAN,
    TASK_SPAN,
    Completed,
    Finished,
    Shape,
    SpanFields,
    TaskSpan,
    expand,
)
from ._spans import own_attributes, shared_attributes

__all__ = ["SpanAssembler"]


# The attributes every task span of one kind shares (LiveSpan.attributes_dict
# puts them first, in this order).
_SHARED = frozenset(
    (n.LEVEL, n.WORKFLOW_NAME, n.TASK_NAME, n.TASK_TYPE, n.BACKEND, n.TASK_CPUS, n.TASK_GPUS)
)


class SpanAssembler:
    """Turns records into encoded spans (``ScopeSpans.spans`` fields).

    Args:
        encoder: encodes each finished span.
        session_span: the session span's id: user events (``NOTE`` records)
            become its span events, the last ``SESSION_NOTES_KEPT`` of them.
    """

    def __init__(self, encoder: SpanEncoder, session_span: int) -> None:
        self.encoder = encoder
        self.session_span = session_span
        self._ending: TaskSpan | None = None  # the TaskSpan before its Finished
        # Shape number -> (span name, the shared attributes' key, those
        # attributes): a handful per campaign.
        self._shapes: dict[int, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}
        self._attempts: dict[str, list[tuple[str, int, dict[str, Any]]]] = {}
        self._notes: deque[tuple[str, int, dict[str, Any]]] = deque(maxlen=n.SESSION_NOTES_KEPT)

    @property
    def kept(self) -> int:
        """Tasks this assembler holds something of (their attempts): not one
        per task of the run."""
        return len(self._attempts)

    def add(self, record: tuple[Any, ...] | list[Any]) -> bytes | None:
        """Take one record; returns an encoded span when one finished."""
        kind = record[0]
        if kind in PACKED:
            record = expand(record)
            kind = record[0]
        if kind == TASK_SPAN:
            self._ending = TaskSpan._make(record)
        elif kind in (COMPLETED, INSTANT):
            return self._completed(record)
        elif kind == FINISHED:
            return self._finished(Finished._make(record))
        elif kind == SHAPE:
            self._shape(Shape._make(record))
        elif kind == SPAN:
            return self._span(SpanFields._make(record[1]))
        elif kind == ATTEMPT:
            self._attempts.setdefault(record[1], []).append(
                (n.SPAN_EVENT_ATTEMPT, record[2], record[3])
            )
        elif kind == NOTE:
            self._notes.append((record[1], record[2], record[3]))
        return None

    def _shape(self, shape: Shape) -> None:
        sort = (
            shape.level,
            shape.workflow_name,
            shape.name,
            shape.task_kind,
            shape.backend,
            shape.cpus,
            shape.gpus,
        )
        span_name = f"{shape.level} {shape.name}"
        self._shapes[shape.shape] = (span_name, sort, shared_attributes(*sort))

    def _completed(self, record: tuple[Any, ...] | list[Any]) -> bytes | None:
        if len(record) > len(Completed._fields):  # its TaskSpan's fields follow
            self._ending = TaskSpan(TASK_SPAN, record[1], *record[len(Completed._fields) :])
            record = record[: len(Completed._fields)]
        created = self._ending
        done = Completed._make(record)
        if (
            created is None
            or created.uid != done.uid
            or done.uid in self._attempts
            or self._shapes[created.shape][1][0] != n.LEVEL_TASK
        ):
            return self._finished(
                Finished(
                    FINISHED,
                    done.uid,
                    n.EVENT_TASK_COMPLETED,
                    "",
                    done.end_ns,
                    n.STATUS_OK,
                    "",
                    done.t_resolved,
                    done.t_queued,
                    done.t_submitted,
                    done.t_started,
                    n.RESULT_COMPLETED,
                    done.depends_on,
                    None,
                    (),
                    None,
                )
            )
        # A task with nothing more to say: the encoder's quick way, same bytes.
        self._ending = None
        span_name, sort, shared = self._shapes[created.shape]
        return self.encoder.completed_task(
            span_name,
            created.span_id,
            created.parent_id,
            created.start_ns,
            done.end_ns,
            (sort, shared),
            created.workflow_id,
            done.uid,
            done.depends_on,
            (done.t_resolved, done.t_queued, done.t_submitted, done.t_started),
        )

    def _finished(self, done: Finished) -> bytes | None:
        created, self._ending = self._ending, None
        attempts = self._attempts.pop(done.uid, None)
        if created is None or created.uid != done.uid:
            return None  # its TaskSpan was lost (a full pipe dropped it): no span
        events: list[Any] = [
            (name, t)
            for name, t in (
                (n.SPAN_EVENT_RESOLVED, done.t_resolved),
                (n.SPAN_EVENT_QUEUED, done.t_queued),
                (n.SPAN_EVENT_SUBMITTED, done.t_submitted),
                (n.SPAN_EVENT_STARTED, done.t_started),
            )
            if t
        ]
        if attempts:
            events.extend(attempts)
        if done.exception:
            kind, message, stack = done.exception
            events.append(
                (
                    n.SPAN_EVENT_EXCEPTION,
                    done.end_ns,
                    {
                        n.EXCEPTION_TYPE: kind,
                        n.EXCEPTION_MESSAGE: message,
                        n.EXCEPTION_STACKTRACE: stack,
                    },
                )
            )
        span_name, sort, shared = self._shapes[created.shape]
        key: tuple[Any, ...] | None = sort
        attributes = own_attributes(
            sort[0],
            created.uid,
            created.workflow_id,
            done.depends_on,
            done.slots,
            done.result,
            done.error_type,
        )
        extra = done.extra
        if extra:
            if _SHARED.isdisjoint(extra):
                attributes.update(extra)
            else:  # an enricher replaced a shared value: one plain dict, in order
                attributes = {**shared, **attributes, **extra}
                key = None
        return self.encoder.span(
            span_name,
            created.span_id,
            created.parent_id,
            created.start_ns,
            done.end_ns,
            done.status,
            done.description,
            attributes,
            events,
            shared=(key, shared) if key is not None else None,
        )

    def _span(self, f: SpanFields) -> bytes:
        events: list[Any] = list(f.events)
        if f.span_id == self.session_span:
            events.extend(self._notes)
        return self.encoder.span(
            f.name,
            f.span_id,
            f.parent_id,
            f.start_ns,
            f.end_ns,
            f.status,
            f.description,
            f.attributes,
            events,
        )
