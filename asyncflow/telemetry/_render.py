"""Compact telemetry records to checkpoint JSON lines.

The recorder ships small tuples; this module turns them into the lines of
the checkpoint file. It runs in the checkpoint writer process (or thread),
never on the engine's loop. Pure: no I/O, no SDK, no asyncio.

Records (first item is the kind):

- ``("L", text)``: a line already rendered (session and user events, metric
  snapshots).
- ``("C", uid, id_base, t_ns, backend, workflow_id, span_id, parent_id,
  level, name, kind, workflow_name, cpus, gpus)``: a task or block was
  created (its ``TaskCreated`` line); the rest is kept for its span.
- ``("A", uid, t_ns, fields)``: a backend assigned its resource slots (its
  ``asyncflow.ResourceAssigned`` line; ``fields``: slots, cpus, gpus).
- ``("E", uid, t_ns, offset)``: it reached a step before it started
  (``offset``: ``ID_RESOLVED``, ``ID_QUEUED`` or ``ID_SUBMITTED``; its
  ``TaskResolved``/``TaskQueued``/``TaskSubmitted`` line).
- ``("S", uid, t_ns)``: it started (its ``TaskStarted`` line).
- ``("F", uid, final_event, error_type, end_ns, status, description,
  t_resolved, t_queued, t_submitted, t_started, result, depends_on, extra,
  slots)``:
  it ended: its final event and its span (``extra``: attributes added by
  enrichers).
- ``("P", span)``: any other finished span (session, workflow, user spans).

``span`` is ``(name, span_id, parent_id, start_ns, end_ns, status,
status_description, attributes, events)`` with ``events`` a list of
``(name, time_ns)``.
"""

from __future__ import annotations

import json
from typing import Any

from . import names as n

__all__ = ["LineRenderer"]

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

