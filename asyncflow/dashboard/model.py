"""The normalised records of a run: what every span source yields, what every figure reads.

Pure: no I/O, no asyncio, no plotly. A source turns its input (checkpoint
lines, OTLP/JSON, Jaeger or Tempo responses) into span dicts shaped like the
checkpoint file's ``span`` records and into engine events, and feeds them to
a :class:`RunBuilder`; :meth:`RunBuilder.snapshot` returns an immutable
:class:`Run` for the figure builders.

Timestamps are seconds since the epoch (floats); figures subtract
:attr:`Run.start`, so their axes read "seconds since the session started".
"""

from __future__ import annotations

import dataclasses
import operator
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from asyncflow.errors import DependencyFailureError
from asyncflow.telemetry import names as n

__all__ = [
    "FINAL_STATES",
    "STATES",
    "STATE_CANCELED",
    "STATE_COMPLETED",
    "STATE_DEPENDENCY_FAILED",
    "STATE_FAILED",
    "STATE_PENDING",
    "STATE_QUEUED",
    "STATE_RUNNING",
    "STATE_WAITING",
    "STATUSES",
    "Attempt",
    "ResourceSample",
    "Run",
    "RunBuilder",
    "SlotSnapshot",
    "SpanRecord",
    "phases",
    "span_record",
    "status",
    "task_record",
]

STATE_PENDING = n.STATE_PENDING
STATE_RUNNING = n.STATE_RUNNING
STATE_COMPLETED = n.RESULT_COMPLETED
STATE_FAILED = n.RESULT_FAILED
STATE_CANCELED = n.RESULT_CANCELED
STATES = (STATE_PENDING, STATE_RUNNING, STATE_COMPLETED, STATE_FAILED, STATE_CANCELED)
FINAL_STATES = frozenset({STATE_COMPLETED, STATE_FAILED, STATE_CANCELED})

# What a task is doing at "now", as the views draw and count it: the
# recorded state split by the steps it reached, and failures split into root
# failures and cascades (a dependency failed, the task never ran).
STATE_WAITING = "waiting"  # for its dependencies
STATE_QUEUED = "queued"  # resolved, waiting for a slot or the backend
STATE_DEPENDENCY_FAILED = "dependency-failed"
STATUSES = (
    STATE_WAITING,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_COMPLETED,
    STATE_FAILED,
    STATE_DEPENDENCY_FAILED,
    STATE_CANCELED,
)
DEPENDENCY_FAILED_ERROR = DependencyFailureError.__name__

_EVENT_FIELDS = {
    n.SPAN_EVENT_RESOLVED: "resolved",
    n.SPAN_EVENT_QUEUED: "queued",
    n.SPAN_EVENT_SUBMITTED: "submitted",
    n.SPAN_EVENT_STARTED: "started",
}
# One string per task kind, not one per record: 100,000 copies of "function" add up.
_TASK_KINDS = {k: k for k in (n.TYPE_FUNCTION, n.TYPE_EXECUTABLE, n.TYPE_PROMPT, n.TYPE_BLOCK)}
# Span attributes the record has fields for; the task panel lists the others.
_KNOWN_ATTRIBUTES = n.SPAN_ATTRIBUTES | {
    n.PROCESS_EXIT_CODE,
    n.PROCESS_SIGNAL,
    n.PROCESS_STDERR_TAIL,
}


class Attempt(NamedTuple):
    """One attempt of a task with retries (epoch seconds; ``started`` 0 if it never ran)."""

    number: int
    started: float
    ended: float
    error_type: str = ""
    message: str = ""


