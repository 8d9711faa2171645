"""The layout of the records the recorder sends to the checkpoint writer.

The recorder (on the engine's loop) ships each transition as a small plain
tuple, which ``marshal`` carries to the writer process; the renderer there
turns it into checkpoint lines. The tuples' field order is declared here,
once, as ``NamedTuple`` classes: the renderer reads records through them
(``Created._make(record)``) and a unit test holds the recorder to them.

The recorder builds plain tuple literals in this order rather than these
classes: a ``NamedTuple`` costs over ten times a literal to build and
``marshal`` cannot carry it, and four records per task are on the hot path.
The first field of every record is its kind.

What every task of one kind shares (its name, type, backend, workflow type,
CPUs and GPUs) travels once, in a ``Shape`` record, before the first
record that names it by number; a task that completes without anything to
say beyond its end time ends with a short ``Completed`` (or ``Instant``)
record, which with OTLP on also carries its ``TaskSpan`` fields. These
common records travel packed (their integers in one bytes field, see
``CREATED_PACKED``), and the tasks handed to a backend at once share
``SUBMITTED_ALL`` records, four to a record. So a no-op task with nothing
to wait for sends a packed ``CreatedReady``, a packed ``Instant`` and its
uid in a ``SUBMITTED_ALL``: about 11 marshalled fields with OTLP on, 10
without (28 and 23 as plain tuples, 54 and 41 in seven records before).
"""

from __future__ import annotations

import struct
from typing import Any, Final, NamedTuple

__all__ = [
    "ASSIGNED",
    "ATTEMPT",
    "COMPLETED",
    "COMPLETED_PACKED",
    "CREATED",
    "CREATED_INTS",
    "CREATED_PACKED",
    "CREATED_READY",
    "CREATED_READY_PACKED",
    "ENDED_INTS",
    "ENDED_SPAN_INTS",
    "FINISHED",
    "ID_ASSIGNED",
    "ID_CREATED",
    "ID_FINAL",
    "ID_QUEUED",
    "ID_RESOLVED",
    "ID_STARTED",
    "ID_SUBMITTED",
    "INSTANT",
    "INSTANT_PACKED",
    "INSTANT_READY_PACKED",
    "LINE",
    "METRICS_REQUEST",
    "NOTE",
    "PACKED",
    "READY",
    "READY_ENDED_INTS",
    "READY_ENDED_SPAN_INTS",
    "SHAPE",
    "SPAN",
    "STARTED",
    "STEP",
    "SUBMITTED_ALL",
    "SUBMITTED_PER_RECORD",
    "TASK_SPAN",
    "Assigned",
    "Attempt",
    "Completed",
    "Created",
    "Finished",
    "Line",
    "Note",
    "Ready",
    "Shape",
    "Span",
    "SpanFields",
    "Started",
    "Step",
    "TaskSpan",
    "expand",
]

# Record kinds: the first field of every record.
LINE: Final = "L"
CREATED: Final = "C"
ASSIGNED: Final = "A"
STEP: Final = "E"
STARTED: Final = "S"
FINISHED: Final = "F"
SPAN: Final = "P"
ATTEMPT: Final = "T"
NOTE: Final = "N"
TASK_SPAN: Final = "O"
SHAPE: Final = "K"
READY: Final = "R"
# A Completed record for a task that started as it ended (a backend that
# reports no RUNNING, such as the dry run): it also writes the started line.
INSTANT: Final = "I"
COMPLETED: Final = "D"
# A Created record for a task resolved and queued as it was created (nothing
# to wait for): it also writes the resolved and queued lines, at its time.
CREATED_READY: Final = "Q"

