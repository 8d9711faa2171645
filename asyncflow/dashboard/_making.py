"""Span dicts and checkpoint task fields into :class:`~asyncflow.dashboard.model.SpanRecord`.

Pure: no I/O, no asyncio, no plotly. Imported through
:mod:`asyncflow.dashboard.model`, which re-exports :func:`span_record` and
:func:`task_record`.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Mapping
from typing import Any

from asyncflow.telemetry import names as n

from .model import (
    _EVENT_FIELDS,
    _KNOWN_ATTRIBUTES,
    _TASK_KINDS,
    FINAL_STATES,
    STATE_COMPLETED,
    STATE_FAILED,
    Attempt,
    SpanRecord,
)

__all__ = ["span_record", "task_record"]


_LEVELS = frozenset({n.LEVEL_TASK, n.LEVEL_BLOCK, n.LEVEL_WORKFLOW})


def _int(value: Any, default: int) -> int:
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


_join = "".join


def _strings(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if type(value) is list:
        try:
            _join(value)  # a TypeError unless every item is a str: a fifth of str() on each
            return tuple(value)
        except TypeError:
            return tuple(map(str, value))
    if isinstance(value, (list, tuple)):
        return tuple(map(str, value))
    if isinstance(value, str) and value:
        return (value,)
    return ()


def span_record(span: Mapping[str, Any]) -> SpanRecord | None:
    """The record of a span dict shaped like a checkpoint ``span`` line.

    Returns ``None`` for spans that are not tasks, blocks or workflows
    (the session span, user spans).
    """
    attrs = span.get("attributes") or {}
    get = attrs.get
    level = get(n.LEVEL)
    if level not in _LEVELS:
        return None
    steps: dict[str, float] = {}
    attempts: list[Attempt] = []
    failure = ""
    for event in span.get("events") or ():
        name = event.get("name", "")
        if name == n.SPAN_EVENT_ATTEMPT:
            attempts.append(_attempt(event))
            continue
        field = _EVENT_FIELDS.get(name)
        if field is not None and field not in steps:
            steps[field] = _int(event.get("time_ns"), 0) / 1e9
        elif name == n.SPAN_EVENT_EXCEPTION:
            failure = _exception_text(event.get("attributes"))
    if level == n.LEVEL_TASK:
        uid = get(n.TASK_UID)
        result = get(n.TASK_RESULT)
    elif level == n.LEVEL_BLOCK:
        uid = get(n.BLOCK_UID) or get(n.WORKFLOW_ID)
        result = get(n.TASK_RESULT)
    else:
        uid = get(n.WORKFLOW_ID)
        result = get(n.WORKFLOW_RESULT)
    if result not in FINAL_STATES:
        result = STATE_FAILED if span.get("status_code") == n.STATUS_ERROR else STATE_COMPLETED
    name = get(n.TASK_NAME)
    if not name:
        name = str(span.get("name") or "")
        name = name[len(level) + 1 :] if name.startswith(level + " ") else name
    cpus, gpus = get(n.TASK_CPUS, 1), get(n.TASK_GPUS, 0)
    if result == STATE_FAILED:
        failure = _process_text(attrs) + failure
    # A subset test allocates nothing: most spans have no other attribute.
    others = () if attrs.keys() <= _KNOWN_ATTRIBUTES else attrs.keys() - _KNOWN_ATTRIBUTES
    # Positional, in field order: a named tuple's keyword call costs as much
    # as the rest of this function (10,000 workflow spans in a large file).
    record: SpanRecord = _new_tuple(
        SpanRecord,
        (
            str(uid or span.get("span_id") or ""),
            level,
            str(name),
            str(get(n.WORKFLOW_ID) or ""),
            str(get(n.WORKFLOW_NAME) or ""),
            str(get(n.BACKEND) or ""),
            str(result),
            _int(span.get("start_ns"), 0) / 1e9,
            steps.get("resolved"),
            steps.get("queued"),
            steps.get("submitted"),
            steps.get("started"),
            _int(span.get("end_ns"), 0) / 1e9,
            _strings(get(n.TASK_SLOTS)),
            cpus if type(cpus) is int else _int(cpus, 1),
            gpus if type(gpus) is int else _int(gpus, 0),
            str(get(n.ERROR_TYPE) or ""),
            str(span.get("status_description") or ""),
            _strings(get(n.TASK_DEPENDS_ON)),
            str(span.get("span_id") or ""),
            str(span.get("parent_span_id") or ""),
            str(get(n.BLOCK_SCOPE) or "") if level == n.LEVEL_BLOCK else "",
            str(get(n.TASK_CACHE) or ""),
            _cache_source(attrs),
            tuple(sorted(attempts)) if attempts else (),
            _TASK_KINDS.get(str(get(n.TASK_TYPE) or ""), ""),
            failure,
            tuple(sorted((k, _text(attrs[k])) for k in others)) if others else (),
        ),
    )
    return record


def task_record(task: Mapping[str, Any]) -> SpanRecord:
    """The record of a finished task or block from its layout 2 ``task`` lines.

    ``task`` is the union of the fields of its lines (docs/telemetry.md),
    with its attempts' ``(time_ns, attributes)`` under ``"attempts"``. The
    record is the one :func:`span_record` makes of the layout 1 span.

    Raises:
        TypeError, ValueError, AttributeError: a field of the wrong type.
    """
    try:
        # A task that went through every step has all of these: one C call.
        (
            uid,
            created,
            span,
            parent,
            backend,
            workflow_id,
            name,
            workflow_name,
            level,
            kind,
            cpus,
            gpus,
            resolved,
            queued,
            submitted,
            started,
            end,
            result,
        ) = _EVERY_STEP(task)
        name, workflow_id = _intern(name), _intern(workflow_id)
        workflow_name, backend = _intern(workflow_name), _intern(backend)
        state = _KNOWN_RESULTS[result]
    except (KeyError, TypeError):
        # A step missing, an unknown result, a name that is no string: the
        # general way decides.
        return _any_task_record(task)
    if level != n.LEVEL_TASK or type(uid) is not str or type(span) is not str:
        return _any_task_record(task)
    if type(parent) is not str:
        return _any_task_record(task)
    get = task.get
    slots = get(n.TL_SLOTS)
    depends_on = get(n.TL_DEPENDS_ON)
    error_type = get(n.TL_ERROR_TYPE, "")
    message = get(n.TL_DESCRIPTION, "")
    # The tuple itself: a named tuple's keyword constructor is a Python call
    # of its own, a third of this function's time. A time of the wrong type
    # raises here, as it does the general way.
    record: SpanRecord = _new_tuple(
        SpanRecord,
        (
            uid,
            n.LEVEL_TASK,
            name,
            workflow_id,
            workflow_name,
            backend,
            state,
            created / 1e9,
            resolved / 1e9,
            queued / 1e9,
            submitted / 1e9,
            started / 1e9,
            end / 1e9,
            _strings(slots) if slots else (),
            cpus if type(cpus) is int else _int(cpus, 1),
            gpus if type(gpus) is int else _int(gpus, 0),
            error_type if type(error_type) is str else str(error_type),
            message if type(message) is str else str(message),
            _strings(depends_on) if depends_on else (),
            span,
            parent,
            "",
            "",
            "",
            (),
            _TASK_KINDS.get(kind if type(kind) is str else str(kind), ""),
            "",
            (),
        ),
    )
    extra = get(n.TL_ATTRIBUTES)
    if extra or result == STATE_FAILED or n.TL_ATTEMPT_ENDED in task:
        record = _task_details(task, record, extra if isinstance(extra, Mapping) else {})
    return record


# The fields of a task that went through every step (task_record's plain way).
EVERY_STEP_FIELDS = (
    n.TL_UID,
    n.TL_CREATED,
    n.TL_SPAN,
    n.TL_PARENT,
    n.TL_BACKEND,
    n.TL_WORKFLOW_ID,
    n.TL_NAME,
    n.TL_WORKFLOW_NAME,
    n.TL_LEVEL,
    n.TL_TYPE,
    n.TL_CPUS,
    n.TL_GPUS,
    *n.TL_STEPS,
    n.TL_ENDED,
    n.TL_RESULT,
)
_EVERY_STEP = operator.itemgetter(*EVERY_STEP_FIELDS)
_new_tuple: Any = tuple.__new__
# Names, workflow ids and backends repeat from task to task: one string each
# (a million tasks would otherwise hold four million copies). An interned
# string lives as long as a record holds it. Raises TypeError for a non-str.
_intern = sys.intern


def _any_task_record(task: Mapping[str, Any]) -> SpanRecord:
    """:func:`task_record` of any task or block: fields may be missing or odd."""
    get = task.get
    end = task[n.TL_ENDED]
    created = get(n.TL_CREATED) or end
    resolved = get(n.SPAN_EVENT_RESOLVED)
    queued = get(n.SPAN_EVENT_QUEUED)
    submitted = get(n.SPAN_EVENT_SUBMITTED)
    started = get(n.SPAN_EVENT_STARTED)
    result = get(n.TL_RESULT)
    if result not in FINAL_STATES:
        result = STATE_FAILED if get(n.TL_STATUS) == n.STATUS_ERROR else STATE_COMPLETED
    slots = get(n.TL_SLOTS)
    depends_on = get(n.TL_DEPENDS_ON)
    record = SpanRecord(
        str(task[n.TL_UID]),
        n.LEVEL_TASK,
        _shared(get(n.TL_NAME, "")),
        _shared(get(n.TL_WORKFLOW_ID) or ""),
        _shared(get(n.TL_WORKFLOW_NAME, "")),
        _shared(get(n.TL_BACKEND) or ""),
        _KNOWN_RESULTS[result],
        created / 1e9,
        resolved / 1e9 if resolved else None,
        queued / 1e9 if queued else None,
        submitted / 1e9 if submitted else None,
        started / 1e9 if started else None,
        end / 1e9,
        _strings(slots) if slots else (),
        _int(get(n.TL_CPUS, 1), 1),
        _int(get(n.TL_GPUS, 0), 0),
        str(get(n.TL_ERROR_TYPE, "")),
        str(get(n.TL_DESCRIPTION, "")),
        _strings(depends_on) if depends_on else (),
        str(get(n.TL_SPAN, "")),
        str(get(n.TL_PARENT) or ""),
        "",
        "",
        "",
        (),
        _TASK_KINDS.get(str(get(n.TL_TYPE, "")), ""),
    )
    extra = get(n.TL_ATTRIBUTES)
    attempts = get("attempts")
    if extra or attempts or result == STATE_FAILED or get(n.TL_LEVEL) == n.LEVEL_BLOCK:
        record = _task_details(task, record, extra if isinstance(extra, Mapping) else {})
    return record


# One string per result, not one per record.
_KNOWN_RESULTS = {r: r for r in FINAL_STATES}

# Names, workflow ids and backends repeat from task to task: one string each
# (a million tasks would otherwise hold four million copies). Bounded.
_SHARED: dict[str, str] = {}
_SHARED_LIMIT = 200_000


def _shared(value: Any) -> str:
    text = str(value)
    found = _SHARED.get(text)
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()
        found = _SHARED[text] = text
    return found


def _task_details(
    task: Mapping[str, Any], record: SpanRecord, extra: Mapping[str, Any]
) -> SpanRecord:
    """The rarer parts of a task's record: a block, its extra attributes, attempts, a failure."""
    changes: dict[str, Any] = {}
    if task.get(n.TL_LEVEL) == n.LEVEL_BLOCK:
        # A block's span has no task attributes: its own uid is its workflow id.
        changes.update(
            level=n.LEVEL_BLOCK,
            workflow_id=record.uid,
            backend="",
            cpus=1,
            gpus=0,
            kind="",
            scope=record.workflow_id,
        )
    if extra:
        changes["cache"] = str(extra.get(n.TASK_CACHE) or "")
        changes["cache_source"] = _cache_source(extra)
        others = extra.keys() - _KNOWN_ATTRIBUTES
        if others:
            changes["extra"] = tuple(sorted((k, _text(extra[k])) for k in others))
    attempts = task.get("attempts")
    if attempts:
        changes["attempts"] = tuple(
            sorted(_attempt({"time_ns": t, "attributes": a}) for t, a in attempts)
        )
    if record.state == STATE_FAILED:
        changes["failure"] = _process_text(extra) + _exception_text(task.get(n.TL_EXCEPTION))
    return record._replace(**changes)


