"""The hot path of telemetry: what the engine calls at every task transition.

Kept cheap enough to leave on. A task costs a small span record, one
pre-formatted JSON line per lifecycle event, one span line at the end, two
histogram points and a few dict increments; OpenTelemetry ``ReadableSpan``
objects are built only when a span processor wants them, and event objects
only when someone subscribed. The OpenTelemetry SDK is not imported here.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import names as n
from .checkpoint import CheckpointWriter, dumps

__all__ = ["Recorder", "SpanRecord"]

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class SpanRecord:
    """One span being recorded (session, workflow, block or task)."""

    __slots__ = (
        "attributes",
        "attrs_json",
        "backend",
        "backend_json",
        "closed",
        "end_ns",
        "error",
        "events",
        "failed",
        "hex",
        "level",
        "name",
        "owner",
        "parent",
        "pending",
        "span_id",
        "start_ns",
        "uid",
    )

    def __init__(self, span_id: int, parent: int | None, level: str, name: str) -> None:
        self.span_id = span_id
        self.hex = f"{span_id:016x}"
        self.parent = parent
        self.level = level
        self.name = name
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.events: list[tuple[str, int]] = []
        self.attributes: dict[str, Any] = {}
        self.attrs_json = "{}"
        self.backend: str | None = None
        self.backend_json = "null"
        self.uid: str | None = None
        self.failed = False
        # Workflow spans: tasks still running, whether the scope has exited.
        self.owner: SpanRecord | None = None
        self.pending = 0
        self.closed = False
        self.error: BaseException | None = None


class Recorder:
    """Turns engine transitions into events, spans and metric points.

    Args:
        session_id: the engine uid.
        node_id: this host's name.
        writer: the checkpoint writer, or None.
        ring_size: how many finished spans stay in memory for ``read_traces``.
        span_sink: called with each finished span dict when span processors
            want OpenTelemetry spans (None: nobody does).
        metrics: the metric instruments, or None.
    """

    def __init__(
        self,
        session_id: str,
        node_id: str,
        writer: CheckpointWriter | None,
        ring_size: int,
        span_sink: Callable[[dict[str, Any]], None] | None,
        metrics: Any,
    ) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self._rng = random.Random()
        self.trace_id = self._rng.getrandbits(128) or 1
        self.trace_hex = f"{self.trace_id:032x}"
        self.writer = writer
        self.ring: deque[dict[str, Any]] = deque(maxlen=ring_size)
        self.span_sink = span_sink
        self.metrics = metrics
        self.enrichers: list[Callable[[Any, dict[str, Any]], Any]] = []
        self.subscribers_active = False
        self.deliver: Callable[[str, SpanRecord | None, float, dict[str, Any]], None] | None = None
        self._next_event = 0
        self._common = (
            f'"session_id":{_json(session_id)},"node_id":{_json(node_id)},'
            f'"trace_id":"{self.trace_hex}"'
        )
        self._backend_json: dict[str | None, str] = {None: "null"}
        # Live gauges, read by observable instruments.
        self.active_tasks: dict[tuple[str, str], int] = {}
        self.active_workflows: dict[str, int] = {}
        self.open_workflows: dict[str, SpanRecord] = {}
        # Aggregates for summary(): never grow with the number of tasks.
        self.by_state: dict[str, int] = {}
        self.durations: dict[tuple[str, str, str], list[float]] = {}
        self.failures: dict[str, int] = {}
        self.per_workflow: dict[str, dict[str, int]] = {}
        self.spans_finished = 0
        self.session = self._span(None, n.LEVEL_SESSION, n.SPAN_SESSION)
        self.session.attributes = {n.LEVEL: n.LEVEL_SESSION, n.SESSION_ID: session_id}

    # ------------------------------------------------------------------ ids and lines
    def _span(self, parent: int | None, level: str, name: str) -> SpanRecord:
        return SpanRecord(self._rng.getrandbits(64) or 1, parent, level, name)

    def new_event_id(self) -> int:
        self._next_event += 1
        return self._next_event

    def _event(
        self, name: str, rec: SpanRecord | None, t_ns: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Record an engine event: a checkpoint line, and subscribers if any."""
        self._next_event += 1
        t = t_ns / 1e9
        if self.writer is not None:
            if rec is None:
                target = (
                    '"backend":null,"task_id":null,"attributes":{},'
                    f'"span_id":"{self.session.hex}"'
                )
            else:
                uid = "null" if rec.uid is None else f'"{rec.uid}"'
                target = (
                    f'"backend":{rec.backend_json},"task_id":{uid},'
                    f'"attributes":{rec.attrs_json},"span_id":"{rec.hex}"'
                )
            more = "" if not extra else "," + _json(extra)[1:-1]
            self.writer.write(
                f'{{"section":"event","name":"{name}","event_type":"{name}",'
                f'"event_id":{self._next_event},"event_time":{t},"emit_time":{t},'
                f"{self._common},{target}{more}}}\n"
            )
        if self.subscribers_active and self.deliver is not None:
            self.deliver(name, rec, t, extra or {})

    def backend_json(self, name: str | None) -> str:
        cached = self._backend_json.get(name)
        if cached is None:
            cached = self._backend_json[name] = _json(name)
        return cached

    # ------------------------------------------------------------------ session
    def session_started(self) -> None:
        self._event(n.EVENT_SESSION_STARTED, None, self.session.start_ns)

    def session_ended(self) -> None:
        for workflow in list(self.open_workflows.values()):
            workflow.closed = True  # a scope still open at shutdown ends here
            self._end_workflow(workflow)
        rec = self.session
        rec.end_ns = time.time_ns()
        self._event(n.EVENT_SESSION_ENDED, None, rec.end_ns)
        self._finish_span(rec, "UNSET", "")

    # ------------------------------------------------------------------ workflows
    def workflow_started(self, wf_id: str, name: str | None, parent: int | None) -> SpanRecord:
        rec = self._span(
            parent or self.session.span_id,
            n.LEVEL_WORKFLOW,
            n.span_name(n.LEVEL_WORKFLOW, name or wf_id),
        )
        rec.attributes = {
            n.LEVEL: n.LEVEL_WORKFLOW,
            n.WORKFLOW_ID: wf_id,
            n.WORKFLOW_NAME: name or "",
        }
        self.open_workflows[wf_id] = rec
        key = name or ""
        self.active_workflows[key] = self.active_workflows.get(key, 0) + 1
        return rec

    def workflow_ended(self, rec: SpanRecord, error: BaseException | None) -> None:
        """The scope exited; the span ends when its last task has ended too."""
        rec.closed = True
        rec.error = error
        if rec.pending <= 0:
            self._end_workflow(rec)

    def _end_workflow(self, rec: SpanRecord) -> None:
        wf_id = rec.attributes[n.WORKFLOW_ID]
        if self.open_workflows.get(wf_id) is rec:
            del self.open_workflows[wf_id]
        name = rec.attributes[n.WORKFLOW_NAME]
        self.active_workflows[name] = self.active_workflows.get(name, 1) - 1
        rec.end_ns = time.time_ns()
        error = rec.error
        if error is not None and not _is_cancel(error):
            result, status, desc = n.RESULT_FAILED, "ERROR", f"{type(error).__name__}: {error}"
            rec.attributes[n.ERROR_TYPE] = type(error).__name__
        elif error is not None:
            result, status, desc = n.RESULT_CANCELED, "ERROR", "canceled"
        elif rec.failed:
            result, status, desc = n.RESULT_FAILED, "ERROR", "a task of the workflow failed"
        else:
            result, status, desc = n.RESULT_COMPLETED, "UNSET", ""
        rec.attributes[n.WORKFLOW_RESULT] = result
        if self.metrics is not None:
            self.metrics.workflow_done((rec.end_ns - rec.start_ns) / 1e9, name, result)
        self._finish_span(rec, status, desc)

    # ------------------------------------------------------------------ tasks and blocks
    def task_created(
        self,
        fut: Any,
        backend: str | None,
        parent: SpanRecord | None,
        scope: tuple[str, str | None] | None,
        depends_on: list[str],
    ) -> SpanRecord:
        if parent is None and scope is not None:
            parent = self.open_workflows.get(scope[0])
        is_block = fut.kind == n.TYPE_BLOCK
        level = n.LEVEL_BLOCK if is_block else n.LEVEL_TASK
        rec = self._span(
            parent.span_id if parent is not None else self.session.span_id,
            level,
            f"{level} {fut.name}",
        )
        rec.uid = fut.uid
        wf_id = fut.workflow_id
        if scope is not None:
            owner = self.open_workflows.get(scope[0])
            if owner is not None:
                owner.pending += 1
                rec.owner = owner
        attrs: dict[str, Any] = {
            n.LEVEL: level,
            n.WORKFLOW_ID: wf_id or "",
            n.WORKFLOW_NAME: fut.workflow_name or "",
        }
        if is_block:
            attrs[n.BLOCK_UID] = fut.uid
            attrs[n.WORKFLOW_ID] = fut.uid
        else:
            attrs[n.TASK_UID] = fut.uid
            attrs[n.TASK_NAME] = fut.name
            attrs[n.TASK_TYPE] = fut.kind
            attrs[n.BACKEND] = backend or ""
            td = fut.task_description
            attrs[n.TASK_CPUS] = int(td.get("cpus", 1)) if td else 1
            attrs[n.TASK_GPUS] = int(td.get("gpus", 0)) if td else 0
            rec.backend = backend
            rec.backend_json = self.backend_json(backend)
            key = (n.STATE_PENDING, backend or "")
            self.active_tasks[key] = self.active_tasks.get(key, 0) + 1
        if depends_on:
            attrs[n.TASK_DEPENDS_ON] = depends_on
        rec.attributes = attrs
        if wf_id:
            rec.attrs_json = f'{{"{n.WORKFLOW_ID}":{_json(wf_id)}}}'
        self._event(n.EVENT_TASK_CREATED, rec, rec.start_ns)
        return rec

    def task_event(self, rec: SpanRecord, span_event: str, event_name: str) -> None:
        t_ns = time.time_ns()
        rec.events.append((span_event, t_ns))
        self._event(event_name, rec, t_ns)

    def task_started(self, rec: SpanRecord) -> None:
        t_ns = time.time_ns()
        rec.events.append((n.SPAN_EVENT_STARTED, t_ns))
        if rec.level == n.LEVEL_TASK:
            backend = rec.backend or ""
            active = self.active_tasks
            key = (n.STATE_PENDING, backend)
            active[key] = active.get(key, 1) - 1
            key = (n.STATE_RUNNING, backend)
            active[key] = active.get(key, 0) + 1
            if self.metrics is not None:
                submitted = _event_time(rec, n.SPAN_EVENT_SUBMITTED)
                if submitted:
                    self.metrics.queued(
                        (t_ns - submitted) / 1e9, backend, rec.attributes[n.WORKFLOW_NAME]
                    )
        self._event(n.EVENT_TASK_STARTED, rec, t_ns)

    def task_finished(
        self, fut: Any, rec: SpanRecord, result: str, error: BaseException | None, cut_off: bool
    ) -> None:
        t_ns = time.time_ns()
        rec.end_ns = t_ns
        attrs = rec.attributes
        attrs[n.TASK_RESULT] = result
        is_task = rec.level == n.LEVEL_TASK
        if is_task:
            backend = rec.backend or ""
            started = any(name == n.SPAN_EVENT_STARTED for name, _ in rec.events)
            key = (n.STATE_RUNNING if started else n.STATE_PENDING, backend)
            self.active_tasks[key] = self.active_tasks.get(key, 1) - 1
        error_type = ""
        if result == n.RESULT_FAILED:
            error_type = type(error).__name__ if error is not None else "Error"
            attrs[n.ERROR_TYPE] = error_type
            status, desc = "ERROR", str(error) if error is not None else "failed"
            self._event(n.EVENT_TASK_FAILED, rec, t_ns, {"error_type": error_type})
            self.failures[error_type] = self.failures.get(error_type, 0) + 1
            if rec.owner is not None:
                rec.owner.failed = True
        elif result == n.RESULT_CANCELED:
            status, desc = ("ERROR", "canceled: engine shut down") if cut_off else ("UNSET", "")
            self._event(n.EVENT_TASK_CANCELED, rec, t_ns)
        else:
            status, desc = "OK", ""
            self._event(n.EVENT_TASK_COMPLETED, rec, t_ns)
        for enrich in self.enrichers:
            try:
                extra = enrich(fut, attrs)
                if extra:
                    attrs.update(extra)
            except Exception:
                self.enrichers.remove(enrich)
                import logging

                logging.getLogger("asyncflow.telemetry").exception(
                    "span enricher %r failed and was removed", enrich
                )
                break
        duration = (t_ns - rec.start_ns) / 1e9
        level_name = attrs.get(n.TASK_NAME) or rec.name
        workflow_name = attrs[n.WORKFLOW_NAME]
        self.by_state[result] = self.by_state.get(result, 0) + 1
        stats_key = (workflow_name, level_name, result)
        stats = self.durations.get(stats_key)
        if stats is None:
            self.durations[stats_key] = [1, duration, duration, duration]
        else:
            stats[0] += 1
            stats[1] += duration
            if duration < stats[2]:
                stats[2] = duration
            if duration > stats[3]:
                stats[3] = duration
        per_wf = self.per_workflow.get(workflow_name)
        if per_wf is None:
            per_wf = self.per_workflow[workflow_name] = {}
        per_wf[result] = per_wf.get(result, 0) + 1
        if is_task and self.metrics is not None:
            self.metrics.task_done(
                duration,
                level_name,
                attrs[n.TASK_TYPE],
                result,
                rec.backend or "",
                workflow_name,
                error_type,
            )
        self._finish_span(rec, status, desc)
        owner = rec.owner
        if owner is not None:
            rec.owner = None
            owner.pending -= 1
            if owner.closed and owner.pending <= 0:
                self._end_workflow(owner)

    # ------------------------------------------------------------------ spans
    def _finish_span(self, rec: SpanRecord, status: str, desc: str) -> None:
        end = rec.end_ns or time.time_ns()
        span = {
            "section": n.SECTION_SPAN,
            "name": rec.name,
            "span_id": rec.hex,
            "trace_id": self.trace_hex,
            "parent_span_id": f"{rec.parent:016x}" if rec.parent else None,
            "start_ns": rec.start_ns,
            "end_ns": end,
            "start_time_s": rec.start_ns / 1e9,
            "end_time_s": end / 1e9,
            "duration_ms": (end - rec.start_ns) / 1e6,
            "status_code": status,
            "status_description": desc,
            "attributes": rec.attributes,
            "events": [{"name": name, "time_ns": t} for name, t in rec.events],
        }
        self.spans_finished += 1
        self.ring.append(span)
        if self.writer is not None:
            self.writer.write(dumps(span) + "\n")
        if self.span_sink is not None:
            self.span_sink(span)


def _event_time(rec: SpanRecord, name: str) -> int:
    for event_name, t in reversed(rec.events):
        if event_name == name:
            return t
    return 0


def _is_cancel(error: BaseException) -> bool:
    import asyncio

    return isinstance(error, asyncio.CancelledError)