class SpanRecord(NamedTuple):
    """One task, block or workflow of a run (immutable; a tuple: cheap by the 100,000).

    ``finished`` is ``None`` while it runs; ``resolved`` .. ``started`` are
    ``None`` for steps it never reached (a dependency failed, it was
    cancelled while waiting). Live tasks seen only through their events take
    ``name``, ``workflow_type``, ``cpus`` and ``gpus`` from their created line.

    ``workflow_id`` is, for a task, the workflow id or innermost block uid it
    was registered under; for a block, its own uid once its span arrived
    (before, what it was called under). ``scope`` is, for a block, the id it
    was called under (a workflow id or an outer block's uid, from its
    created line; empty at top level or when unknown): with ``parent_id`` it
    places the block inside its workflow instance.
    """

    uid: str
    level: str
    name: str = ""
    workflow_id: str = ""
    workflow_type: str = ""
    backend: str = ""
    state: str = STATE_PENDING
    created: float = 0.0
    resolved: float | None = None
    queued: float | None = None
    submitted: float | None = None
    started: float | None = None
    finished: float | None = None
    slots: tuple[str, ...] = ()
    cpus: int = 1
    gpus: int = 0
    error_type: str = ""
    message: str = ""
    depends_on: tuple[str, ...] = ()
    span_id: str = ""
    parent_id: str = ""
    scope: str = ""
    cache: str = ""  # names.CACHE_HIT or CACHE_MISS for a cached task
    cache_source: str = ""  # a hit: "<session> <task uid>" that stored the result
    attempts: tuple[Attempt, ...] = ()  # a task with retries: one per attempt
    kind: str = ""  # function, executable, prompt
    failure: str = ""  # a failed task's traceback, or its exit status and stderr tail
    extra: tuple[tuple[str, str], ...] = ()  # other span attributes (enrichers)

    def slot_count(self, kind: str) -> int:
        """Slots of ``kind`` it holds: assigned ones when known, else what it asked for."""
        if self.slots:
            prefix = kind + ":"
            return sum(1 for s in self.slots if s.startswith(prefix))
        if kind == n.KIND_GPU:
            return self.gpus
        if kind == n.KIND_CPU:
            return self.cpus
        return 0


def status(task: SpanRecord) -> str:
    """What ``task`` is doing at "now" (one of :data:`STATUSES`).

    An unfinished task is waiting for its dependencies until it is resolved,
    then queued until it starts, then running; a failed task whose
    dependency failed is a cascade, not a root failure.
    """
    state = task.state
    if state == STATE_FAILED:
        return STATE_DEPENDENCY_FAILED if task.error_type == DEPENDENCY_FAILED_ERROR else state
    if state in FINAL_STATES:
        return state
    if task.started is not None:
        return STATE_RUNNING
    if task.resolved is not None or task.queued is not None or task.submitted is not None:
        return STATE_QUEUED
    return STATE_WAITING


def phases(task: SpanRecord) -> dict[str, float | None]:
    """The phases of :data:`asyncflow.telemetry.names.PHASES` of ``task``, in seconds.

    ``None`` for a phase whose steps it has not both reached.
    """
    steps = {
        n.STEP_CREATED: task.created,
        n.STEP_RESOLVED: task.resolved,
        n.STEP_SUBMITTED: task.submitted,
        n.STEP_STARTED: task.started,
        n.STEP_ENDED: task.finished,
    }
    return {phase: n.phase_seconds(phase, steps) for phase in n.PHASES}


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceSample:
    """A node utilisation sample (percent), from a ``ResourceUpdate`` event."""

    time: float
    node: str
    cpu: float | None
    memory: float | None
    gpu: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class SlotSnapshot:
    """Busy and idle slots of one backend and resource kind at one time."""

    time: float
    backend: str
    kind: str
    busy: int
    idle: int


