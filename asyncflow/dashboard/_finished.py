"""A finished layout 2 checkpoint file, read by the compiled scanner (``_scan.c``).

Reading a file into a record per task costs several times a bare JSON pass
over it. Once a run has ended its file no longer changes, so the scanner
reads its task lines straight into columns (a row per task, an int64 per
time, a code per repeated string) and the task records are made only when a
view asks for them (:class:`TaskTable`); the campaign timeline is drawn from
the columns. Lines of other sections (spans, events, metrics) are few and
go to the Python reader as before.

The scanner takes only lines as the engine's writer writes them. On any
other line (:class:`Unreadable`) the caller reads the file the Python way,
which also reports such lines. The tasks of a killed run that never ended
go to the Python reader's live view (``Scanned.open_tasks``). Without the
compiled scanner (no C compiler at install), :data:`SCANNER` is ``None``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, overload

import numpy as np

from asyncflow.telemetry import names as n

from ._base import gc_paused
from ._columns import STATUS_CODE, Ints, TaskColumns, _from_records
from ._making import _strings, task_record
from .model import (
    _TASK_KINDS,
    DEPENDENCY_FAILED_ERROR,
    FINAL_STATES,
    STATE_COMPLETED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    SpanRecord,
)

try:
    import orjson

    from . import _scan
except ImportError:  # pragma: no cover - built at install; orjson comes with the extra
    _scan = None  # type: ignore[assignment]

__all__ = ["SCANNER", "Scanned", "TaskTable", "Unreadable", "scan"]

_INTS = (
    n.TL_CREATED,
    *n.TL_STEPS,
    n.TL_ASSIGNED,
    n.TL_ATTEMPT_ENDED,
    n.TL_ENDED,
    n.TL_EVENT_ID,
    n.TL_ASSIGNED_ID,
    n.TL_CPUS,
    n.TL_GPUS,
)
_CODES = (
    n.TL_BACKEND,
    n.TL_WORKFLOW_ID,
    n.TL_LEVEL,
    n.TL_NAME,
    n.TL_WORKFLOW_NAME,
    n.TL_TYPE,
    n.TL_RESULT,
    n.TL_STATUS,
    n.TL_ERROR_TYPE,
    n.TL_DESCRIPTION,
    n.TL_PARENT,
    n.TL_SLOTS,
)
# The scanner in use: built from this source (its version) and naming its
# columns as names.py does; a stale build is not used.
SCANNER = (
    _scan
    if _scan is not None and _scan.VERSION == 1 and (_scan.INTS, _scan.CODES) == (_INTS, _CODES)
    else None
)
ABSENT = np.iinfo(np.int64).min  # a field a task has no line with
# What task_record's plain way takes (a task with all of these): the rest is its.
_EVERY_INT = (n.TL_CREATED, *n.TL_STEPS, n.TL_ENDED, n.TL_CPUS, n.TL_GPUS)
_EVERY_CODE = (
    n.TL_PARENT,
    n.TL_BACKEND,
    n.TL_WORKFLOW_ID,
    n.TL_NAME,
    n.TL_WORKFLOW_NAME,
    n.TL_LEVEL,
    n.TL_TYPE,
    n.TL_RESULT,
)
_PLAIN_RESULTS = frozenset(FINAL_STATES) - {STATE_FAILED}
_Lists = tuple[Mapping[str, Any], Mapping[str, Any]]  # columns, as arrays or lists
_CHUNK = 8 * 1024 * 1024


class Unreadable(ValueError):
    """The scanner cannot take this file: read it the Python way."""


def scan(f: io.BufferedIOBase) -> tuple[Scanned, list[bytes], int, bytes]:
    """Read ``f`` from where it is to its end.

    Returns:
        the task lines' columns, the other lines (bytes, in file order), the
        bytes read up to the last newline, and the bytes after it (a last
        line not yet whole).

    Raises:
        Unreadable: a task line as the writer never writes one, or a task
            that never ended.
    """
    if SCANNER is None:
        raise Unreadable("the compiled scanner is not built")
    scanner = SCANNER.Scanner()
    others: list[bytes] = []
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    kept = 0  # bytes of a line begun in the last chunk, moved to the buffer's start
    read = 0
    while True:
        if kept == len(buffer):  # a line longer than the buffer: make room
            view.release()
            buffer.extend(bytes(len(buffer)))
            view = memoryview(buffer)
        got = f.readinto(view[kept:])
        size = kept + got
        end = buffer.rfind(b"\n", 0, size) + 1
        if end:
            try:
                others += scanner.feed(view[:end])
            except ValueError as exc:
                raise Unreadable(str(exc)) from None
            buffer[: size - end] = view[end:size]
            kept = size - end
        else:
            kept = size
        read += end
        if not got:
            rest = bytes(buffer[:kept])
            view.release()
            return Scanned(scanner.finish()), others, read, rest


def _json(raw: bytes) -> Any:
    """A raw JSON value, decoded as the Python reader decodes its line."""
    try:
        return orjson.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        raise Unreadable("a task field is not valid JSON") from None


class Scanned:
    """The scanner's columns, decoded: a row per task, in the order first seen."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.rows: int = raw["rows"]
        self.lines: int = raw["lines"]
        self.order = np.frombuffer(raw["order"], np.int32).astype(np.int64)
        self.ints = {k: np.frombuffer(b, np.int64) for k, b in zip(_INTS, raw["ints"], strict=True)}
        self.codes = {
            k: np.frombuffer(b, np.int32) for k, b in zip(_CODES, raw["codes"], strict=True)
        }
        # Strings without escapes come as str; other values as raw JSON.
        self.values: list[Any] = [_json(v) if type(v) is bytes else v for v in raw["values"]]
        self.uids: list[str] = raw["uids"]
        self.spans: list[str | None] = raw["spans"]
        if raw["escaped"]:
            self.spans = [_json(s) if type(s) is bytes else s for s in self.spans]
        self.depends_on: list[bytes | None] = raw["depends_on"]
        self.attributes = {r: _json(v) for r, v in raw["attributes"].items()}
        self.exceptions = {r: _json(v) for r, v in raw["exceptions"].items()}
        self.attempts: dict[int, list[tuple[int, Any]]] = {}
        for row, t, attrs in raw["attempts"]:
            self.attempts.setdefault(row, []).append((t, _json(attrs) if attrs else {}))
        self.edge_rows = np.frombuffer(raw["edge_rows"], np.int32).astype(np.int64)
        self.edge_uids = np.frombuffer(raw["edge_uids"], np.int32).astype(np.int64)
        # Which rows are blocks: a block is a task line's level "block".
        level = self.codes[n.TL_LEVEL]
        block_codes = [i for i, v in enumerate(self.values) if v == n.LEVEL_BLOCK]
        self.is_block = np.isin(level, block_codes) if block_codes else np.zeros(self.rows, bool)

    def fields(self, row: int, columns: _Lists | None = None) -> dict[str, Any]:
        """The fields of a task's lines put together, as the Python reader merges them.

        ``columns``: :meth:`lists`, when many rows are wanted.
        """
        ints, codes = columns if columns is not None else (self.ints, self.codes)
        task: dict[str, Any] = {n.SECTION: n.SECTION_TASK, n.TL_UID: self.uids[row]}
        for key, column in ints.items():
            value = column[row]
            if value != ABSENT:
                task[key] = int(value)
        values = self.values
        for key, column in codes.items():
            code = column[row]
            if code >= 0:
                task[key] = values[code]
        span = self.spans[row]
        if span is not None:
            task[n.TL_SPAN] = span
        depends_on = self.depends_on[row]
        if depends_on is not None:
            task[n.TL_DEPENDS_ON] = orjson.loads(depends_on)
        if row in self.attributes:
            task[n.TL_ATTRIBUTES] = self.attributes[row]
        if row in self.exceptions:
            task[n.TL_EXCEPTION] = self.exceptions[row]
        attempts = self.attempts.get(row)
        if attempts:
            task[n.TL_ATTEMPT] = attempts[-1][1]
            task["attempts"] = list(attempts)
        return task

    def lists(self) -> _Lists:
        """The columns as Python lists: they index several times faster than
        numpy scalars, for making many records (and are let go after)."""
        return (
            {k: c.tolist() for k, c in self.ints.items()},
            {k: c.tolist() for k, c in self.codes.items()},
        )

    def record(self, row: int, columns: _Lists | None = None) -> SpanRecord:
        """The record the Python reader makes of a row."""
        return task_record(self.fields(row, columns))

    def records(self, rows: Ints) -> list[SpanRecord]:
        """The records of ``rows``, at once.

        A plain task (every step reached, no failure, attempt or extra
        attribute: most of a campaign) is the tuple ``task_record`` makes of
        it, put together column by column; the others are ``task_record``'s.
        """
        if not len(rows):
            return []
        ints = {k: c[rows] for k, c in self.ints.items()}
        codes = {k: c[rows] for k, c in self.codes.items()}
        values = self.values
        result = codes[n.TL_RESULT]
        plain_result = np.zeros(len(values) + 1, dtype=bool)  # shifted: code -1 at 0
        level_task = np.zeros(len(values) + 1, dtype=bool)
        for code, value in enumerate(values, start=1):
            plain_result[code] = type(value) is str and value in _PLAIN_RESULTS
            level_task[code] = value == n.LEVEL_TASK
        plain = plain_result[result + 1] & level_task[codes[n.TL_LEVEL] + 1]
        for key in _EVERY_INT:
            plain &= ints[key] != ABSENT
        for key in _EVERY_CODE:
            plain &= codes[key] >= 0
        plain &= ints[n.TL_ATTEMPT_ENDED] == ABSENT
        row_list = rows.tolist()
        spans = self.spans
        odd = set(self.attributes) | {r for r in row_list if spans[r] is None}
        if odd:
            plain &= np.fromiter((r not in odd for r in row_list), bool, len(row_list))
        out: list[Any] = [None] * len(row_list)
        chosen = np.flatnonzero(plain)
        if len(chosen):
            at = chosen.tolist()
            picked = [row_list[i] for i in at]

            def text(key: str) -> list[Any]:
                return [values[c] for c in codes[key][chosen].tolist()]

            def seconds(key: str) -> list[float]:
                made: list[float] = (ints[key][chosen].astype(np.float64) / 1e9).tolist()
                return made

            def optional(key: str) -> list[Any]:
                return [values[c] if c >= 0 else "" for c in codes[key][chosen].tolist()]

            slot_code = codes[n.TL_SLOTS][chosen].tolist()
            slot_names = {c: _strings(values[c]) for c in set(slot_code) if c >= 0}
            deps = self.depends_on
            columns = zip(
                [self.uids[r] for r in picked],
                repeat(n.LEVEL_TASK),
                text(n.TL_NAME),
                text(n.TL_WORKFLOW_ID),
                text(n.TL_WORKFLOW_NAME),
                text(n.TL_BACKEND),
                text(n.TL_RESULT),
                seconds(n.TL_CREATED),
                seconds(n.SPAN_EVENT_RESOLVED),
                seconds(n.SPAN_EVENT_QUEUED),
                seconds(n.SPAN_EVENT_SUBMITTED),
                seconds(n.SPAN_EVENT_STARTED),
                seconds(n.TL_ENDED),
                [slot_names.get(c, ()) for c in slot_code],
                ints[n.TL_CPUS][chosen].tolist(),
                ints[n.TL_GPUS][chosen].tolist(),
                optional(n.TL_ERROR_TYPE),
                optional(n.TL_DESCRIPTION),
                [
                    _strings(orjson.loads(d)) if d is not None else ()
                    for d in map(deps.__getitem__, picked)
                ],
                [spans[r] for r in picked],
                text(n.TL_PARENT),
                repeat(""),
                repeat(""),
                repeat(""),
                repeat(()),
                [_TASK_KINDS.get(v, "") for v in text(n.TL_TYPE)],
                repeat(""),
                repeat(()),
                strict=False,
            )
            for i, record in zip(at, map(SpanRecord._make, columns), strict=True):
                out[i] = record
        for i in np.flatnonzero(~plain).tolist():
            out[i] = self.record(row_list[i])
        return out

    def blocks(self) -> list[SpanRecord]:
        """The records of the blocks, in the order they ended."""
        return [self.record(r) for r in self.order[self.is_block[self.order]].tolist()]

    def task_rows(self) -> Ints:
        """The rows of the tasks (not blocks), in the order they ended."""
        return self.order[~self.is_block[self.order]]

    def open_tasks(self) -> dict[str, dict[str, Any]]:
        """The tasks that never ended (a killed run), as the Python reader
        holds them: uid -> their lines' fields, in the order first seen."""
        if len(self.order) == self.rows:
            return {}
        ended = np.zeros(self.rows, dtype=bool)
        ended[self.order] = True
        columns = self.lists()
        return {self.uids[r]: self.fields(r, columns) for r in np.flatnonzero(~ended).tolist()}

    def bounds(self) -> tuple[float, float] | None:
        """The first creation and the last end among the tasks (epoch seconds)."""
        rows = self.task_rows()
        if not len(rows):
            return None
        ended = self.ints[n.TL_ENDED][rows]
        created = self.ints[n.TL_CREATED][rows]
        created = np.where(created == ABSENT, ended, created)
        return int(created.min()) / 1e9, int(ended.max()) / 1e9


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

    def _record(self, i: int, columns: _Lists | None = None) -> SpanRecord:
        if i >= len(self._row_list):
            return self._live[i - len(self._row_list)]
        record = self._scanned.record(self._row_list[i], columns)
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
        """The timeline's columns of these tasks (``run`` gives nothing needed here)."""
        if self._columns is None:
            made = _columns(self._scanned, self._rows, self._fill, self.__getitem__)
            if self._live:
                made = _join(made, _from_records(self._live, run.end), self.__getitem__)
            self._columns = made
        return self._columns


def _join(a: TaskColumns, b: TaskColumns, record: Callable[[int], SpanRecord]) -> TaskColumns:
    """The columns of ``a``'s tasks, then ``b``'s (whose tasks depend on none)."""
    offset = len(a.uids)

    def merged(
        codes_a: Ints, values_a: list[str], codes_b: Ints, values_b: list[str]
    ) -> tuple[Ints, list[str]]:
        values = list(values_a)
        index = {v: i for i, v in enumerate(values)}
        remap = np.array([index.setdefault(v, len(index)) for v in values_b], dtype=np.int64)
        values += list(index)[len(values) :]
        return np.concatenate([codes_a, remap[codes_b] if len(codes_b) else codes_b]), values

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
    s: Scanned, rows: Ints, fill: Mapping[str, str], record: Callable[[int], SpanRecord]
) -> TaskColumns:
    """What ``_columns._from_records`` takes from the records, from the columns."""
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
    # Dependencies among the tasks, in task order (listed order within one).
    source, target = position[s.edge_rows], position[s.edge_uids]
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
