"""Checkpoint JSON Lines into a :class:`RunBuilder`. Pure: lines in, builder calls out.

Every line starts with its section (and an event line with its name), so
lines are sorted by prefix before anything is parsed. Span lines are parsed
first; the ``TaskCreated``, ``asyncflow.TaskResolved``, ``TaskStarted`` and
``asyncflow.ResourceAssigned`` lines of a task are parsed only while its span
has not arrived (they are what a live view has of a waiting, queued or
running task); the other lifecycle events are never parsed: the span
carries their timestamps. That keeps a 100,000-task
file to one JSON parse per task. A block's ``TaskCreated`` line is parsed
even when its span came with it: only that line says what the block was
called under, which places it while its workflow's span is still to come.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from asyncflow.telemetry import names as n

from .model import ResourceSample, RunBuilder

__all__ = ["CheckpointParser", "loads"]

loads: Callable[[str], Any] = json.loads
try:  # about twice as fast as the standard library on span lines
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the dashboard extra
    pass

_SECTION = f'{{"{n.SECTION}":"'
_AT_SECTION = len(_SECTION)
_EVENT_NAME = f'{n.SECTION_EVENT}","name":"'
_AT_NAME = _AT_SECTION + len(_EVENT_NAME)
_SPAN, _METRIC, _EVENT = "span", "metric", "event"
_SECTIONS = {
    n.SECTION_SPAN[:4]: _SPAN,
    n.SECTION_METRIC[:4]: _METRIC,
    n.SECTION_EVENT[:4]: _EVENT,
}
# What a task's events are for: "live" ones are all a live view has of a
# running task; "skip" ones are steps whose timestamps its span carries.
_LIVE, _SKIP = "live", "skip"
_EVENTS = {
    n.EVENT_TASK_CREATED: _LIVE,
    n.EVENT_TASK_STARTED: _LIVE,
    n.EVENT_RESOURCE_ASSIGNED: _LIVE,
    # A live task waits for its dependencies until resolved, then is queued:
    # resolved is all a live view needs of the steps before it starts.
    n.EVENT_TASK_RESOLVED: _LIVE,
    n.EVENT_TASK_QUEUED: _SKIP,
    n.EVENT_TASK_SUBMITTED: _SKIP,
    n.EVENT_TASK_COMPLETED: _SKIP,
    n.EVENT_TASK_FAILED: _SKIP,
    n.EVENT_TASK_CANCELED: _SKIP,
}
_STEPS = {n.EVENT_TASK_RESOLVED: n.SPAN_EVENT_RESOLVED}
_TASK_ID = '"task_id":"'
_CREATED = f'{_EVENT_NAME}{n.EVENT_TASK_CREATED}"'
_BLOCK_PREFIX = n.UID_PREFIX_BLOCK


def _task_id(line: str) -> str:
    start = line.find(_TASK_ID)
    if start < 0:
        return ""
    start += len(_TASK_ID)
    return line[start : line.find('"', start)]


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class CheckpointParser:
    """Feeds checkpoint lines to a builder and counts the lines it could not use.

    Args:
        builder: receives the records.
    """

    def __init__(self, builder: RunBuilder) -> None:
        self.builder = builder
        self.records = 0
        self.bad_lines = 0
        self.first_bad = ""
        self._live: dict[str, list[str]] = {}

    def _bad(self, line: str) -> None:
        self.bad_lines += 1
        if not self.first_bad:
            text = line.strip()
            self.first_bad = text[:60] + ("..." if len(text) > 60 else "")

    def _load(self, line: str) -> dict[str, Any] | None:
        try:
            record = loads(line)
        except (ValueError, RecursionError):  # deep nesting is not a record either
            self._bad(line)
            return None
        if not isinstance(record, dict) or (
            n.SECTION in record and n.record_problem(record) is not None
        ):
            self._bad(line)
            return None
        return record

    def feed(self, lines: Iterable[str]) -> None:
        """Take complete lines (a torn last line must not be among them).

        The events of tasks still running are kept as text until
        :meth:`flush`: most of them are made moot by a span a few lines on.
        """
        spans: list[str] = []
        others: list[str] = []
        live = self._live
        sections = _SECTIONS
        for line in lines:
            section = (
                sections.get(line[_AT_SECTION : _AT_SECTION + 4], "")
                if line.startswith(_SECTION)
                else ""
            )
            if section is _SPAN:
                spans.append(line)
            elif section is _EVENT:
                self.records += 1
                kind = (
                    _EVENTS.get(line[_AT_NAME : line.find('"', _AT_NAME)])
                    if line.startswith(_EVENT_NAME, _AT_SECTION)
                    else None
                )
                if kind is _LIVE:
                    live.setdefault(_task_id(line), []).append(line)
                elif kind is None:
                    others.append(line)
            elif section is _METRIC:
                metric = self._load(line)
                if metric is not None:
                    self.records += 1
                    self.builder.add_metric_snapshot(metric)
            elif line.strip():
                self._loose(line)
        builder = self.builder
        for line in spans:
            span = self._load(line)
            if span is not None:
                self.records += 1
                builder.add_span(span)
                attrs = span.get("attributes")
                if live and isinstance(attrs, dict):
                    uid = str(attrs.get(n.TASK_UID) or attrs.get(n.BLOCK_UID) or "")
                    events = live.pop(uid, None)
                    if events and uid.startswith(_BLOCK_PREFIX):
                        builder.block_scope(uid, self._created_scope(events))
        for line in others:
            event = self._load(line)
            if event is not None:
                self._other_event(event)

    def _created_scope(self, lines: list[str]) -> str:
        """The workflow id on the ``TaskCreated`` line among a block's live lines.

        It says what the block was called under, which its span does not.
        """
        for line in lines:
            if line.startswith(_CREATED, _AT_SECTION):
                event = self._load(line)
                attrs = event.get("attributes") if event is not None else None
                return str(attrs.get(n.WORKFLOW_ID) or "") if isinstance(attrs, dict) else ""
        return ""

    def _loose(self, line: str) -> None:
        """A line not in the writer's compact form (written by hand or another tool)."""
        record = self._load(line)
        if record is None:
            return
        section = record.get(n.SECTION)
        if section == n.SECTION_SPAN:
            self.builder.add_span(record)
        elif section == n.SECTION_METRIC:
            self.builder.add_metric_snapshot(record)
        elif section == n.SECTION_EVENT:
            if _EVENTS.get(str(record.get("name"))) is _LIVE:
                self._live_event(record)
            else:
                self._other_event(record)
        else:
            self._bad(line)
            return
        self.records += 1

    def flush(self) -> None:
        """Parse the kept events of tasks whose span has not arrived."""
        live, self._live = self._live, {}
        for uid, lines in live.items():
            if self.builder.is_finished(uid):
                continue
            for line in lines:
                event = self._load(line)
                if event is not None:
                    self._live_event(event)

    def _live_event(self, event: dict[str, Any]) -> None:
        uid = str(event.get("task_id") or "")
        t = _float(event.get("event_time"))
        if not uid or t is None:
            return
        name = event.get("name")
        builder = self.builder
        if name == n.EVENT_TASK_CREATED:
            attrs = event.get("attributes")
            if not isinstance(attrs, dict):
                attrs = {}
            builder.task_created(
                uid,
                t,
                str(event.get("backend") or ""),
                str(attrs.get(n.WORKFLOW_ID) or ""),
                str(event.get("span_id") or ""),
                block=uid.startswith(_BLOCK_PREFIX),
                name=str(attrs.get(n.TASK_NAME) or ""),
                workflow_type=str(attrs.get(n.WORKFLOW_NAME) or ""),
                cpus=_int(attrs.get(n.TASK_CPUS), 1),
                gpus=_int(attrs.get(n.TASK_GPUS), 0),
            )
        elif name == n.EVENT_TASK_STARTED:
            builder.task_started(uid, t)
        elif name in _STEPS:
            builder.task_step(uid, _STEPS[name], t)
        else:
            slots = event.get("slots")
            if isinstance(slots, list):
                builder.task_assigned(uid, t, slots)

    def _other_event(self, event: dict[str, Any]) -> None:
        name = event.get("name")
        t = _float(event.get("event_time")) or 0.0
        builder = self.builder
        if name == n.EVENT_RESOURCE_UPDATE:
            builder.add_sample(
                ResourceSample(
                    time=t,
                    node=str(event.get("node_id") or ""),
                    cpu=_float(event.get("cpu_percent")),
                    memory=_float(event.get("memory_percent")),
                    gpu=_float(event.get("gpu_percent")),
                )
            )
        elif name == n.EVENT_SESSION_STARTED:
            builder.session_bounds(t)
        elif name == n.EVENT_SESSION_ENDED:
            builder.session_ended(t)
        else:
            # A campaign's own events (``define_event``) may say a workflow
            # type's priority, e.g. ``campaign.ResourceAssigned``.
            workflow_type = event.get("workflow_type")
            priority = event.get("priority")
            if isinstance(workflow_type, str) and workflow_type and isinstance(priority, int):
                builder.set_priority(workflow_type, priority)