@dataclasses.dataclass(frozen=True)
class Run:
    """An immutable view of a run for the figure builders.

    Attributes:
        source: where it came from, for titles and messages.
        tasks, blocks, workflows: the records, in the order first seen.
        samples: node utilisation samples.
        slot_snapshots: recorded slot occupancy (gives the capacities).
        start: the session start (epoch seconds); time axes count from it.
        end: the latest time seen (running bars reach up to it).
        ended: the session has ended (nothing more will arrive).
        stopped: the session did not end but its writer is gone (the run
            was killed): what still shows as running or pending never ended.
        priorities: workflow type -> priority, from campaign events.
        problems: what a reader should know about the input (skipped lines).
        version: grows with every change; equal versions hold equal data.
    """

    source: str = ""
    tasks: tuple[SpanRecord, ...] = ()
    blocks: tuple[SpanRecord, ...] = ()
    workflows: tuple[SpanRecord, ...] = ()
    samples: tuple[ResourceSample, ...] = ()
    slot_snapshots: tuple[SlotSnapshot, ...] = ()
    start: float = 0.0
    end: float = 0.0
    ended: bool = False
    stopped: bool = False
    priorities: Mapping[str, int] = dataclasses.field(default_factory=dict)
    problems: tuple[str, ...] = ()
    version: int = 0

    def rel(self, t: float) -> float:
        """``t`` as seconds since the session started."""
        return t - self.start


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
    return SpanRecord(
        uid=str(uid or span.get("span_id") or ""),
        level=level,
        name=str(name),
        workflow_id=str(get(n.WORKFLOW_ID) or ""),
        workflow_type=str(get(n.WORKFLOW_NAME) or ""),
        backend=str(get(n.BACKEND) or ""),
        state=str(result),
        created=_int(span.get("start_ns"), 0) / 1e9,
        finished=_int(span.get("end_ns"), 0) / 1e9,
        slots=_strings(get(n.TASK_SLOTS)),
        cpus=cpus if type(cpus) is int else _int(cpus, 1),
        gpus=gpus if type(gpus) is int else _int(gpus, 0),
        error_type=str(get(n.ERROR_TYPE) or ""),
        message=str(span.get("status_description") or ""),
        depends_on=_strings(get(n.TASK_DEPENDS_ON)),
        span_id=str(span.get("span_id") or ""),
        parent_id=str(span.get("parent_span_id") or ""),
        scope=str(get(n.BLOCK_SCOPE) or "") if level == n.LEVEL_BLOCK else "",
        resolved=steps.get("resolved"),
        queued=steps.get("queued"),
        submitted=steps.get("submitted"),
        started=steps.get("started"),
        cache=str(get(n.TASK_CACHE) or ""),
        cache_source=_cache_source(attrs),
        attempts=tuple(sorted(attempts)) if attempts else (),
        kind=_TASK_KINDS.get(str(get(n.TASK_TYPE) or ""), ""),
        failure=failure,
        extra=tuple(sorted((k, _text(attrs[k])) for k in others)) if others else (),
    )


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


_EVERY_STEP = operator.itemgetter(
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
    )


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


_UID = operator.itemgetter(SpanRecord._fields.index("uid"))
_CREATED = operator.itemgetter(SpanRecord._fields.index("created"))
_FINISHED_AT = operator.itemgetter(SpanRecord._fields.index("finished"))
_LEVEL_OF = operator.itemgetter(SpanRecord._fields.index("level"))