# The packed forms of the records every task sends. ``marshal`` writes a
# 64-bit integer (a time in ns, a span id) digit by digit, at about 50 ns
# each, and a task's records hold eight to eleven of them: the recorder packs
# a record's integers into one bytes field with ``struct`` instead (one
# call, one copy), and :func:`expand` turns the record back into its plain
# form above before anything reads it. A parent span id of 0 is none.
#   Created, CreatedReady: (kind, uid, workflow_id, CREATED_INTS)
#   Completed, Instant: (kind, uid, depends_on, ENDED_INTS), or with the
#   TaskSpan's fields (kind, uid, depends_on, workflow_id, ENDED_SPAN_INTS)
CREATED_PACKED: Final = "c"
CREATED_READY_PACKED: Final = "q"
COMPLETED_PACKED: Final = "d"
INSTANT_PACKED: Final = "i"
# id_base, t_ns, shape, span_id, parent_id
CREATED_INTS: Final = struct.Struct("<qqIQQ")
# end_ns, t_resolved, t_queued, t_submitted, t_started
ENDED_INTS: Final = struct.Struct("<qqqqq")
# the same, then the TaskSpan's span_id, parent_id, start_ns, shape
ENDED_SPAN_INTS: Final = struct.Struct("<qqqqqQQqI")
# An Instant record of a task that was also ready as it was created (a dry
# run's task without dependencies): its resolved and queued times are its
# start and its started time is its end, so they are left out.
#   (kind, uid, depends_on, READY_ENDED_INTS), or with the TaskSpan's fields
#   (kind, uid, depends_on, workflow_id, READY_ENDED_SPAN_INTS)
INSTANT_READY_PACKED: Final = "j"
# end_ns, t_submitted, start_ns
READY_ENDED_INTS: Final = struct.Struct("<qqq")
# the same, then the TaskSpan's span_id, parent_id, shape
READY_ENDED_SPAN_INTS: Final = struct.Struct("<qqqQQI")
# The tasks one ``submit_tasks`` call handed over, at one time: a submitted
# Step each, (kind, t_ns, uids). The renderer writes their lines; OTLP reads
# the time from the task's end record.
SUBMITTED_ALL: Final = "B"
# The most uids one SUBMITTED_ALL record carries (a larger batch sends
# several). Frames in the spill hold a fixed number of records and the
# telemetry process renders a frame at once: one record for a batch of
# 100,000 tasks took it from 38 to 64 MB, four uids a record keep a frame
# within the lines of four thousand CreatedReady records.
SUBMITTED_PER_RECORD: Final = 4
# An encoded OTLP ``ExportMetricsServiceRequest``, (kind, bytes): the
# telemetry process sends it to the collector; no line in the file.
METRICS_REQUEST: Final = "M"

# The packed kinds and the plain kind each expands to.
PACKED: Final = {
    CREATED_PACKED: CREATED,
    CREATED_READY_PACKED: CREATED_READY,
    COMPLETED_PACKED: COMPLETED,
    INSTANT_PACKED: INSTANT,
    INSTANT_READY_PACKED: INSTANT,
}

# A task's event ids are a block of 8 (``id_base`` is a multiple of 8): its
# events are ``id_base`` plus these offsets.
ID_CREATED, ID_RESOLVED, ID_QUEUED, ID_SUBMITTED, ID_STARTED, ID_FINAL, ID_ASSIGNED = range(7)


class Line(NamedTuple):
    """A line already rendered (session and user events, metric snapshots)."""

    kind: str
    text: str


class Note(NamedTuple):
    """A user event, for the session span's events in OTLP (its line is a ``Line``)."""

    kind: str
    name: str
    t_ns: int
    attributes: dict[str, Any]


class Shape(NamedTuple):
    """What every task (or block) of one kind shares, numbered: sent once,
    before the first ``Created`` or ``TaskSpan`` that names it."""

    kind: str
    shape: int
    level: str
    name: str
    task_kind: str
    backend: str
    workflow_name: str
    cpus: int
    gpus: int


class Created(NamedTuple):
    """A task or block was created: its ``TaskCreated`` line."""

    kind: str
    uid: str
    id_base: int
    t_ns: int
    shape: int  # its Shape
    workflow_id: str | None
    span_id: int
    parent_id: int | None


class Assigned(NamedTuple):
    """A backend assigned the task its slots (``asyncflow.ResourceAssigned``)."""

    kind: str
    uid: str
    t_ns: int
    fields: dict[str, Any]  # slots, cpus, gpus


class Attempt(NamedTuple):
    """One attempt of a task with retries ended: a span event of its span."""

    kind: str
    uid: str
    t_ns: int
    attributes: dict[str, Any]  # names.ATTEMPT_ATTRIBUTES


class Step(NamedTuple):
    """The task reached a step before it started: resolved, queued or submitted."""

    kind: str
    uid: str
    t_ns: int
    offset: int  # ID_RESOLVED, ID_QUEUED or ID_SUBMITTED


