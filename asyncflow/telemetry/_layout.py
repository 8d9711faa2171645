"""Checkpoint lines of either layout as layout 1 records. Pure: dicts in, dicts out.

Layout 2 (docs/telemetry.md) writes a header line and, per task, small
``task`` lines whose fields add up to the task. :class:`Layout1Records`
turns them back into the records layout 1 wrote (an ``event`` record per
step, an ``event`` and a ``span`` record when the task ends), so every
reader of records reads both layouts alike. Layout 1 records pass through.
"""

from __future__ import annotations

from typing import Any

from . import names as n

__all__ = ["Layout1Records", "seconds"]

_STEP_EVENTS = {
    n.SPAN_EVENT_RESOLVED: (n.EVENT_TASK_RESOLVED, 1),
    n.SPAN_EVENT_QUEUED: (n.EVENT_TASK_QUEUED, 2),
    n.SPAN_EVENT_SUBMITTED: (n.EVENT_TASK_SUBMITTED, 3),
    n.SPAN_EVENT_STARTED: (n.EVENT_TASK_STARTED, 4),
}
_ID_FINAL, _ID_ASSIGNED = 5, 6  # offsets in a task's block of event ids (``_records``)
_LINE_KEYS = frozenset({n.SECTION, n.TL_UID, n.TL_ASSIGNED})


def seconds(t_ns: int) -> float:
    """``t_ns`` as the float layout 1 wrote (its text has nine decimals)."""
    whole, frac = divmod(t_ns, 1_000_000_000)
    return float(f"{whole}.{frac:09d}")


