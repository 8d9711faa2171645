"""The tasks of a scanned file (``_finished``) as a lazy sequence of records, and
the campaign timeline's columns made straight from the scanner's columns.

Pure: no I/O, no plotly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from asyncflow.telemetry import names as n

from ._base import gc_paused
from ._columns import STATUS_CODE, Ints, TaskColumns, _from_records
from ._finished import ABSENT, Scanned
from ._making import _strings
from .model import (
    DEPENDENCY_FAILED_ERROR,
    FINAL_STATES,
    STATE_COMPLETED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    SpanRecord,
)

__all__ = ["TaskTable"]


class TaskTable(Sequence[SpanRecord]):
    """The task records of a scanned file, made one by one when asked for.

    The tasks that ended, in the order they did, then ``live``: the records
    of tasks that never ended (a killed run), as the Python reader makes
    them. ``columns(run)`` gives the campaign timeline what it takes
    without making any record of the first. As ``RunBuilder.snapshot``
    does, a task without a workflow type takes its recorded workflow's
    (``fill``: workflow id -> type).
    """

    def __init__(
        self, scanned: Scanned, fill: Mapping[str, str], live: Sequence[SpanRecord] = ()
    ) -> None:
        self._scanned = scanned
        self._rows = scanned.task_rows()
        self._row_list: list[int] = self._rows.tolist()
        self._fill = dict(fill)
        self._live = tuple(live)
        self._records: list[SpanRecord] | None = None
        self._columns: TaskColumns | None = None

    def __len__(self) -> int:
        return len(self._row_list) + len(self._live)

    def _record(self, i: int) -> SpanRecord:
        if i >= len(self._row_list):
            return self._live[i - len(self._row_list)]
        record = self._scanned.record(self._row_list[i])
        if not record.workflow_type and record.workflow_id in self._fill:
            record = record._replace(workflow_type=self._fill[record.workflow_id])
        return record

    @overload
    def __getitem__(self, i: int) -> SpanRecord: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[SpanRecord]: ...
    def __getitem__(self, i: int | slice) -> SpanRecord | Sequence[SpanRecord]:
        if self._records is not None:
            return self._records[i]
        if isinstance(i, slice):
            return [self._record(j) for j in range(len(self))[i]]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("task index out of range")
        return self._record(i)

    def __iter__(self) -> Iterator[SpanRecord]:
        if self._records is None:
            # All at once, as a read makes them: to the oldest generation.
            with gc_paused():
                made = self._scanned.records(self._rows)
                fill = self._fill
                if fill:
                    made = [
                        r._replace(workflow_type=fill[r.workflow_id])
                        if not r.workflow_type and r.workflow_id in fill
                        else r
                        for r in made
                    ]
                self._records = [*made, *self._live]
        return iter(self._records)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"<TaskTable of {len(self)} tasks>"

    def columns(self, run: Any) -> TaskColumns:
        """The timeline's columns of these tasks (``run``: its end, for live tasks' records)."""
        if self._columns is None:
            scanned = self._scanned
            # Rows of the tasks that never ended, at their places after the others.
            live = {scanned.open_rows[r.uid]: i for i, r in enumerate(self._live)}
            made = _columns(scanned, self._rows, self._fill, self.__getitem__, live)
            if self._live:
                made = _join(made, _from_records(self._live, run.end), self.__getitem__)
            self._columns = made
        return self._columns


def _join(a: TaskColumns, b: TaskColumns, record: Callable[[int], SpanRecord]) -> TaskColumns:
    """The columns of ``a``'s tasks, then ``b``'s (whose tasks depend on none; ``a``'s
    edges already count them)."""
    offset = len(a.uids)

    def merged(
        codes_a: Ints, values_a: list[str], codes_b: Ints, values_b: list[str]
    ) -> tuple[Ints, list[str]]:
        values = list(values_a)
        index: dict[str, int] = {}
        for i, v in enumerate(values):  # a value may come twice (texts of other values)
            index.setdefault(v, i)
        remap = []
        for v in values_b:
            if v not in index:
                index[v] = len(values)
                values.append(v)
            remap.append(index[v])
        codes = np.asarray(remap, dtype=np.int64)[codes_b] if len(codes_b) else codes_b
        return np.concatenate([codes_a, codes]), values

    workflow_ids, workflow_id_values = merged(
        a.workflow_ids, a.workflow_id_values, b.workflow_ids, b.workflow_id_values
    )
    kinds, kind_values = merged(a.kinds, a.kind_values, b.kinds, b.kind_values)
    names = ("created", "resolved", "queued", "submitted", "started", "finished", "final")
    joined = {
        name: np.concatenate([getattr(a, name), getattr(b, name)])
        for name in (*names, "cpus", "gpus")
    }
    return TaskColumns(
        uids=[*a.uids, *b.uids],
        **joined,
        slots={**a.slots, **{i + offset: s for i, s in b.slots.items()}},
        attempted=[*a.attempted, *(i + offset for i in b.attempted)],
        workflow_ids=workflow_ids,
        workflow_id_values=workflow_id_values,
        kinds=kinds,
        kind_values=kind_values,
        edges=a.edges,
        record=record,
    )


def _seconds(column: np.ndarray[Any, Any], instead: np.ndarray[Any, Any] | None = None) -> Any:
    """Epoch ns as seconds (``created / 1e9``, as a record has it); NaN where absent."""
    absent = column == ABSENT
    if instead is not None:
        column = np.where(absent, instead, column)
        absent = column == ABSENT
    return np.where(absent, np.nan, column.astype(np.float64) / 1e9)


def _columns(
    s: Scanned,
    rows: Ints,
    fill: Mapping[str, str],
    record: Callable[[int], SpanRecord],
    live: Mapping[int, int],
) -> TaskColumns:
    """What ``_columns._from_records`` takes from the records, from the columns.

    ``live``: the rows of tasks that never ended -> their place among the
    records after ``rows``' (a task that ended may have depended on one).
    """
    count = len(rows)
    ints = {k: c[rows] for k, c in s.ints.items()}
    codes = {k: c[rows].astype(np.int64) for k, c in s.codes.items()}
    # Decoded values as text, shifted by one: code 0 is "no such field".
    texts = ["", *(v if isinstance(v, str) else "" for v in s.values)]

    def lookup(table: np.ndarray[Any, Any], key: str) -> Any:
        return table[codes[key] + 1]

    # The state: a known result, else failed for an ERROR status; cascades.
    final_of = np.array(
        [-1, *(STATUS_CODE[v] if v in FINAL_STATES else -1 for v in texts[1:])], np.int64
    )
    error_status = np.array([t == n.STATUS_ERROR for t in texts], bool)
    final = lookup(final_of, n.TL_RESULT)
    other = final < 0
    final[other] = np.where(
        lookup(error_status, n.TL_STATUS)[other],
        STATUS_CODE[STATE_FAILED],
        STATUS_CODE[STATE_COMPLETED],
    )
    cascade = np.array([t == DEPENDENCY_FAILED_ERROR for t in texts], bool)
    final[(final == STATUS_CODE[STATE_FAILED]) & lookup(cascade, n.TL_ERROR_TYPE)] = STATUS_CODE[
        STATE_DEPENDENCY_FAILED
    ]
    # Slots held per kind: assigned ones when known, else what was asked for.
    cpus = np.where(ints[n.TL_CPUS] == ABSENT, 1, ints[n.TL_CPUS])
    gpus = np.where(ints[n.TL_GPUS] == ABSENT, 0, ints[n.TL_GPUS])
    slot_code = codes[n.TL_SLOTS] + 1
    # The slots of each value used as slots (code 0: none assigned).
    slot_tuples: dict[int, tuple[str, ...]] = {
        code: _strings(s.values[code - 1]) for code in np.unique(slot_code).tolist() if code
    }
    held = np.flatnonzero(slot_code)
    held = held[[bool(slot_tuples[code]) for code in slot_code[held].tolist()]]
    slots: dict[int, tuple[str, ...]] = {}
    if len(held):
        size = len(s.values) + 1
        for kind, column in ((n.KIND_CPU, cpus), (n.KIND_GPU, gpus)):
            count_of = np.zeros(size, dtype=np.int64)
            for code, names in slot_tuples.items():
                count_of[code] = sum(1 for x in names if x.startswith(kind + ":"))
            column[held] = count_of[slot_code[held]]
        slots = dict(
            zip(held.tolist(), map(slot_tuples.__getitem__, slot_code[held].tolist()), strict=True)
        )
    # Where each row is among the tasks (-1: a block).
    position = np.full(s.rows, -1, dtype=np.int64)
    position[rows] = np.arange(count, dtype=np.int64)
    attempted = sorted(p for p in position[list(s.attempts)].tolist() if p >= 0)
    # Workflow types: a task without one takes its recorded workflow's.
    kinds = codes[n.TL_WORKFLOW_NAME] + 1
    workflow_ids = codes[n.TL_WORKFLOW_ID] + 1
    if fill:
        untyped = np.flatnonzero(~np.fromiter(map(bool, texts), bool, len(texts))[kinds])
        code_of = {t: i for i, t in enumerate(texts)}
        for wf in np.unique(workflow_ids[untyped]).tolist():
            if texts[wf] in fill:
                kind = fill[texts[wf]]
                found = code_of.get(kind)
                if found is None:
                    found = code_of[kind] = len(texts)
                    texts.append(kind)
                kinds[untyped[workflow_ids[untyped] == wf]] = found
    # Dependencies among the tasks, in task order (listed order within one):
    # from the tasks that ended to any task.
    reached = position.copy()
    if live:
        reached[list(live)] = count + np.fromiter(live.values(), np.int64, len(live))
    source, target = position[s.edge_rows], reached[s.edge_uids]
    among = (source >= 0) & (target >= 0)
    source, target = source[among], target[among]
    by_task = np.argsort(source, kind="stable")
    uids = s.uids
    return TaskColumns(
        uids=[uids[r] for r in rows.tolist()],
        created=_seconds(ints[n.TL_CREATED], ints[n.TL_ENDED]),
        resolved=_seconds(ints[n.SPAN_EVENT_RESOLVED]),
        queued=_seconds(ints[n.SPAN_EVENT_QUEUED]),
        submitted=_seconds(ints[n.SPAN_EVENT_SUBMITTED]),
        started=_seconds(ints[n.SPAN_EVENT_STARTED]),
        finished=_seconds(ints[n.TL_ENDED]),
        final=final,
        cpus=cpus,
        gpus=gpus,
        slots=slots,
        attempted=attempted,
        workflow_ids=workflow_ids,
        workflow_id_values=texts,
        kinds=kinds,
        kind_values=texts,
        edges=(source[by_task], target[by_task]),
        record=record,
    )
