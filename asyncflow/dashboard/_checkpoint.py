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

from .model import ResourceSample, RunBuilder, SpanRecord, task_record

__all__ = ["CheckpointParser", "loads"]

loads: Callable[[str | bytes], Any] = json.loads
try:  # about twice as fast as the standard library on span lines
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the dashboard extra
    pass

_SECTION = f'{{"{n.SECTION}":"'
_AT_SECTION = len(_SECTION)
_EVENT_NAME = f'{n.SECTION_EVENT}","name":"'
_AT_NAME = _AT_SECTION + len(_EVENT_NAME)
_SPAN, _METRIC, _EVENT, _TASK, _HEADER = "span", "metric", "event", "task", "header"
_SECTIONS = {
    n.SECTION_SPAN[:4]: _SPAN,
    n.SECTION_METRIC[:4]: _METRIC,
    n.SECTION_EVENT[:4]: _EVENT,
    n.SECTION_TASK[:4]: _TASK,
    n.SECTION_HEADER[:4]: _HEADER,
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
_HEADER_LINE = f'{_SECTION}{n.SECTION_HEADER}"'
_NOT_JSON, _BLANK = object(), object()
_TASK_ID = '"task_id":"'
_CREATED = f'{_EVENT_NAME}{n.EVENT_TASK_CREATED}"'
_BLOCK_PREFIX = n.UID_PREFIX_BLOCK
_TASK_LEVELS = (n.LEVEL_TASK, n.LEVEL_BLOCK)
# The last key of a three-key task line that is not just one more field.
_NOT_A_STEP = frozenset({n.TL_ENDED, n.TL_ATTEMPT_ENDED, n.TL_UID, n.SECTION})
# Task line fields ``n.record_problem`` holds to a type: times and objects.
_TYPED = frozenset(
    (
        *(n.TL_CREATED, *n.TL_STEPS, n.TL_ASSIGNED, n.TL_ATTEMPT_ENDED, n.TL_ENDED),
        *(n.TL_ATTEMPT, n.TL_ATTRIBUTES, n.TL_EXCEPTION),
    )
)
_TYPED_BUT_CREATED = _TYPED - {n.TL_CREATED}
_TYPED_BUT_ASSIGNED = _TYPED - {n.TL_ASSIGNED}
_TYPED_BUT_ENDED = _TYPED - {n.TL_ENDED}


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


def _seconds(t_ns: int) -> float:
    """Epoch nanoseconds as the float a layout 1 event line's nine decimals give."""
    whole, frac = divmod(t_ns, 1_000_000_000)
    return float(f"{whole}.{frac:09d}")


def _misshaped(fields: dict[str, Any]) -> bool:
    """Whether a task line is one ``n.record_problem`` objects to.

    The writer's created, assigned and ended lines (the lines of a task but
    its one-step ones) carry one time each and mostly no object: those pass
    by that time's type, without the general check.
    """
    if type(fields.get(n.TL_CREATED)) is int and _TYPED_BUT_CREATED.isdisjoint(fields):
        return not fields[n.TL_UID]
    if type(fields.get(n.TL_ENDED)) is int and _TYPED_BUT_ENDED.isdisjoint(fields):
        return not fields[n.TL_UID]
    if type(fields.get(n.TL_ASSIGNED)) is int and _TYPED_BUT_ASSIGNED.isdisjoint(fields):
        return not fields[n.TL_UID]
    return n.record_problem(fields) is not None


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
        # Layout 2: the fields of each unfinished task's lines so far.
        self._tasks: dict[str, dict[str, Any]] = {}
        self._done: list[SpanRecord] = []  # records of tasks ended in this feed
        self._layout2 = False

    def _bad(self, line: str | bytes) -> None:
        self.bad_lines += 1
        if not self.first_bad:
            if isinstance(line, bytes):
                line = line.decode("utf-8", errors="replace")
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
        if not isinstance(lines, list):
            lines = list(lines)
        if not self._layout2 and lines and lines[0].startswith(_HEADER_LINE):
            self._layout2 = True
        if self._layout2:
            self._feed_layout2(lines)
            return
        spans: list[str] = []
        others: list[str] = []
        tasks: list[str] = []
        live = self._live
        sections = _SECTIONS
        for line in lines:
            section = (
                sections.get(line[_AT_SECTION : _AT_SECTION + 4], "")
                if line.startswith(_SECTION)
                else ""
            )
            if section is _TASK:
                tasks.append(line)
            elif section is _SPAN:
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
            elif section is _HEADER:
                if self._load(line) is not None:
                    self.records += 1
            elif section is _METRIC:
                metric = self._load(line)
                if metric is not None:
                    self.records += 1
                    self.builder.add_metric_snapshot(metric)
            elif line.strip():
                self._loose(line)
        if tasks:
            self._task_lines(tasks)
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

    def _feed_layout2(self, lines: list[str]) -> None:
        """Lines of a layout 2 file: task lines merged per task as they are read.

        A finished task becomes its record at once; its fields are let go.
        """
        live = self._tasks
        find: Callable[[Any], dict[str, Any] | None] = live.get
        add = self._done.append
        # Names as locals: this loop runs once per line of the file.
        uid_key, section_key, task_section = n.TL_UID, n.SECTION, n.SECTION_TASK
        ended_key, attempt_key = n.TL_ENDED, n.TL_ATTEMPT_ENDED
        not_a_step, typed, misshaped = _NOT_A_STEP, _TYPED, _misshaped
        records = 0
        for line in lines:
            try:
                fields = loads(line)
                uid = fields[uid_key] if fields[section_key] == task_section else None
                task = find(uid)  # a TypeError for a uid that is a list or an object
            except (ValueError, RecursionError):
                fields = _NOT_JSON if line.strip() else _BLANK
                uid = None
            except (TypeError, KeyError, IndexError):
                uid = None
            if uid is None:
                self._layout2_other(fields, line)
                continue
            if task is None:
                # Only a str uid is ever kept: a task found has one.
                if type(uid) is not str or misshaped(fields):
                    self._bad(line)
                    continue
                task = live[uid] = fields
            else:
                if len(fields) == 3:
                    # One step's time (most lines of a file): that key alone.
                    # A time is an int; anything else is checked the general
                    # way, so a wrong line is skipped alone.
                    key, value = fields.popitem()
                    if key not in not_a_step and (type(value) is int or key not in typed):
                        task[key] = value
                        records += 1
                        continue
                    fields[key] = value
                if misshaped(fields):
                    self._bad(line)
                    continue
                task.update(fields)
            records += 1
            if ended_key in fields:
                del live[uid]
                try:
                    add(task_record(task))
                except (TypeError, ValueError, AttributeError):  # a field of the wrong type
                    self._bad(line)
            elif attempt_key in fields:
                attempts = task.get("attempts")
                if attempts is None:
                    attempts = task["attempts"] = []
                attempts.append((fields[attempt_key], fields.get(n.TL_ATTEMPT) or {}))
        self.records += records
        self._add_done()

    def _add_done(self) -> None:
        """Hand the builder the records of the tasks that ended, at once."""
        if self._done:
            self.builder.add_records(self._done)
            self._done.clear()

    def feed_others(self, lines: list[bytes]) -> bool:
        """The lines of a layout 2 file that the compiled scanner left (``_finished``).

        They are whole and in file order, the header first, and none is a
        line the scanner took; each is read as :meth:`feed` reads it. Returns
        False at a task line (one the scanner could not take): the file is
        then for :meth:`feed` alone.
        """
        self._layout2 = True
        task = n.SECTION_TASK
        for raw in lines:
            try:
                record = loads(raw)
            except (ValueError, RecursionError):
                # Not UTF-8 (read with replacements, as feed reads it), or no JSON.
                line = raw.decode("utf-8", errors="replace")
                try:
                    record = loads(line)
                except (ValueError, RecursionError):
                    record = _NOT_JSON if line.strip() else _BLANK
            if type(record) is dict and record.get(n.SECTION) == task:
                return False
            self._layout2_other(record, raw)
        return True

    def hold_open_tasks(self, tasks: dict[str, dict[str, Any]]) -> None:
        """Take the fields of tasks whose last line has not come (a killed run,
        read by the scanner), as :meth:`feed` would hold them for :meth:`flush`."""
        self._tasks.update(tasks)

    def _layout2_other(self, record: Any, line: str | bytes) -> None:
        """A layout 2 line that is not a task line: header, span, event, metric."""
        if record is _BLANK:
            return
        if (
            record is _NOT_JSON
            or not isinstance(record, dict)
            or n.record_problem(record) is not None
        ):
            self._bad(line)
            return
        self.records += 1
        section = record[n.SECTION]
        if section == n.SECTION_SPAN:
            attrs = record.get("attributes")
            if isinstance(attrs, dict) and attrs.get(n.LEVEL) in _TASK_LEVELS:
                self._add_done()  # a task's span after its lines: records in file order
            self.builder.add_span(record)
        elif section == n.SECTION_METRIC:
            self.builder.add_metric_snapshot(record)
        elif section == n.SECTION_EVENT:
            self._other_event(record)

    def _task_lines(self, lines: list[str]) -> None:
        """Layout 2 ``task`` lines: each adds its fields to its task; the last one ends it."""
        live = self._tasks
        add = self.builder.add_record
        for line in lines:
            try:
                fields = loads(line)
                uid = fields[n.TL_UID]
            except (ValueError, RecursionError, TypeError, KeyError):
                self._bad(line)
                continue
            if type(uid) is not str or n.record_problem(fields) is not None:
                self._bad(line)
                continue
            self.records += 1
            task = live.get(uid)
            if task is None:
                task = live[uid] = fields
            else:
                task.update(fields)
            if n.TL_ATTEMPT_ENDED in fields:
                attempts = task.get("attempts")
                if attempts is None:
                    attempts = task["attempts"] = []
                attempts.append((fields[n.TL_ATTEMPT_ENDED], fields.get(n.TL_ATTEMPT) or {}))
            if n.TL_ENDED in fields:
                del live[uid]
                try:
                    record = task_record(task)
                except (TypeError, ValueError, AttributeError):  # a field of the wrong type
                    self._bad(line)
                    continue
                add(record)

    def _live_tasks(self) -> None:
        """What the lines of tasks still running say (a live view's waiting and running bars)."""
        builder = self.builder
        for uid, task in self._tasks.items():
            get = task.get
            created = get(n.TL_CREATED)
            if not isinstance(created, int) or builder.is_finished(uid):
                continue
            cpus, gpus = get(n.TL_CPUS, 1), get(n.TL_GPUS, 0)
            builder.task_created(
                uid,
                _seconds(created),
                str(get(n.TL_BACKEND) or ""),
                str(get(n.TL_WORKFLOW_ID) or ""),
                str(get(n.TL_SPAN) or ""),
                block=get(n.TL_LEVEL) == n.LEVEL_BLOCK,
                name=str(get(n.TL_NAME) or ""),
                workflow_type=str(get(n.TL_WORKFLOW_NAME) or ""),
                cpus=_int(cpus, 1),
                gpus=_int(gpus, 0),
            )
            # As for layout 1: resolved is all a live view needs of the steps
            # before a task starts (it is queued from then on).
            resolved, started = get(n.SPAN_EVENT_RESOLVED), get(n.SPAN_EVENT_STARTED)
            if isinstance(resolved, int) and resolved:
                builder.task_step(uid, n.SPAN_EVENT_RESOLVED, _seconds(resolved))
            if isinstance(started, int) and started:
                builder.task_started(uid, _seconds(started))
            slots, assigned = get(n.TL_SLOTS), get(n.TL_ASSIGNED)
            if isinstance(assigned, int) and assigned and isinstance(slots, list):
                builder.task_assigned(uid, _seconds(assigned), slots)

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
        self._live_tasks()
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