class Layout1Records:
    """Records of one checkpoint file, in layout 1's shape, line by line.

    Args:
        events: also give a task's ``event`` records (a reader of spans
            alone is spared building six per task).
    """

    def __init__(self, events: bool = True) -> None:
        self.header: dict[str, Any] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._events = events

    def records(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """The layout 1 records a parsed line stands for (none for a header)."""
        section = record.get(n.SECTION)
        if section == n.SECTION_TASK:
            return self._task(record)
        if section == n.SECTION_HEADER:
            self.header = record
            return []
        if section == n.SECTION_SPAN and self.header:
            start, end = record.get("start_ns"), record.get("end_ns")
            record.setdefault("trace_id", self.header.get(n.HEADER_TRACE_ID))
            if isinstance(start, int) and isinstance(end, int):
                record.setdefault("start_time_s", seconds(start))
                record.setdefault("end_time_s", seconds(end))
                record.setdefault("duration_ms", (end - start) / 1e6)
        return [record]

    # ------------------------------------------------------------------ tasks
    def _task(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        uid = line[n.TL_UID]
        out: list[dict[str, Any]] = []
        events = self._events
        if n.TL_CREATED in line:
            task = self._live[uid] = dict(line)
            if events:
                out.append(self._created(task))
        else:
            task = self._live.setdefault(uid, {n.TL_UID: uid})
        if n.TL_ASSIGNED in line:  # layout 1 wrote it before the task started
            fields = {k: v for k, v in line.items() if k not in _LINE_KEYS}
            task[n.TL_SLOTS] = fields.get(n.TL_SLOTS) or []
            event_id = fields.pop(n.TL_ASSIGNED_ID, None)  # a later attempt's
            if events:
                assigned = self._event(
                    task, n.EVENT_RESOURCE_ASSIGNED, line[n.TL_ASSIGNED], _ID_ASSIGNED, fields
                )
                if type(event_id) is int:
                    assigned["event_id"] = event_id
                out.append(assigned)
        for step, (event, offset) in _STEP_EVENTS.items():
            t = line.get(step)
            if t is not None:
                task[step] = t
                if events:
                    out.append(self._event(task, event, t, offset))
        if n.TL_ATTEMPT_ENDED in line:
            task.setdefault("attempts", []).append(
                (line[n.TL_ATTEMPT_ENDED], line.get(n.TL_ATTEMPT) or {})
            )
        if n.TL_ENDED in line:
            del self._live[uid]
            task.update(line)
            final, span = self._ended(task)
            out += (final, span) if events else (span,)
        return out

    def _event(
        self,
        task: dict[str, Any],
        name: str,
        t_ns: int,
        offset: int,
        extra: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        header = self.header
        t = seconds(t_ns)
        workflow_id = task.get(n.TL_WORKFLOW_ID)
        if attributes is None:
            attributes = {n.WORKFLOW_ID: workflow_id} if workflow_id else {}
        record = {
            n.SECTION: n.SECTION_EVENT,
            "name": name,
            "event_type": name,
            "event_id": task.get(n.TL_EVENT_ID, 0) + offset,
            "event_time": t,
            "emit_time": t,
            "session_id": header.get(n.HEADER_SESSION_ID),
            "node_id": header.get(n.HEADER_NODE_ID),
            "trace_id": header.get(n.HEADER_TRACE_ID),
            "backend": task.get(n.TL_BACKEND),
            "task_id": task[n.TL_UID],
            "attributes": attributes,
            "span_id": task.get(n.TL_SPAN),
        }
        if extra:
            record.update(extra)
        return record

    def _created(self, task: dict[str, Any]) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if task.get(n.TL_WORKFLOW_ID):
            attributes[n.WORKFLOW_ID] = task[n.TL_WORKFLOW_ID]
        level = task.get(n.TL_LEVEL, n.LEVEL_TASK)
        attributes[n.LEVEL] = level
        attributes[n.TASK_NAME] = task.get(n.TL_NAME, "")
        attributes[n.WORKFLOW_NAME] = task.get(n.TL_WORKFLOW_NAME, "")
        if level == n.LEVEL_TASK:
            attributes[n.TASK_TYPE] = task.get(n.TL_TYPE, "")
            attributes[n.TASK_CPUS] = task.get(n.TL_CPUS, 1)
            attributes[n.TASK_GPUS] = task.get(n.TL_GPUS, 0)
        return self._event(task, n.EVENT_TASK_CREATED, task[n.TL_CREATED], 0, attributes=attributes)

    def _ended(self, task: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        uid = task[n.TL_UID]
        level = task.get(n.TL_LEVEL, n.LEVEL_TASK)
        result = task.get(n.TL_RESULT, n.RESULT_COMPLETED)
        error_type = task.get(n.TL_ERROR_TYPE, "")
        end = task[n.TL_ENDED]
        start = task.get(n.TL_CREATED, end)
        final = self._event(
            task,
            n.FINAL_EVENT_OF_RESULT.get(result, n.EVENT_TASK_COMPLETED),
            end,
            _ID_FINAL,
            {"error_type": error_type} if error_type else None,
        )
        workflow_id = task.get(n.TL_WORKFLOW_ID) or ""
        attributes: dict[str, Any] = {
            n.LEVEL: level,
            n.WORKFLOW_NAME: task.get(n.TL_WORKFLOW_NAME, ""),
        }
        if level == n.LEVEL_TASK:
            attributes[n.TASK_NAME] = task.get(n.TL_NAME, "")
            attributes[n.TASK_TYPE] = task.get(n.TL_TYPE, "")
            attributes[n.BACKEND] = task.get(n.TL_BACKEND) or ""
            attributes[n.TASK_CPUS] = task.get(n.TL_CPUS, 1)
            attributes[n.TASK_GPUS] = task.get(n.TL_GPUS, 0)
            attributes[n.WORKFLOW_ID] = workflow_id
            attributes[n.TASK_UID] = uid
            attributes[n.TASK_DEPENDS_ON] = list(task.get(n.TL_DEPENDS_ON) or [])
        else:
            attributes[n.WORKFLOW_ID] = uid
            attributes[n.BLOCK_UID] = uid
            attributes[n.BLOCK_SCOPE] = workflow_id
        if task.get(n.TL_SLOTS):
            attributes[n.TASK_SLOTS] = list(task[n.TL_SLOTS])
        attributes[n.TASK_RESULT] = result
        if error_type:
            attributes[n.ERROR_TYPE] = error_type
        attributes.update(task.get(n.TL_ATTRIBUTES) or {})
        events: list[dict[str, Any]] = [
            {"name": step, "time_ns": task[step]} for step in n.TL_STEPS if task.get(step)
        ]
        events += [
            {"name": n.SPAN_EVENT_ATTEMPT, "time_ns": t, "attributes": attrs}
            for t, attrs in task.get("attempts", ())
        ]
        if task.get(n.TL_EXCEPTION):
            events.append(
                {
                    "name": n.SPAN_EVENT_EXCEPTION,
                    "time_ns": end,
                    "attributes": task[n.TL_EXCEPTION],
                }
            )
        parent = task.get(n.TL_PARENT)
        span = {
            n.SECTION: n.SECTION_SPAN,
            "name": f"{level} {task.get(n.TL_NAME, '')}",
            "span_id": task.get(n.TL_SPAN),
            "trace_id": self.header.get(n.HEADER_TRACE_ID),
            "parent_span_id": parent,
            "start_ns": start,
            "end_ns": end,
            "start_time_s": seconds(start),
            "end_time_s": seconds(end),
            "duration_ms": (end - start) / 1e6,
            "status_code": task.get(n.TL_STATUS, n.STATUS_UNSET),
            "status_description": task.get(n.TL_DESCRIPTION, ""),
            "attributes": attributes,
            "events": events,
        }
        return final, span
