"""A run's tasks as columns: what the aggregated campaign timeline needs, nothing more.

Pure: records in, numpy arrays out; no plotly, no I/O.
A :class:`Timeline` holds one array per field (times in epoch seconds, NaN
for a step not reached) and a row per workflow instance, so the timeline of
a million tasks is built by whole-array operations instead of a Python loop
per task. :func:`timeline_of` makes one from a run's records (any source).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Collection, Sequence
from itertools import chain, compress, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from asyncflow.telemetry import names as n

from . import compute as c
from .model import (
    DEPENDENCY_FAILED_ERROR,
    STATE_CANCELED,
    STATE_COMPLETED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    STATUSES,
    Run,
    SpanRecord,
)

__all__ = ["Rows", "TaskColumns", "Timeline", "codes_of", "rows_of", "timeline_of"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}


@dataclasses.dataclass(frozen=True, eq=False)
class Timeline:
    """The tasks of a run as columns, task ``i`` in every array at index ``i``.

    Tasks are in the order of ``Run.tasks`` (finished ones as they ended,
    then the others as they were created).

    Attributes:
        run: the run but its task records (``run.tasks`` may be empty):
            start, end, workflows, blocks, capacities, problems.
        uids: task uids.
        keys: the workflow instances (row keys), in no particular order.
        key_types: the workflow type of each of ``keys``.
        key_of: per task, its instance (an index into ``keys``).
        created, resolved, started, finished: per task, epoch seconds (NaN: not reached).
        status: per task, an index into ``model.STATUSES``.
        cpus, gpus: per task, the slots of each kind it holds (assigned ones
            when known, else what it asked for).
        slots: the assigned slots of the tasks that have any.
        held: when the tasks with recorded attempts held their slots (each
            attempt's run, ``SpanRecord.held``); other tasks, from started to finished.
        edges: (task, dependency) index pairs, one per dependency among the tasks.
        record: the full record of task ``i`` (for the few drawn one by one).
    """

    run: Run
    uids: Sequence[str]
    keys: list[str]
    key_types: list[str]
    key_of: Ints
    created: Floats
    resolved: Floats
    started: Floats
    finished: Floats
    status: npt.NDArray[np.int8]
    cpus: Ints
    gpus: Ints
    slots: dict[int, tuple[str, ...]]
    held: dict[int, tuple[tuple[float, float], ...]]
    edges: tuple[Ints, Ints]
    record: Callable[[int], SpanRecord]

    def __len__(self) -> int:
        return len(self.uids)


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
    """The rows of a (filtered) timeline, ordered as ``compute.timeline_rows`` orders them.

    Attributes:
        keys, types, starts: per row.
        tasks: the indices of the tasks shown, in row order, then task order.
        row: per shown task (aligned with ``tasks``), its row number.
    """

    keys: list[str]
    types: list[str]
    starts: list[float]
    tasks: Ints
    row: Ints

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, i: int) -> str:
        """``"wf-1a2b (simulate)"``, as ``compute.Row.label``."""
        key, kind = self.keys[i], self.types[i]
        return f"{key} ({kind})" if kind else key


def rows_of(
    tl: Timeline,
    types: Collection[str] | None = None,
    states: Collection[str] | None = None,
) -> Rows:
    """The timeline's rows, filtered as ``compute.timeline_rows`` filters them."""
    shown = np.ones(len(tl), dtype=bool)
    if states is not None:
        wanted = np.zeros(len(STATUSES), dtype=bool)
        wanted[[STATUS_CODE[s] for s in states if s in STATUS_CODE]] = True
        shown &= wanted[tl.status]
    if types is not None:
        chosen = set(types)
        kept = np.array([t in chosen for t in tl.key_types], dtype=bool)
        shown &= kept[tl.key_of] if len(kept) else False
    tasks = np.flatnonzero(shown)
    keys = tl.key_of[tasks]
    # A row starts at its first task's creation; rows in (start, key) order.
    start = np.full(len(tl.keys), np.inf)
    np.minimum.at(start, keys, tl.created[tasks])
    present = np.unique(keys)
    # Rows by start, then key: the keys' ranks among all keys break ties.
    rank = np.empty(len(tl.keys), dtype=np.int64)
    rank[sorted(range(len(tl.keys)), key=tl.keys.__getitem__)] = np.arange(len(tl.keys))
    order = present[np.lexsort((rank[present], start[present]))].tolist()
    number = np.full(len(tl.keys), -1, dtype=np.int64)
    number[order] = np.arange(len(order))
    row = number[keys]
    by_row = np.argsort(row, kind="stable")
    return Rows(
        keys=[tl.keys[k] for k in order],
        types=[tl.key_types[k] for k in order],
        starts=[float(start[k]) for k in order],
        tasks=tasks[by_row],
        row=row[by_row],
    )


_NOT_REACHED = {None: np.nan}  # a step never reached: NaN in its column
_FIELD = {name: i for i, name in enumerate(SpanRecord._fields)}
_FINAL_CODES = {
    STATE_COMPLETED: STATUS_CODE[STATE_COMPLETED],
    STATE_FAILED: STATUS_CODE[STATE_FAILED],
    STATE_CANCELED: STATUS_CODE[STATE_CANCELED],
}


@dataclasses.dataclass(frozen=True, eq=False)
class TaskColumns:
    """What a timeline takes from each task, made from records or by a reader.

    Attributes:
        uids: task uids.
        created, resolved, queued, submitted, started, finished: epoch
            seconds (NaN: not reached).
        final: per task, the ``STATUSES`` code of its final state (a
            failure whose dependency failed is a cascade), -1 while unfinished.
        cpus, gpus: slots held per kind: assigned ones when known.
        slots: the assigned slots of the tasks that have any.
        attempted: the tasks with recorded attempts.
        workflow_ids, kinds: per task, a code into ``workflow_id_values``
            (the id it was registered under) and ``kind_values`` (its
            workflow type); codes numbered in the order tasks first use them.
        edges: (task, dependency) index pairs, in task order.
        record: the full record of task ``i``.
    """

    uids: Sequence[str]
    created: Floats
    resolved: Floats
    queued: Floats
    submitted: Floats
    started: Floats
    finished: Floats
    final: Ints
    cpus: Ints
    gpus: Ints
    slots: dict[int, tuple[str, ...]]
    attempted: list[int]
    workflow_ids: Ints
    workflow_id_values: list[str]
    kinds: Ints
    kind_values: list[str]
    edges: tuple[Ints, Ints]
    record: Callable[[int], SpanRecord]


def codes_of(values: Sequence[str]) -> tuple[Ints, list[str]]:
    """``values`` as codes, numbered in the order of first use, and the distinct values."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64, len(values))
    return codes, list(index)


def timeline_of(run: Run) -> Timeline:
    """The columns of a run's tasks (any source, either checkpoint layout).

    A reader that made the columns itself (``run.tasks.columns``) gives them;
    records (tuples) are taken apart by whole-column operations, not a
    Python step per task.
    """
    made = getattr(run.tasks, "columns", None)
    parts: TaskColumns = made(run) if made is not None else _from_records(run.tasks, run.end)
    return _timeline(run, parts)


def _from_records(tasks: Sequence[SpanRecord], end: float) -> TaskColumns:
    count = len(tasks)

    def field(name: str) -> map[Any]:
        return map(operator.itemgetter(_FIELD[name]), tasks)

    def column(name: str) -> list[Any]:
        return list(field(name))

    def times(name: str) -> Floats:
        try:  # every task reached the step: straight into the array
            return np.fromiter(field(name), np.float64, count)
        except TypeError:  # None: a step not reached
            values = column(name)
            return np.fromiter(map(_NOT_REACHED.get, values, values), np.float64, count)

    # model.status, by column: a final state as recorded (a failure whose
    # dependency failed is a cascade), else how far the task got.
    final = np.fromiter(map(_FINAL_CODES.get, field("state"), repeat(-1)), np.int64, count)
    failed = np.flatnonzero(final == STATUS_CODE[STATE_FAILED]).tolist()
    error_of = operator.itemgetter(_FIELD["error_type"])
    cascades = [i for i in failed if error_of(tasks[i]) == DEPENDENCY_FAILED_ERROR]
    final[cascades] = STATUS_CODE[STATE_DEPENDENCY_FAILED]
    # Slots held per kind: assigned ones when known, else what was asked for.
    cpus = np.fromiter(field("cpus"), np.int64, count)
    gpus = np.fromiter(field("gpus"), np.int64, count)
    held = column("slots")
    slots = {i: held[i] for i in compress(range(count), held)}
    for i, held in slots.items():
        cpus[i] = sum(1 for s in held if s.startswith(n.KIND_CPU + ":"))
        gpus[i] = sum(1 for s in held if s.startswith(n.KIND_GPU + ":"))
    workflow_ids, workflow_id_values = codes_of(column("workflow_id"))
    kinds, kind_values = codes_of(column("workflow_type"))
    # Dependencies among the tasks (a uid recorded twice: its last record).
    uids = column("uid")
    index = dict(zip(uids, range(count), strict=True))
    deps = column("depends_on")
    lengths = np.fromiter(map(len, deps), np.int64, count)
    flat = list(chain.from_iterable(deps))
    target = np.fromiter(map(index.get, flat, repeat(-1)), np.int64, len(flat))
    source = np.repeat(np.arange(count, dtype=np.int64), lengths)
    found = target >= 0
    return TaskColumns(
        uids=uids,
        created=times("created"),
        resolved=times("resolved"),
        queued=times("queued"),
        submitted=times("submitted"),
        started=times("started"),
        finished=times("finished"),
        final=final,
        cpus=cpus,
        gpus=gpus,
        slots=slots,
        attempted=list(compress(range(count), field("attempts"))),
        workflow_ids=workflow_ids,
        workflow_id_values=workflow_id_values,
        kinds=kinds,
        kind_values=kind_values,
        edges=(source[found], target[found]),
        record=tasks.__getitem__,
    )


def _timeline(run: Run, parts: TaskColumns) -> Timeline:
    """The timeline of ``parts``: statuses, rows (workflow instances) and their types."""
    count = len(parts.uids)
    final, started = parts.final, parts.started
    codes = final.astype(np.int8)
    unfinished = final < 0
    if unfinished.any():
        waiting = np.where(
            ~np.isnan(started),
            STATUS_CODE[STATE_RUNNING],
            np.where(
                ~(np.isnan(parts.resolved) & np.isnan(parts.queued) & np.isnan(parts.submitted)),
                STATUS_CODE[STATE_QUEUED],
                STATUS_CODE[STATE_WAITING],
            ),
        )
        codes[unfinished] = waiting[unfinished]
    # Tasks with retries hold their slots per attempt: few, taken one by one.
    attempt_runs = {i: parts.record(i).held(run.end) for i in parts.attempted}
    # Rows: each task's workflow instance, each instance's type.
    keys_of_blocks = c.row_key(run)
    known = c._row_types(run, keys_of_blocks)
    key_index: dict[str, int] = {}
    key_code = np.zeros(len(parts.workflow_id_values), dtype=np.int64)
    for code in _first_used(parts.workflow_ids):
        wf_id = parts.workflow_id_values[code]
        key = keys_of_blocks.get(wf_id, wf_id) or c.NO_WORKFLOW
        key_code[code] = key_index.setdefault(key, len(key_index))
    key_of = key_code[parts.workflow_ids] if count else np.zeros(0, dtype=np.int64)
    names = list(key_index)
    key_types = [known.get(k, "") for k in names]
    named = np.fromiter(map(bool, parts.kind_values), bool, len(parts.kind_values))
    typed = np.flatnonzero(named[parts.kinds]) if count else np.zeros(0, dtype=np.int64)
    first_keys, first = np.unique(key_of[typed], return_index=True)
    for k, i in zip(first_keys.tolist(), typed[first].tolist(), strict=True):
        key_types[k] = key_types[k] or parts.kind_values[parts.kinds[i]]
    return Timeline(
        run=run,
        uids=parts.uids,
        keys=names,
        key_types=key_types,
        key_of=key_of,
        created=parts.created,
        resolved=parts.resolved,
        started=started,
        finished=parts.finished,
        status=codes,
        cpus=parts.cpus,
        gpus=parts.gpus,
        slots=parts.slots,
        held=attempt_runs,
        edges=parts.edges,
        record=parts.record,
    )


def _first_used(codes: Ints) -> list[int]:
    """The codes in ``codes``, in the order of their first use."""
    if not len(codes):
        return []
    used, first = np.unique(codes, return_index=True)
    return [int(code) for code in used[np.argsort(first)]]
