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
from collections.abc import Mapping, Sequence
from typing import NamedTuple

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
    slots: tuple[str, ...] = ()  # the slots it ran on, when recorded (each attempt its own)


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

    def held(self, now: float) -> tuple[tuple[float, float], ...]:
        """When it held its slots: ``(start, end)`` pairs, epoch seconds.

        Each attempt's own run when its attempts are recorded (between them
        a task waits out its retry delay and holds nothing), else from
        ``started`` until ``finished`` (``now`` while it runs); none if it
        never started.
        """
        if self.started is None:
            return ()
        end = self.finished if self.finished is not None else now
        if self.attempts:
            ran = tuple((a.started, a.ended or end) for a in self.attempts if a.started)
            if ran:
                return ran
        return ((self.started, end),)

    def runs(self, now: float) -> tuple[tuple[float, float, tuple[str, ...]], ...]:
        """:meth:`held` with the slots of each: ``(start, end, slots)``.

        An attempt that recorded its slots ran on those (a later attempt
        may run on others); otherwise, and without attempts, on ``slots``.
        """
        if self.attempts and self.started is not None:
            end = self.finished if self.finished is not None else now
            ran = tuple(
                (a.started, a.ended or end, a.slots or self.slots)
                for a in self.attempts
                if a.started
            )
            if ran:
                return ran
        return tuple((low, high, self.slots) for low, high in self.held(now))

    def all_slots(self) -> tuple[str, ...]:
        """Every slot it held, in any attempt."""
        if not self.attempts:
            return self.slots
        return tuple(dict.fromkeys((*self.slots, *(s for a in self.attempts for s in a.slots))))

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
        tasks, blocks, workflows: the records, in the order first seen
            (a finished file's tasks may be a lazy sequence whose records
            are made when asked for).
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
    tasks: Sequence[SpanRecord] = ()
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


# The record makers and the builder have modules of their own; this one
# stays the place to import them from. Imported last: they import the
# types above from here.
from ._builder import RunBuilder  # noqa: E402
from ._making import span_record, task_record  # noqa: E402
