"""Compact telemetry records to checkpoint JSON lines (layout 2).

The recorder ships small tuples (their layout is declared in
``_records.py``); this module turns them into the lines of the checkpoint
file. It runs in the checkpoint writer process (or thread), never on the
engine's loop. Pure: no I/O, no SDK, no asyncio.

Layout 2 (docs/telemetry.md): a header line names the session, node and
trace once; each step of a task is a small ``task`` line written when it
happens, and its last line carries only what its earlier lines did not. So
the renderer keeps nothing per task: its memory does not grow with the run
(it keeps each kind of task's ``Shape``: a handful per campaign).
"""

from __future__ import annotations

import re
from typing import Any

from . import names as n
from ._records import (
    ASSIGNED,
    ATTEMPT,
    COMPLETED,
    CREATED,
    CREATED_READY,
    FINISHED,
    ID_QUEUED,
    ID_RESOLVED,
    ID_SUBMITTED,
    INSTANT,
    LINE,
    NOTE,
    PACKED,
    READY,
    SHAPE,
    SPAN,
    STARTED,
    STEP,
    SUBMITTED_ALL,
    TASK_SPAN,
    Assigned,
    Attempt,
    Finished,
    Shape,
    SpanFields,
    expand,
)
from ._spill import dumps

__all__ = ["LineRenderer"]

_json = dumps  # no NaN in a line: a float that is not finite as its text
# What the encoder above escapes in a string: without any, a string's JSON
# is the string in quotes (four of a task's six lines are its uid and a number).
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _text(value: str) -> str:
    """``_json(value)`` for a string, quicker for the plain ones."""
    if _ESCAPED.search(value) is None:
        return f'"{value}"'
    return _json(value)


_STEP_KEYS = {
    ID_RESOLVED: n.SPAN_EVENT_RESOLVED,
    ID_QUEUED: n.SPAN_EVENT_QUEUED,
    ID_SUBMITTED: n.SPAN_EVENT_SUBMITTED,
}
_TASK = f'{{"{n.SECTION}":"{n.SECTION_TASK}","{n.TL_UID}":'


def _seconds(t_ns: int) -> str:
    whole, frac = divmod(t_ns, 1_000_000_000)
    return f"{whole}.{frac:09d}"


