"""The :class:`~asyncflow.dashboard.model.RunBuilder`: spans, events and metric
snapshots accumulated into a run.

Pure: no I/O, no asyncio, no plotly. Imported through
:mod:`asyncflow.dashboard.model`, which re-exports it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from asyncflow.telemetry import names as n

from ._making import _int, span_record
from .model import (
    _EVENT_FIELDS,
    STATE_RUNNING,
    ResourceSample,
    Run,
    SlotSnapshot,
    SpanRecord,
)

if TYPE_CHECKING:
    from ._finished import Scanned

__all__ = ["RunBuilder"]


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
        self._scanned: Scanned | None = None
        self._table: tuple[int, Sequence[SpanRecord]] | None = None
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

    def add_scanned(self, scanned: Scanned) -> None:
        """Take the tasks of a file the compiled scanner read (``_finished``), once.

        Their records are made when a view asks for them; the builder holds
        no other task (the reader checks).
        """
        self._scanned = scanned
        self.version += len(scanned.task_rows()) + 1
        bounds = scanned.bounds()
        if bounds is not None:
            self._first = min(self._first, bounds[0])
            self._last = max(self._last, bounds[1])

    def task_count(self) -> int:
        """The tasks and blocks taken as records (live or finished), not counting scanned ones."""
        return len(self._tasks) + len(self._finished)

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
    def _scanned_tasks(self, live: Sequence[SpanRecord]) -> Sequence[SpanRecord]:
        """The scanned tasks, then ``live`` ones, as one lazy table per version of the run."""
        if self._table is None or self._table[0] != self.version:
            from ._table import TaskTable  # imports numpy: only for scanned files

            assert self._scanned is not None
            fill = {uid: wf.workflow_type for uid, wf in self._workflows.items()}
            self._table = (self.version, TaskTable(self._scanned, fill, live))
        return self._table[1]

    def snapshot(self) -> Run:
        """The run as it stands."""
        workflows = self._workflows
        tasks: Sequence[SpanRecord] = tuple(self._tasks.values())
        if any(not t.workflow_type and t.workflow_id in workflows for t in tasks):
            tasks = tuple(
                t._replace(workflow_type=workflows[t.workflow_id].workflow_type)
                if not t.workflow_type and t.workflow_id in workflows
                else t
                for t in tasks
            )
        if self._scanned is not None:
            tasks = self._scanned_tasks(tasks)
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