class Ready(NamedTuple):
    """The task was resolved and queued at one moment: both steps' lines."""

    kind: str
    uid: str
    t_ns: int


class Started(NamedTuple):
    """The task started running (its ``TaskStarted`` line)."""

    kind: str
    uid: str
    t_ns: int


class Finished(NamedTuple):
    """The task ended: its final event line and its span line."""

    kind: str
    uid: str
    final_event: str
    error_type: str
    end_ns: int
    status: str
    description: str
    t_resolved: int
    t_queued: int
    t_submitted: int
    t_started: int
    result: str
    depends_on: tuple[str, ...]
    extra: dict[str, Any] | None  # attributes added by span enrichers and for failures
    slots: tuple[str, ...]
    exception: tuple[str, str, str] | None  # a failure's type, message and stack trace


class Completed(NamedTuple):
    """The task completed, with nothing to say but when: ``Finished`` with
    result ``completed``, status ``OK`` and no description, error, extra
    attributes, slots or exception."""

    kind: str
    uid: str
    end_ns: int
    depends_on: tuple[str, ...]
    t_resolved: int
    t_queued: int
    t_submitted: int
    t_started: int


# While the telemetry process exports OTLP, a task that completed plainly
# sends its TaskSpan's fields (all but the kind and uid) after its Completed
# record's, in that one record, instead of a TaskSpan record before it.


class TaskSpan(NamedTuple):
    """What OTLP needs of an ending task beyond its ``Finished`` (or
    ``Completed``) record.

    Sent just before it, only while the telemetry process exports OTLP: so
    that process keeps nothing per task (the file does not need it).
    """

    kind: str
    uid: str
    span_id: int
    parent_id: int | None
    start_ns: int
    shape: int  # its Shape
    workflow_id: str


class SpanFields(NamedTuple):
    """Every field of a finished span that is not a task's or a block's."""

    name: str
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    status: str
    description: str
    attributes: dict[str, Any]
    events: list[tuple[str, int]]  # (span event name, time in ns)


class Span(NamedTuple):
    """Any other finished span: session, workflow, user spans."""

    kind: str
    span: tuple[Any, ...]  # a SpanFields, as a plain tuple


def expand(record: tuple[Any, ...] | list[Any]) -> tuple[Any, ...] | list[Any]:
    """``record`` in its plain form: a packed record expanded, any other as it is."""
    plain = PACKED.get(record[0])
    if plain is None:
        return record
    if plain in (CREATED, CREATED_READY):
        _, uid, workflow_id, ints = record
        id_base, t_ns, shape, span_id, parent_id = CREATED_INTS.unpack(ints)
        return (plain, uid, id_base, t_ns, shape, workflow_id, span_id, parent_id or None)
    if record[0] == INSTANT_READY_PACKED:
        return _ready_instant(record)
    if len(record) == 4:
        _, uid, depends_on, ints = record
        end_ns, *steps = ENDED_INTS.unpack(ints)
        return (plain, uid, end_ns, depends_on, *steps)
    _, uid, depends_on, workflow_id, ints = record
    end_ns, resolved, queued, submitted, started, span_id, parent_id, start_ns, shape = (
        ENDED_SPAN_INTS.unpack(ints)
    )
    return (
        plain,
        uid,
        end_ns,
        depends_on,
        resolved,
        queued,
        submitted,
        started,
        span_id,
        parent_id or None,
        start_ns,
        shape,
        workflow_id,
    )


def _ready_instant(record: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
    """An ``INSTANT_READY_PACKED`` record as the plain ``Instant`` it stands for."""
    if len(record) == 4:
        _, uid, depends_on, ints = record
        end_ns, submitted, start_ns = READY_ENDED_INTS.unpack(ints)
        return (INSTANT, uid, end_ns, depends_on, start_ns, start_ns, submitted, end_ns)
    _, uid, depends_on, workflow_id, ints = record
    end_ns, submitted, start_ns, span_id, parent_id, shape = READY_ENDED_SPAN_INTS.unpack(ints)
    return (
        INSTANT,
        uid,
        end_ns,
        depends_on,
        start_ns,
        start_ns,
        submitted,
        end_ns,
        span_id,
        parent_id or None,
        start_ns,
        shape,
        workflow_id,
    )
