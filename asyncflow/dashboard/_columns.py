"""A run's tasks as columns: what the aggregated campaign timeline needs, nothing more.

Pure: records or parsed fields in, numpy arrays out; no plotly, no I/O.
A :class:`Timeline` holds one array per field (times in epoch seconds, NaN
for a step not reached) and a row per workflow instance, so the timeline of
a million tasks is built by whole-array operations instead of a Python loop
per task. :func:`timeline_of` makes one from a run's records (any source);
``_scan`` makes one straight from a checkpoint file's bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from asyncflow.telemetry import names as n

from . import compute as c
from .model import STATUSES, Run, SpanRecord, status

__all__ = ["Rows", "Timeline", "rows_of", "timeline_of"]

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
        edges: (task, dependency) index pairs, one per dependency among the tasks.
        record: the full record of task ``i`` (for the few drawn one by one).
        full: the whole run as records (read when a view needs them).
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
    edges: tuple[Ints, Ints]
    record: Callable[[int], SpanRecord]
    full: Callable[[], Run]

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


def _time(value: float | None) -> float:
    return np.nan if value is None else value


def timeline_of(run: Run) -> Timeline:
    """The columns of a run's task records (any source, either checkpoint layout)."""
    tasks = run.tasks
    keys_of_blocks = c.row_key(run)
    known = c._row_types(run, keys_of_blocks)
    key_index: dict[str, int] = {}
    key_types: list[str] = []
    key_of = np.empty(len(tasks), dtype=np.int64)
    columns: list[list[float]] = [[], [], [], []]
    codes = np.empty(len(tasks), dtype=np.int8)
    cpus = np.empty(len(tasks), dtype=np.int64)
    gpus = np.empty(len(tasks), dtype=np.int64)
    slots: dict[int, tuple[str, ...]] = {}
    index = {t.uid: i for i, t in enumerate(tasks)}
    sources: list[int] = []
    targets: list[int] = []
    for i, task in enumerate(tasks):
        wf_id = task.workflow_id
        key = keys_of_blocks.get(wf_id, wf_id) or c.NO_WORKFLOW
        k = key_index.get(key)
        if k is None:
            k = key_index[key] = len(key_types)
            key_types.append("")
        if not key_types[k]:
            key_types[k] = known.get(key) or task.workflow_type
        key_of[i] = k
        for column, value in zip(
            columns, (task.created, task.resolved, task.started, task.finished), strict=True
        ):
            column.append(_time(value))
        codes[i] = STATUS_CODE[status(task)]
        if task.slots:
            slots[i] = task.slots
        cpus[i] = task.slot_count(n.KIND_CPU)
        gpus[i] = task.slot_count(n.KIND_GPU)
        for dep in task.depends_on:
            j = index.get(dep)
            if j is not None:
                sources.append(i)
                targets.append(j)
    created, resolved, started, finished = (np.array(col, dtype=np.float64) for col in columns)
    return Timeline(
        run=run,
        uids=[t.uid for t in tasks],
        keys=list(key_index),
        key_types=key_types,
        key_of=key_of,
        created=created,
        resolved=resolved,
        started=started,
        finished=finished,
        status=codes,
        cpus=cpus,
        gpus=gpus,
        slots=slots,
        edges=(np.array(sources, dtype=np.int64), np.array(targets, dtype=np.int64)),
        record=tasks.__getitem__,
        full=lambda: run,
    )


def as_floats(values: Any) -> Floats:
    """``values`` as a float64 array (a helper for builders of columns)."""
    return np.asarray(values, dtype=np.float64)
