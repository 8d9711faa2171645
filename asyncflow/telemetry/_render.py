"""Compact telemetry records to checkpoint JSON lines.

The recorder ships small tuples (their layout is declared in
``_records.py``); this module turns them into the lines of the checkpoint
file. It runs in the checkpoint writer process (or thread), never on the
engine's loop. Pure: no I/O, no SDK, no asyncio.
"""

from __future__ import annotations

import json
from typing import Any

from . import names as n
from ._records import (
    ASSIGNED,
    ATTEMPT,
    CREATED,
    FINISHED,
    ID_ASSIGNED,
    ID_CREATED,
    ID_FINAL,
    ID_QUEUED,
    ID_RESOLVED,
    ID_STARTED,
    ID_SUBMITTED,
    LINE,
    NOTE,
    SPAN,
    STARTED,
    STEP,
    TASK_SPAN,
    Assigned,
    Attempt,
    Created,
    Finished,
    SpanFields,
    Step,
)
from ._spans import exception_event

__all__ = ["LineRenderer"]

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

_STEP_EVENTS = {
    ID_RESOLVED: n.EVENT_TASK_RESOLVED,
    ID_QUEUED: n.EVENT_TASK_QUEUED,
    ID_SUBMITTED: n.EVENT_TASK_SUBMITTED,
}


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
        self.trace_hex = trace_hex
        self._common = (
            f'"session_id":{_json(session_id)},"node_id":{_json(node_id)},"trace_id":"{trace_hex}"'
        )
        self._tasks: dict[str, tuple[str, Created]] = {}  # uid -> (line tail, created record)
        self._prefix: dict[tuple[Any, ...], str] = {}
        self._attempts: dict[str, list[tuple[str, int, dict[str, Any]]]] = {}

    def render(self, record: tuple[Any, ...] | list[Any]) -> str:
        """The line(s) of one record, each ending in a newline."""
        kind = record[0]
        if kind == LINE:
            text: str = record[1]
            return text if text.endswith("\n") else text + "\n"
        if kind == CREATED:
            return self._created(Created._make(record))
        if kind == STEP:
            step = Step._make(record)
            tail, base = self._task(step.uid)
            offset = step.offset
            return self._line(_STEP_EVENTS[offset], tail, step.t_ns, base + offset, None)
        if kind == STARTED:
            tail, base = self._task(record[1])
            return self._line(n.EVENT_TASK_STARTED, tail, record[2], base + ID_STARTED, None)
        if kind == ASSIGNED:
            assigned = Assigned._make(record)
            tail, base = self._task(assigned.uid)
            return self._line(
                n.EVENT_RESOURCE_ASSIGNED, tail, assigned.t_ns, base + ID_ASSIGNED, assigned.fields
            )
        if kind == FINISHED:
            return self._finished(Finished._make(record))
        if kind == SPAN:
            return self.span_line(record[1])
        if kind == ATTEMPT:
            attempt = Attempt._make(record)
            self._attempts.setdefault(attempt.uid, []).append(
                (n.SPAN_EVENT_ATTEMPT, attempt.t_ns, attempt.attributes)
            )
            return ""
        if kind in (NOTE, TASK_SPAN):  # for OTLP only
            return ""
        raise ValueError(f"unknown checkpoint record kind {kind!r}")

    def _task(self, uid: str) -> tuple[str, int]:
        """A created task's common line tail and its first event id."""
        tail, created = self._tasks.get(uid, ("", None))
        return tail, created.id_base if created is not None else 0

    def _created(self, created: Created) -> str:
        uid, span_id, level = created.uid, created.span_id, created.level
        workflow_id = created.workflow_id
        head = f'{self._common},"backend":{_json(created.backend)},"task_id":{_json(uid)},'
        wf = f'"{n.WORKFLOW_ID}":{_json(workflow_id)}' if workflow_id else ""
        tail = f'{head}"attributes":{{{wf}}},"span_id":"{span_id:016x}"'
        self._tasks[uid] = (tail, created)
        # The created line also names the task, so a live view can label
        # what runs before its span exists.
        about: dict[str, Any] = {
            n.LEVEL: level,
            n.TASK_NAME: created.name,
            n.WORKFLOW_NAME: created.workflow_name,
        }
        if level == n.LEVEL_TASK:
            about.update(
                {
                    n.TASK_TYPE: created.task_kind,
                    n.TASK_CPUS: created.cpus,
                    n.TASK_GPUS: created.gpus,
                }
            )
        named = _json(about)[1:]
        attrs = f"{{{wf},{named}" if wf else f"{{{named}"
        created_tail = f'{head}"attributes":{attrs},"span_id":"{span_id:016x}"'
        return self._line(
            n.EVENT_TASK_CREATED, created_tail, created.t_ns, created.id_base + ID_CREATED, None
        )

    def _finished(self, done: Finished) -> str:
        uid = done.uid
        tail, created = self._tasks.pop(uid, ("", None))
        if created is None:
            raise ValueError(f"task {uid!r} ended without a created record")
        level, name, workflow_id = created.level, created.name, created.workflow_id
        error_type = done.error_type
        # The steps before the final event were written as they happened.
        parts = [
            self._line(
                done.final_event,
                tail,
                done.end_ns,
                created.id_base + ID_FINAL,
                {"error_type": error_type} if error_type else None,
            )
        ]
        key = (
            level,
            created.workflow_name,
            name,
            created.task_kind,
            created.backend,
            created.cpus,
            created.gpus,
        )
        prefix = self._prefix.get(key)
        if prefix is None:
            if len(self._prefix) > 4096:
                self._prefix.clear()
            static: dict[str, Any] = {n.LEVEL: level, n.WORKFLOW_NAME: created.workflow_name}
            if level == n.LEVEL_TASK:
                static.update(
                    {
                        n.TASK_NAME: name,
                        n.TASK_TYPE: created.task_kind,
                        n.BACKEND: created.backend or "",
                        n.TASK_CPUS: created.cpus,
                        n.TASK_GPUS: created.gpus,
                    }
                )
            prefix = self._prefix[key] = _json(static)[:-1]
        if level == n.LEVEL_TASK:
            varying = (
                f',"{n.WORKFLOW_ID}":{_json(workflow_id or "")},"{n.TASK_UID}":{_json(uid)},'
                f'"{n.TASK_DEPENDS_ON}":{_json(list(done.depends_on))}'
            )
        else:
            varying = (
                f',"{n.WORKFLOW_ID}":{_json(uid)},"{n.BLOCK_UID}":{_json(uid)},'
                f'"{n.BLOCK_SCOPE}":{_json(workflow_id or "")}'
            )
        if done.slots:
            varying += f',"{n.TASK_SLOTS}":{_json(list(done.slots))}'
        varying += f',"{n.TASK_RESULT}":{_json(done.result)}'
        if error_type:
            varying += f',"{n.ERROR_TYPE}":{_json(error_type)}'
        if done.extra:
            varying += "," + _json(done.extra)[1:-1]
        events: list[Any] = [
            (event, t)
            for event, t in (
                (n.SPAN_EVENT_RESOLVED, done.t_resolved),
                (n.SPAN_EVENT_QUEUED, done.t_queued),
                (n.SPAN_EVENT_SUBMITTED, done.t_submitted),
                (n.SPAN_EVENT_STARTED, done.t_started),
            )
            if t
        ]
        attempts = self._attempts.pop(uid, None)
        if attempts:
            events.extend(attempts)
        parts.append(
            self._span_text(
                f"{level} {name}",
                created.span_id,
                created.parent_id,
                created.t_ns,
                done.end_ns,
                done.status,
                done.description,
                prefix + varying + "}",
                events,
                exception_event(done.exception, done.end_ns) if done.exception else None,
            )
        )
        return "".join(parts)

    def session_event(self, name: str, t_ns: int, event_id: int, span_id: int) -> str:
        """A session-level engine event line (no task)."""
        tail = (
            f'{self._common},"backend":null,"task_id":null,"attributes":{{}},'
            f'"span_id":"{span_id:016x}"'
        )
        return self._line(name, tail, t_ns, event_id, None)

    @staticmethod
    def _line(name: str, tail: str, t_ns: int, event_id: int, extra: Any) -> str:
        t = _seconds(t_ns)
        more = "," + _json(extra)[1:-1] if extra else ""
        return (
            f'{{"section":"event","name":"{name}","event_type":"{name}",'
            f'"event_id":{event_id},"event_time":{t},"emit_time":{t},{tail}{more}}}\n'
        )

    def span_line(self, span: tuple[Any, ...] | list[Any]) -> str:
        """The ``span`` line of a finished span given as its fields (``SpanFields``)."""
        f = SpanFields._make(span)
        return self._span_text(
            f.name,
            f.span_id,
            f.parent_id,
            f.start_ns,
            f.end_ns,
            f.status,
            f.description,
            _json(f.attributes),
            f.events,
        )

    def _span_text(
        self,
        name: str,
        span_id: int,
        parent: int | None,
        start: int,
        end: int,
        status: str,
        desc: str,
        attributes_json: str,
        events: Any,
        exception: dict[str, Any] | None = None,
    ) -> str:
        parent_hex = f'"{parent:016x}"' if parent else "null"
        event_text = ",".join(
            f'{{"name":"{e[0]}","time_ns":{e[1]}}}'
            if len(e) == 2
            else f'{{"name":"{e[0]}","time_ns":{e[1]},"attributes":{_json(e[2])}}}'
            for e in events
        )
        if exception is not None:
            event_text += ("," if event_text else "") + _json(exception)
        return (
            f'{{"section":"span","name":{_json(name)},"span_id":"{span_id:016x}",'
            f'"trace_id":"{self.trace_hex}","parent_span_id":{parent_hex},'
            f'"start_ns":{start},"end_ns":{end},"start_time_s":{_seconds(start)},'
            f'"end_time_s":{_seconds(end)},"duration_ms":{(end - start) / 1e6!r},'
            f'"status_code":"{status}","status_description":{_json(desc or "")},'
            f'"attributes":{attributes_json},"events":[{event_text}]}}\n'
        )