# Offsets of a task's events inside its block of event ids.
ID_CREATED, ID_RESOLVED, ID_QUEUED, ID_SUBMITTED, ID_STARTED, ID_FINAL, ID_ASSIGNED = range(7)
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
        self._tasks: dict[str, tuple[Any, ...]] = {}  # uid -> (tail, created record)
        self._prefix: dict[tuple[Any, ...], str] = {}

    def render(self, record: tuple[Any, ...] | list[Any]) -> str:
        """The line(s) of one record, each ending in a newline."""
        kind = record[0]
        if kind == "L":
            text: str = record[1]
            return text if text.endswith("\n") else text + "\n"
        if kind == "C":
            uid, base, t_ns, backend, workflow_id, span_id = record[1:7]
            level, name, task_kind, workflow_name, cpus, gpus = record[8:14]
            head = f'{self._common},"backend":{_json(backend)},"task_id":{_json(uid)},'
            wf = f'"{n.WORKFLOW_ID}":{_json(workflow_id)}' if workflow_id else ""
            tail = f'{head}"attributes":{{{wf}}},"span_id":"{span_id:016x}"'
            self._tasks[uid] = (tail, record)
            # The created line also names the task, so a live view can label
            # what runs before its span exists.
            about = {n.LEVEL: level, n.TASK_NAME: name, n.WORKFLOW_NAME: workflow_name}
            if level == n.LEVEL_TASK:
                about.update({n.TASK_TYPE: task_kind, n.TASK_CPUS: cpus, n.TASK_GPUS: gpus})
            named = _json(about)[1:]
            attrs = f"{{{wf},{named}" if wf else f"{{{named}"
            created_tail = f'{head}"attributes":{attrs},"span_id":"{span_id:016x}"'
            return self._line(n.EVENT_TASK_CREATED, created_tail, t_ns, base + ID_CREATED, None)
        if kind == "E":
            tail, created = self._tasks.get(record[1], ("", None))
            base = created[2] if created is not None else 0
            offset = record[3]
            return self._line(_STEP_EVENTS[offset], tail, record[2], base + offset, None)
        if kind == "S":
            tail, created = self._tasks.get(record[1], ("", None))
            base = created[2] if created is not None else 0
            return self._line(n.EVENT_TASK_STARTED, tail, record[2], base + ID_STARTED, None)
        if kind == "A":
            tail, created = self._tasks.get(record[1], ("", None))
            base = created[2] if created is not None else 0
            return self._line(
                n.EVENT_RESOURCE_ASSIGNED, tail, record[2], base + ID_ASSIGNED, record[3]
            )
        if kind == "F":
            return self._finished(record)
        if kind == "P":
            return self.span_line(record[1])
        raise ValueError(f"unknown checkpoint record kind {kind!r}")

    def _finished(self, record: tuple[Any, ...] | list[Any]) -> str:
        (
            _,
            uid,
            final,
            error_type,
            end,
            status,
            desc,
            t_resolved,
            t_queued,
            t_submitted,
            t_started,
            result,
            depends_on,
            extra,
            slots,
        ) = record
        tail, created = self._tasks.pop(uid, ("", None))
        if created is None:
            raise ValueError(f"task {uid!r} ended without a created record")
        (_, _, base, start, backend, workflow_id, span_id, parent, level, name) = created[:10]
        task_kind, workflow_name, cpus, gpus = created[10:14]
        line = self._line
        # The steps before the final event were written as they happened.
        parts = [
            line(
                final,
                tail,
                end,
                base + ID_FINAL,
                {"error_type": error_type} if error_type else None,
            )
        ]
        key = (level, workflow_name, name, task_kind, backend, cpus, gpus)
        prefix = self._prefix.get(key)
        if prefix is None:
            if len(self._prefix) > 4096:
                self._prefix.clear()
            static: dict[str, Any] = {n.LEVEL: level, n.WORKFLOW_NAME: workflow_name}
            if level == n.LEVEL_TASK:
                static.update(
                    {
                        n.TASK_NAME: name,
                        n.TASK_TYPE: task_kind,
                        n.BACKEND: backend or "",
                        n.TASK_CPUS: cpus,
                        n.TASK_GPUS: gpus,
                    }
                )
            prefix = self._prefix[key] = _json(static)[:-1]
        if level == n.LEVEL_TASK:
            varying = (
                f',"{n.WORKFLOW_ID}":{_json(workflow_id or "")},"{n.TASK_UID}":{_json(uid)},'
                f'"{n.TASK_DEPENDS_ON}":{_json(list(depends_on))}'
            )
        else:
            varying = (
                f',"{n.WORKFLOW_ID}":{_json(uid)},"{n.BLOCK_UID}":{_json(uid)},'
                f'"{n.BLOCK_SCOPE}":{_json(workflow_id or "")}'
            )
        if slots:
            varying += f',"{n.TASK_SLOTS}":{_json(list(slots))}'
        varying += f',"{n.TASK_RESULT}":{_json(result)}'
        if error_type:
            varying += f',"{n.ERROR_TYPE}":{_json(error_type)}'
        if extra:
            varying += "," + _json(extra)[1:-1]
        events = [
            (event, t)
            for event, t in (
                (n.SPAN_EVENT_RESOLVED, t_resolved),
                (n.SPAN_EVENT_QUEUED, t_queued),
                (n.SPAN_EVENT_SUBMITTED, t_submitted),
                (n.SPAN_EVENT_STARTED, t_started),
            )
            if t
        ]
        parts.append(
            self._span_text(
                f"{level} {name}",
                span_id,
                parent,
                start,
                end,
                status,
                desc,
                prefix + varying + "}",
                events,
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
        """The ``span`` line of a finished span given as a full span tuple."""
        name, span_id, parent, start, end, status, desc, attrs, events = span
        return self._span_text(
            name, span_id, parent, start, end, status, desc, _json(attrs), events
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
    ) -> str:
        parent_hex = f'"{parent:016x}"' if parent else "null"
        event_text = ",".join(f'{{"name":"{e}","time_ns":{t}}}' for e, t in events)
        return (
            f'{{"section":"span","name":{_json(name)},"span_id":"{span_id:016x}",'
            f'"trace_id":"{self.trace_hex}","parent_span_id":{parent_hex},'
            f'"start_ns":{start},"end_ns":{end},"start_time_s":{_seconds(start)},'
            f'"end_time_s":{_seconds(end)},"duration_ms":{(end - start) / 1e6!r},'
            f'"status_code":"{status}","status_description":{_json(desc or "")},'
            f'"attributes":{attributes_json},"events":[{event_text}]}}\n'
        )