class LineRenderer:
    """Renders records of one session.

    Args:
        session_id: the engine uid.
        node_id: the host name.
        trace_hex: the session's trace id.
    """

    def __init__(self, session_id: str, node_id: str, trace_hex: str) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self.trace_hex = trace_hex
        # Session-level event lines keep layout 1's full shape (two a session).
        self._common = (
            f'"session_id":{_json(session_id)},"node_id":{_json(node_id)},"trace_id":"{trace_hex}"'
        )
        # Shape number -> what a created line of that kind says of it:
        # (the backend field, the fields after the workflow id).
        self._shapes: dict[int, tuple[str, str]] = {}

    def header(self) -> str:
        """The file's first line: the layout number and what every line shares."""
        return (
            _json(
                {
                    n.SECTION: n.SECTION_HEADER,
                    n.HEADER_LAYOUT: n.CHECKPOINT_LAYOUT,
                    n.HEADER_SESSION_ID: self.session_id,
                    n.HEADER_NODE_ID: self.node_id,
                    n.HEADER_TRACE_ID: self.trace_hex,
                }
            )
            + "\n"
        )

    def render(self, record: tuple[Any, ...] | list[Any]) -> str:
        """The line of one record, ending in a newline."""
        kind = record[0]
        if kind in PACKED:
            record = expand(record)
            kind = record[0]
        # The four kinds every task has read their fields by position (the
        # named tuples of _records.py cost more than the line).
        if kind == STEP:  # records.Step
            return f'{_TASK}{_text(record[1])},"{_STEP_KEYS[record[3]]}":{record[2]}}}\n'
        if kind == SUBMITTED_ALL:  # a submitted step for each task, at one time
            submitted = f',"{n.SPAN_EVENT_SUBMITTED}":{record[1]}}}\n'
            return "".join([f"{_TASK}{_text(uid)}{submitted}" for uid in record[2]])
        if kind == READY:  # records.Ready: two steps at one moment, a line each
            uid = _text(record[1])
            return (
                f'{_TASK}{uid},"{n.SPAN_EVENT_RESOLVED}":{record[2]}}}\n'
                f'{_TASK}{uid},"{n.SPAN_EVENT_QUEUED}":{record[2]}}}\n'
            )
        if kind == STARTED:  # records.Started
            return f'{_TASK}{_text(record[1])},"{n.SPAN_EVENT_STARTED}":{record[2]}}}\n'
        if kind == CREATED:
            return self._created(record)
        if kind == CREATED_READY:  # records.Created, resolved and queued at its time
            uid = _text(record[1])
            return (
                f"{self._created(record)}"
                f'{_TASK}{uid},"{n.SPAN_EVENT_RESOLVED}":{record[3]}}}\n'
                f'{_TASK}{uid},"{n.SPAN_EVENT_QUEUED}":{record[3]}}}\n'
            )
        if kind in (COMPLETED, INSTANT):  # records.Completed
            uid = _text(record[1])
            started = (
                f'{_TASK}{uid},"{n.SPAN_EVENT_STARTED}":{record[7]}}}\n' if kind == INSTANT else ""
            )
            return (
                f'{started}{_TASK}{uid},"{n.TL_ENDED}":{record[2]},'
                f'"{n.TL_RESULT}":"{n.RESULT_COMPLETED}","{n.TL_STATUS}":"{n.STATUS_OK}"'
                f"{_depends(record[3])}}}\n"
            )
        if kind == SHAPE:
            self._shape(Shape._make(record))
            return ""
        if kind == FINISHED:
            return self._finished(Finished._make(record))
        if kind == LINE:
            text: str = record[1]
            return text if text.endswith("\n") else text + "\n"
        if kind == ASSIGNED:
            assigned = Assigned._make(record)
            more = _json(assigned.fields)[1:-1] if assigned.fields else ""
            return (
                f'{_TASK}{_json(assigned.uid)},"{n.TL_ASSIGNED}":{assigned.t_ns}'
                f"{',' if more else ''}{more}}}\n"
            )
        if kind == SPAN:
            return self.span_line(record[1])
        if kind == ATTEMPT:
            attempt = Attempt._make(record)
            return (
                f'{_TASK}{_json(attempt.uid)},"{n.TL_ATTEMPT_ENDED}":{attempt.t_ns},'
                f'"{n.TL_ATTEMPT}":{_json(attempt.attributes)}}}\n'
            )
        if kind in (NOTE, TASK_SPAN):  # for OTLP only
            return ""
        raise ValueError(f"unknown checkpoint record kind {kind!r}")

    def _shape(self, shape: Shape) -> None:
        rest = (
            f',"{n.TL_LEVEL}":{_json(shape.level)},"{n.TL_NAME}":{_json(shape.name)},'
            f'"{n.TL_WORKFLOW_NAME}":{_json(shape.workflow_name)}'
        )
        if shape.level == n.LEVEL_TASK:
            rest += (
                f',"{n.TL_TYPE}":{_json(shape.task_kind)},"{n.TL_CPUS}":{int(shape.cpus)},'
                f'"{n.TL_GPUS}":{int(shape.gpus)}'
            )
        self._shapes[shape.shape] = (f',"{n.TL_BACKEND}":{_json(shape.backend)}', rest + "}\n")

    def _created(self, record: tuple[Any, ...] | list[Any]) -> str:
        _, uid, id_base, t_ns, shape, workflow_id, span_id, parent_id = record  # records.Created
        backend, rest = self._shapes[shape]
        parent = f',"{n.TL_PARENT}":"{parent_id:016x}"' if parent_id else ""
        workflow = f',"{n.TL_WORKFLOW_ID}":{_text(workflow_id)}' if workflow_id else ""
        return (
            f'{_TASK}{_text(uid)},"{n.TL_CREATED}":{t_ns},'
            f'"{n.TL_EVENT_ID}":{id_base},"{n.TL_SPAN}":"{span_id:016x}"'
            f"{parent}{backend}{workflow}{rest}"
        )

    @staticmethod
    def _finished(done: Finished) -> str:
        # The steps before the end are on the task's earlier lines: only
        # what they could not say is here.
        parts = [
            f'{_TASK}{_json(done.uid)},"{n.TL_ENDED}":{done.end_ns},'
            f'"{n.TL_RESULT}":{_json(done.result)},"{n.TL_STATUS}":{_json(done.status)}'
        ]
        if done.description:
            parts.append(f',"{n.TL_DESCRIPTION}":{_json(done.description)}')
        if done.error_type:
            parts.append(f',"{n.TL_ERROR_TYPE}":{_json(done.error_type)}')
        parts.append(_depends(done.depends_on))
        if done.extra:
            parts.append(f',"{n.TL_ATTRIBUTES}":{_json(done.extra)}')
        if done.exception:
            kind, message, stack = done.exception
            exception = {
                n.EXCEPTION_TYPE: kind,
                n.EXCEPTION_MESSAGE: message,
                n.EXCEPTION_STACKTRACE: stack,
            }
            parts.append(f',"{n.TL_EXCEPTION}":{_json(exception)}')
        parts.append("}\n")
        return "".join(parts)

    def session_event(self, name: str, t_ns: int, event_id: int, span_id: int) -> str:
        """A session-level engine event line (no task)."""
        tail = (
            f'{self._common},"backend":null,"task_id":null,"attributes":{{}},'
            f'"span_id":"{span_id:016x}"'
        )
        t = _seconds(t_ns)
        return (
            f'{{"section":"event","name":"{name}","event_type":"{name}",'
            f'"event_id":{event_id},"event_time":{t},"emit_time":{t},{tail}}}\n'
        )

    def span_line(self, span: tuple[Any, ...] | list[Any]) -> str:
        """The ``span`` line of a finished span given as its fields (``SpanFields``).

        Layout 2 leaves out what a reader derives: the trace id (in the
        header), the times in seconds and the duration.
        """
        f = SpanFields._make(span)
        parent_hex = f'"{f.parent_id:016x}"' if f.parent_id else "null"
        event_text = ",".join(
            f'{{"name":"{e[0]}","time_ns":{e[1]}}}'
            if len(e) == 2
            else f'{{"name":"{e[0]}","time_ns":{e[1]},"attributes":{_json(e[2])}}}'
            for e in f.events
        )
        return (
            f'{{"section":"span","name":{_json(f.name)},"span_id":"{f.span_id:016x}",'
            f'"parent_span_id":{parent_hex},"start_ns":{f.start_ns},"end_ns":{f.end_ns},'
            f'"status_code":"{f.status}","status_description":{_json(f.description or "")},'
            f'"attributes":{_json(f.attributes)},"events":[{event_text}]}}\n'
        )


def _depends(depends_on: tuple[str, ...] | list[str]) -> str:
    """The ``depends_on`` field of a task's last line (empty: left out)."""
    return f',"{n.TL_DEPENDS_ON}":{_json(list(depends_on))}' if depends_on else ""
