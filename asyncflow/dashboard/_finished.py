"""A finished layout 2 checkpoint file, read by the compiled scanner (``_scan.c``).

Reading a file into a record per task costs several times a bare JSON pass
over it. Once a run has ended its file no longer changes, so the scanner
reads its task lines straight into columns (a row per task, an int64 per
time, a code per repeated string) and the task records are made only when a
view asks for them (``_table.TaskTable``); the campaign timeline is drawn from
the columns (``_table``). Lines of other sections (spans, events, metrics) are few and
go to the Python reader as before.

The scanner takes only lines as the engine's writer writes them. On any
other line (:class:`Unreadable`) the caller reads the file the Python way,
which also reports such lines. The tasks of a killed run that never ended
go to the Python reader's live view (``Scanned.open_tasks``). Without the
compiled scanner (no C compiler at install), :data:`SCANNER` is ``None``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from asyncflow.telemetry import names as n

from ._columns import Ints
from ._making import EVERY_STEP_FIELDS, _strings, task_record
from .model import (
    _TASK_KINDS,
    FINAL_STATES,
    STATE_FAILED,
    SpanRecord,
)

try:
    import orjson

    from . import _scan
except ImportError:  # pragma: no cover - built at install; orjson comes with the extra
    _scan = None  # type: ignore[assignment]

__all__ = ["ABSENT", "SCANNER", "Scanned", "Unreadable", "scan"]

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


# The scanner in use: built from this source (its version and the hash of
# _scan.c beside it) and naming its columns as names.py does; a module left
# from another source is not used.
def _current(module: Any) -> bool:
    source = Path(module.__file__).with_name("_scan.c")
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:  # installed without its source: its version says enough
        digest = module.SOURCE
    return bool(
        module.VERSION == 1
        and digest == module.SOURCE
        and (module.INTS, module.CODES) == (_INTS, _CODES)
    )


SCANNER = _scan if _scan is not None and _current(_scan) else None
ABSENT = np.iinfo(np.int64).min  # a field a task has no line with
# What task_record's plain way takes (a task with all of these): the rest is its.
_EVERY_INT = tuple(k for k in EVERY_STEP_FIELDS if k in _INTS)
_EVERY_CODE = tuple(k for k in EVERY_STEP_FIELDS if k in _CODES)
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
        Unreadable: a task line as the writer never writes one (the tasks
            of a killed run that never ended are read: ``Scanned.open_tasks``).
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
        self.open_rows: dict[str, int] = {}  # uid -> row of a task that never ended

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
        self.open_rows = {self.uids[r]: r for r in np.flatnonzero(~ended).tolist()}
        return {uid: self.fields(r, columns) for uid, r in self.open_rows.items()}

    def bounds(self) -> tuple[float, float] | None:
        """The first creation and the last end among the tasks (epoch seconds)."""
        rows = self.task_rows()
        if not len(rows):
            return None
        ended = self.ints[n.TL_ENDED][rows]
        created = self.ints[n.TL_CREATED][rows]
        created = np.where(created == ABSENT, ended, created)
        return int(created.min()) / 1e9, int(ended.max()) / 1e9