def _cache_source(attrs: Mapping[str, Any]) -> str:
    """``"<session> <task uid>"`` that stored a cache hit's result (``""`` for others)."""
    session, task = attrs.get(n.CACHE_SOURCE_SESSION), attrs.get(n.CACHE_SOURCE_TASK)
    if not session and not task:
        return ""
    return " ".join(str(v) for v in (session, task) if v)


def _attempt(event: Mapping[str, Any]) -> Attempt:
    attrs = event.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        attrs = {}
    return Attempt(
        number=_int(attrs.get(n.ATTEMPT_NUMBER), 0),
        started=_int(attrs.get(n.ATTEMPT_STARTED), 0) / 1e9,
        ended=_int(event.get("time_ns"), 0) / 1e9,
        error_type=str(attrs.get(n.ERROR_TYPE) or ""),
        message=str(attrs.get(n.ATTEMPT_ERROR) or ""),
        slots=_attempt_slots(attrs.get(n.ATTEMPT_SLOTS)),
    )


def _attempt_slots(value: Any) -> tuple[str, ...]:
    """An attempt's recorded slots: a list of names (anything else: none)."""
    if isinstance(value, (list, tuple)):
        return tuple(str(s) for s in value)
    return ()


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _exception_text(attrs: Any) -> str:
    """A span's ``exception`` event as text: its stack trace, else type and message."""
    if not isinstance(attrs, Mapping):
        return ""
    trace = attrs.get(n.EXCEPTION_STACKTRACE)
    if trace:
        return str(trace)
    kind, message = attrs.get(n.EXCEPTION_TYPE) or "", attrs.get(n.EXCEPTION_MESSAGE) or ""
    return f"{kind}: {message}" if kind and message else str(kind or message)


def _process_text(attrs: Mapping[str, Any]) -> str:
    """A failed executable's exit status and stderr tail as text (``""`` for others)."""
    lines = []
    if attrs.get(n.PROCESS_EXIT_CODE) is not None:
        lines.append(f"exit code {attrs[n.PROCESS_EXIT_CODE]}")
    if attrs.get(n.PROCESS_SIGNAL):
        lines.append(f"killed by signal {attrs[n.PROCESS_SIGNAL]}")
    tail = attrs.get(n.PROCESS_STDERR_TAIL)
    if tail:
        lines.append(f"stderr (last {n.STDERR_TAIL_BYTES} bytes at most):\n{tail}")
    return "\n".join(lines) + ("\n" if lines else "")
