"""A layout 2 checkpoint file straight into columns, for the campaign timeline.

Pure: bytes in, a :class:`~asyncflow.dashboard._columns.Timeline` out.

The timeline needs four lines of a task (created, resolved, started,
ended) and a few fields of each. One compiled pattern finds them in a
whole block of lines at once (the scan runs in C) and gives their fields
as bytes; a block holding any line the pattern does not take whole (a
block's or a failure's line, slots, attempts, text with escapes, a line
that is no record) is parsed line by line with ``orjson`` instead, as the
record reader does, so the result is the same either way. The tasks
whose lines all took the fast way become columns with no Python step per
task; the others are made into records exactly as the record reader
makes them, then into columns.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat
from typing import Any

import numpy as np

from asyncflow.telemetry import names as n

from ._checkpoint import CheckpointParser, loads
from ._columns import Timeline
from ._scan_columns import FastColumns, Lookup, assemble
from .model import (
    FINAL_STATES,
    STATE_COMPLETED,
    STATE_FAILED,
    Run,
    RunBuilder,
    SpanRecord,
    task_record,
)

__all__ = ["TimelineScanner"]

_TEXT = rb'[^"\\\x00-\x1f]*'  # a JSON string's text with nothing escaped
_LINE = re.compile(
    rb'\{"section":"(?:task","uid":"(' + _TEXT + rb')","(?:'
    rb'created":(\d+),"id":\d+,"span":"[0-9a-f]*"(?:,"parent":"[0-9a-f]*")?'
    rb'(?:,"backend":"' + _TEXT + rb'")?(?:,"workflow_id":"(' + _TEXT + rb')")?'
    rb',"level":"task","name":"(' + _TEXT + rb')","workflow_name":"(' + _TEXT + rb')"'
    rb',"type":"' + _TEXT + rb'","cpus":(\d+),"gpus":(\d+)\}\n'
    rb"|(resolved|started)\":(\d+)\}\n"
    rb'|ended":(\d+),"result":"(\w+)","status":"(\w*)"'
    rb'(?:,"depends_on":\[((?:"' + _TEXT + rb'"(?:,"' + _TEXT + rb'")*)?)\])?\}\n'
    rb'|assigned":(\d+),"slots":\[((?:"' + _TEXT + rb'"(?:,"' + _TEXT + rb'")*)?)\]'
    rb',"cpus":(\d+),"gpus":(\d+)\}\n'
    rb')|(span|event|metric|header)"([^\n]*)\n)'
)
_GROUPS = 19
# The fields of each kind that are numbers (positions after the uid).
_CREATED_INTS = frozenset({1, 5, 6})
_ENDED_INTS = frozenset({1})
_ASSIGNED_INTS = frozenset({1, 3, 4})
# A workflow's span line as the writer writes it (model.span_record of it, below).
_WORKFLOW = re.compile(
    rb'\{"section":"span","name":"' + n.LEVEL_WORKFLOW.encode() + rb" (" + _TEXT + rb')"'
    rb',"span_id":"([0-9a-f]*)","parent_span_id":(?:"([0-9a-f]*)"|null)'
    rb',"start_ns":(\d+),"end_ns":(\d+),"status_code":"(\w*)","status_description":"('
    + _TEXT
    + rb')","attributes":\{"'
    + n.LEVEL.encode()
    + rb'":"workflow","'
    + n.WORKFLOW_ID.encode()
    + rb'":"('
    + _TEXT
    + rb')","'
    + n.WORKFLOW_NAME.encode()
    + rb'":"('
    + _TEXT
    + rb')","'
    + n.WORKFLOW_RESULT.encode()
    + rb'":"(\w*)"\},"events":\[\]\}'
)
# Lines the pattern skips on purpose: the timeline needs nothing of them.
_SKIPPED = (b'","queued":', b'","submitted":')
_RESOLVED = b"resolved"
_NO_DEPS = b""


def _seconds(t_ns: int) -> float:
    whole, frac = divmod(t_ns, 1_000_000_000)
    return float(f"{whole}.{frac:09d}")


def _ints(values: Iterable[bytes]) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.fromiter(map(int, values), np.int64)


def _workflow(fields: tuple[bytes, ...]) -> SpanRecord:
    """The record ``model.span_record`` makes of a workflow span line that ``_WORKFLOW`` took."""
    name, span, parent, start, end, code, text, uid, kind, result = (
        f.decode("utf-8", "replace") for f in fields
    )
    if result not in FINAL_STATES:
        result = STATE_FAILED if code == n.STATUS_ERROR else STATE_COMPLETED
    return SpanRecord(
        uid=uid or span,
        level=n.LEVEL_WORKFLOW,
        name=name,
        workflow_id=uid,
        workflow_type=kind,
        state=result,
        created=int(start) / 1e9,
        finished=int(end) / 1e9,
        message=text,
        span_id=span,
        parent_id=parent,
    )


class TimelineScanner:
    """Takes a layout 2 file's complete lines, block by block; :meth:`timeline` gives the columns.

    Args:
        builder: receives everything but the tasks (spans, events, metrics, blocks).
    """

    def __init__(self, builder: RunBuilder) -> None:
        self.builder = builder
        self.parser = CheckpointParser(builder)
        # Lines that took the fast way, per kind: uids, then a column per
        # field (text as bytes; numbers as arrays, one per block until joined).
        self._created: list[Any] = [[] for _ in range(7)]
        self._steps: dict[bytes, list[Any]] = {
            b"resolved": [[], []],
            b"started": [[], []],
        }
        self._ended: list[Any] = [[] for _ in range(5)]
        self._assigned: list[Any] = [[] for _ in range(5)]  # uid, t, slots, cpus, gpus
        # File order of the created and ended lines (either way), for the task order.
        self._created_order: list[bytes] = []
        self._ended_order: list[bytes] = []
        # Tasks with a line that took the slow way: their lines' fields in order.
        self._slow: dict[bytes, list[dict[str, Any]]] = {}
        self.blocks = {"fast": 0, "slow": 0}  # how the blocks fed were read
        self._intern: dict[bytes, bytes] = {}

    # ------------------------------------------------------------------ input
    def feed(self, block: bytes) -> None:
        """Take complete lines (``block`` ends with a newline, or is empty)."""
        found = _LINE.findall(block)
        columns = list(zip(*found, strict=False)) if found else [()] * _GROUPS
        other = columns[17]
        skipped = sum(block.count(s) for s in _SKIPPED)
        if any(other):
            text = b"\n".join(compress(columns[18], other))
            skipped -= sum(text.count(s) for s in _SKIPPED)
        if len(found) + skipped != block.count(b"\n"):
            self.blocks["slow"] += 1
            self._feed_slowly(block)
            return
        self.blocks["fast"] += 1
        # Repeated text (uids on every line of a task, workflow ids, names) is
        # kept once; numbers become arrays at once: a million tasks fit.
        keep = self._intern.setdefault
        uid = list(map(keep, columns[0], columns[0]))
        self._take(self._created, uid, columns[1:7], columns[1], _CREATED_INTS)
        self._created_order.extend(compress(uid, columns[1]))
        steps = columns[7]
        for key, (uids, times) in self._steps.items():
            pick = list(map(operator.eq, steps, repeat(key)))
            uids.extend(compress(uid, pick))
            times.append(_ints(compress(columns[8], pick)))
        self._take(self._ended, uid, columns[9:13], columns[9], _ENDED_INTS)
        self._ended_order.extend(compress(uid, columns[9]))
        self._take(self._assigned, uid, columns[13:17], columns[13], _ASSIGNED_INTS)
        self.parser.records += len(found) + skipped - sum(map(bool, other))
        for section, rest in compress(zip(other, columns[18], strict=False), other):
            self._other(b'{"section":"' + section + b'"' + rest)

    def _take(
        self,
        into: list[Any],
        uid: list[bytes],
        fields: Sequence[tuple[Any, ...]],
        pick: tuple[bytes, ...],
        numbers: frozenset[int],
    ) -> None:
        """The lines of one kind (``pick``: a field every such line has): uid, then fields."""
        into[0].extend(compress(uid, pick))
        keep = self._intern.setdefault
        for at, column in enumerate(fields, 1):
            chosen = compress(column, pick)
            if at in numbers:
                into[at].append(_ints(chosen))
            else:
                into[at].extend(map(keep, chosen, compress(column, pick)))

    def _other(self, line: bytes) -> None:
        """A line that is not a task line: a workflow's span takes a short cut."""
        found = _WORKFLOW.fullmatch(line)
        if found is not None:
            self.parser.records += 1
            self.builder.add_record(_workflow(found.groups(b"")))
            return
        text = line.decode("utf-8", errors="replace")
        try:
            record = loads(text)
        except (ValueError, RecursionError):
            self.parser.bad(text)
            return
        self.parser.other(record, text)

    def _feed_slowly(self, block: bytes) -> None:
        """Every line of ``block`` parsed alone, as the record reader parses it."""
        slow = self._slow
        for raw in block.split(b"\n")[:-1]:
            line = raw.decode("utf-8", errors="replace")
            try:
                fields = loads(line)
                uid = fields[n.TL_UID] if fields[n.SECTION] == n.SECTION_TASK else None
            except (ValueError, RecursionError):
                if line.strip():
                    self.parser.bad(line)
                continue
            except (TypeError, KeyError, IndexError):
                uid = None
            if uid is None:
                self.parser.other(fields, line)
                continue
            if type(uid) is not str:
                self.parser.bad(line)
                continue
            self.parser.records += 1
            key = uid.encode("utf-8", errors="surrogateescape")
            slow.setdefault(key, []).append(fields)
            if n.TL_CREATED in fields:
                self._created_order.append(key)
            if n.TL_ENDED in fields:
                self._ended_order.append(key)

    # ------------------------------------------------------------------ output
    def timeline(self, full: Callable[[], Run]) -> Timeline:
        """The columns of the tasks read so far, and the rest of the run.

        Args:
            full: reads the whole run as records, for the views that need them.
        """
        self._join()
        finished = dict.fromkeys(self._ended_order)
        live = [u for u in dict.fromkeys(self._created_order) if u not in finished]
        at = Lookup(self)
        slow = {u: self._merged(u, at) for u in (*finished, *live) if u in self._slow}
        fast_done = [u for u in finished if u not in slow]
        fast_live = [u for u in live if u not in slow]
        fast = FastColumns(self, at, fast_done, fast_live)
        builder = self.builder
        if fast.first is not None and fast.last is not None:
            builder.seen_between(fast.first, fast.last)
        for uid, task in slow.items():
            if uid in finished:
                try:
                    builder.add_record(task_record(task))
                except (TypeError, ValueError, AttributeError):  # a field of the wrong type
                    self.parser.bad(str(task))
        self.parser.add_live_tasks(
            {u.decode("utf-8", "replace"): slow[u] for u in live if u in slow}
        )
        run = builder.snapshot()
        records = {t.uid: t for t in run.tasks}
        order = [
            u
            for u in (*finished, *live)
            if u not in slow or u.decode("utf-8", "replace") in records
        ]
        return assemble(run, order, fast, records, at, self, full)

    def _join(self) -> None:
        """The numbers of each kind of fast line in one array per field."""

        def joined(parts: Any) -> Any:
            if isinstance(parts, np.ndarray):
                return parts  # joined before
            if parts and isinstance(parts[0], np.ndarray):
                return np.concatenate(parts)
            return parts if parts else np.zeros(0, np.int64)

        for columns, numbers in (
            (self._created, _CREATED_INTS),
            (self._ended, _ENDED_INTS),
            (self._assigned, _ASSIGNED_INTS),
        ):
            for at in numbers:
                columns[at] = joined(columns[at])
        for pair in self._steps.values():
            pair[1] = joined(pair[1])

    def _merged(self, uid: bytes, at: Lookup) -> dict[str, Any]:
        """All the fields of a task with a slow line, as the record reader merges them."""
        task = at.fields(uid)
        attempts: list[tuple[Any, Any]] = []
        for fields in self._slow[uid]:
            task.update(fields)
            if n.TL_ATTEMPT_ENDED in fields:
                attempts.append((fields[n.TL_ATTEMPT_ENDED], fields.get(n.TL_ATTEMPT) or {}))
        if attempts:
            task["attempts"] = attempts
        return task