class RunBuilder:
    """Accumulates spans, events and metric snapshots into a run. Not thread-safe.

    Args:
        source: a label for the run (file name, URL).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._tasks: dict[str, SpanRecord] = {}
        self._blocks: dict[str, SpanRecord] = {}
        self._workflows: dict[str, SpanRecord] = {}
        self._finished: set[str] = set()
        self._samples: list[ResourceSample] = []
        self._snapshots: list[SlotSnapshot] = []
        self._priorities: dict[str, int] = {}
        self._problems: dict[str, str] = {}
        self._start: float | None = None
        self._first = float("inf")
        self._last = 0.0
        self._ended = False
        self._writer_gone = False
        self.version = 0

    # ------------------------------------------------------------------ facts
    def is_finished(self, uid: str) -> bool:
        """The span of task or block ``uid`` has arrived."""
        return uid in self._finished

    def _seen(self, t: float) -> None:
        if t:
            self._first = min(self._first, t)
            self._last = max(self._last, t)

    # ------------------------------------------------------------------ input
    def add_span(self, span: Mapping[str, Any]) -> None:
        """Take a finished span (a checkpoint-shaped dict)."""
        attrs = span.get("attributes") or {}
        if attrs.get(n.LEVEL) == n.LEVEL_SESSION:
            end_ns = _int(span.get("end_ns"), 0)
            self.session_bounds(
                _int(span.get("start_ns"), 0) / 1e9, end_ns / 1e9 if end_ns else None
            )
            return
        record = span_record(span)
        if record is not None:
            self.add_record(record)

    def add_record(self, record: SpanRecord) -> None:
        """Take the record of a finished task, block or workflow."""
        self.version += 1
        if record.created < self._first:
            self._first = record.created
        if record.finished is not None and record.finished > self._last:
            self._last = record.finished
        if record.level == n.LEVEL_WORKFLOW:
            self._workflows[record.uid] = record
            return
        table = self._tasks if record.level == n.LEVEL_TASK else self._blocks
        live = table.get(record.uid)
        if live is not None and not record.slots and live.slots:
            record = record._replace(slots=live.slots)
        if live is not None and live.scope and not record.scope:
            record = record._replace(scope=live.scope)
        table[record.uid] = record
        self._finished.add(record.uid)

    def add_records(self, records: Sequence[SpanRecord]) -> None:
        """Take many records (as :meth:`add_record` on each, in order; times are never NaN).

        Tasks seen for the first time (the bulk of a large file) are taken
        by whole-list operations; blocks and workflows are kept apart from
        tasks, so only the order within each kind matters.
        """
        tasks = records
        if operator.countOf(map(_LEVEL_OF, records), n.LEVEL_TASK) < len(records):
            tasks = [r for r in records if r.level == n.LEVEL_TASK]
            for record in records:
                if record.level != n.LEVEL_TASK:
                    self.add_record(record)
        if not tasks:
            return
        new = dict(zip(map(_UID, tasks), tasks, strict=True))
        table = self._tasks
        if len(new) < len(tasks) or not table.keys().isdisjoint(new):
            # A uid seen before (its live record, or recorded twice) keeps
            # what only the earlier record knew: one at a time.
            for record in tasks:
                self.add_record(record)
            return
        self.version += len(tasks)
        first = min(map(_CREATED, tasks))
        if first < self._first:
            self._first = first
        ends = list(map(_FINISHED_AT, tasks))
        if None in ends:  # tasks still running
            ends = [t for t in ends if t is not None]
        if ends and max(ends) > self._last:
            self._last = max(ends)
        table.update(new)
        self._finished.update(new)

    def session_bounds(self, start: float, end: float | None = None) -> None:
        """The session's start (the zero of every time axis) and, once it ended, its end."""
        if start:
            self._start = start if self._start is None else min(self._start, start)
        if end:
            self._ended = True
            self._seen(end)
        self.version += 1

    def task_created(
        self,
        uid: str,
        t: float,
        backend: str,
        workflow_id: str,
        span_id: str,
        block: bool,
        *,
        name: str = "",
        workflow_type: str = "",
        cpus: int = 1,
        gpus: int = 0,
    ) -> None:
        """A task or block was registered (its span comes when it ends).

        ``name``, ``workflow_type``, ``cpus`` and ``gpus`` come from the created
        line when the writer recorded them (runs written before they did leave
        them empty until the span arrives).
        """
        if uid in self._finished:
            return
        table = self._blocks if block else self._tasks
        if uid not in table:
            level = n.LEVEL_BLOCK if block else n.LEVEL_TASK
            table[uid] = SpanRecord(
                uid=uid,
                level=level,
                name=name,
                workflow_id=workflow_id,
                workflow_type=workflow_type or self._type_of(workflow_id),
                backend=backend,
                created=t,
                span_id=span_id,
                cpus=cpus,
                gpus=gpus,
                scope=workflow_id if block else "",
            )
            self._seen(t)
            self.version += 1

    def block_scope(self, uid: str, scope: str) -> None:
        """Block ``uid`` was called under ``scope`` (its created line, read after its span)."""
        record = self._blocks.get(uid)
        if record is not None and scope and record.scope != scope:
            self._blocks[uid] = record._replace(scope=scope)
            self.version += 1

    def _type_of(self, workflow_id: str) -> str:
        wf = self._workflows.get(workflow_id)
        return wf.workflow_type if wf is not None else ""

    def task_started(self, uid: str, t: float) -> None:
        """A task or block started running."""
        self._update(uid, t, started=t, state=STATE_RUNNING)

    def task_step(self, uid: str, step: str, t: float) -> None:
        """A task or block reached ``step`` (a span event name: resolved, queued, submitted)."""
        field = _EVENT_FIELDS.get(step)
        if field is not None:
            self._update(uid, t, **{field: t})

    def task_assigned(self, uid: str, t: float, slots: Iterable[str]) -> None:
        """A resource-aware backend gave a task its slots."""
        self._update(uid, t, slots=tuple(str(s) for s in slots))

    def _update(self, uid: str, t: float, **changes: Any) -> None:
        if uid in self._finished:
            return
        for table in (self._tasks, self._blocks):
            record = table.get(uid)
            if record is not None:
                table[uid] = record._replace(**changes)
                self._seen(t)
                self.version += 1
                return

    def add_sample(self, sample: ResourceSample) -> None:
        """A node utilisation sample."""
        self._samples.append(sample)
        self._seen(sample.time)
        self.version += 1

    def add_metric_snapshot(self, record: Mapping[str, Any]) -> None:
        """A checkpoint ``metric`` line: its slot occupancy gives the capacities."""
        t = record.get("time_s")
        t = float(t) if isinstance(t, (int, float)) else self._last
        slots = record.get("resource_slots") or {}
        pairs: dict[tuple[str, str], dict[str, int]] = {}
        for key, value in slots.items() if isinstance(slots, Mapping) else ():
            backend, _, rest = str(key).rpartition("/")
            backend, _, kind = backend.rpartition("/")
            if rest in (n.SLOT_BUSY, n.SLOT_IDLE) and kind:
                pairs.setdefault((backend, kind), {})[rest] = _int(value, 0)
        for (backend, kind), states in pairs.items():
            self._snapshots.append(
                SlotSnapshot(
                    t, backend, kind, states.get(n.SLOT_BUSY, 0), states.get(n.SLOT_IDLE, 0)
                )
            )
        self.version += 1

    def set_priority(self, workflow_type: str, priority: int) -> None:
        """The priority a campaign gave a workflow type."""
        if self._priorities.get(workflow_type) != priority:
            self._priorities[workflow_type] = priority
            self.version += 1

    def session_ended(self, t: float) -> None:
        """The session ended: nothing more will arrive."""
        self._ended = True
        self._seen(t)
        self.version += 1

    def writer_gone(self, gone: bool) -> None:
        """Whether the process writing the run is gone (checked by the source)."""
        if gone != self._writer_gone:
            self._writer_gone = gone
            self.version += 1

    def problem(self, key: str, message: str) -> None:
        """Record (or replace) a message about the input, under ``key``."""
        if self._problems.get(key) != message:
            self._problems[key] = message
            self.version += 1

    def clear_problem(self, key: str) -> None:
        """Forget the message under ``key``."""
        if self._problems.pop(key, None) is not None:
            self.version += 1

    # ------------------------------------------------------------------ output
    def snapshot(self) -> Run:
        """The run as it stands."""
        workflows = self._workflows
        tasks = tuple(self._tasks.values())
        if any(not t.workflow_type and t.workflow_id in workflows for t in tasks):
            tasks = tuple(
                t._replace(workflow_type=workflows[t.workflow_id].workflow_type)
                if not t.workflow_type and t.workflow_id in workflows
                else t
                for t in tasks
            )
        first = self._first if self._first != float("inf") else 0.0
        start = self._start if self._start is not None else first
        return Run(
            source=self.source,
            tasks=tasks,
            blocks=tuple(self._blocks.values()),
            workflows=tuple(workflows.values()),
            samples=tuple(self._samples),
            slot_snapshots=tuple(self._snapshots),
            start=start,
            end=max(self._last, start),
            ended=self._ended,
            stopped=self._writer_gone and not self._ended,
            priorities=dict(self._priorities),
            problems=tuple(self._problems.values()),
            version=self.version,
        )
