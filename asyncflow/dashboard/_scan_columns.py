"""The columns of a scanned checkpoint file: the fast tasks' arrays, the slow tasks' records.

Pure: what :class:`~asyncflow.dashboard._scan.TimelineScanner` collected in,
a :class:`~asyncflow.dashboard._columns.Timeline` out. Tasks all of whose
lines took the fast way become columns by whole-array operations; the
others come as the records the record reader makes of them.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncflow.telemetry import names as n

from . import compute as c
from ._checkpoint import CheckpointParser, loads
from ._columns import STATUS_CODE, Timeline, timeline_of
from .model import (
    FINAL_STATES,
    STATE_COMPLETED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_RUNNING,
    STATE_WAITING,
    Run,
    RunBuilder,
    SpanRecord,
    task_record,
)

if TYPE_CHECKING:
    from ._scan import TimelineScanner

__all__ = ["FastColumns", "Lookup", "assemble"]

_RESOLVED = b"resolved"


def _seconds(t_ns: int) -> float:
    """Epoch nanoseconds as the float the record reader makes of a live task's time."""
    whole, frac = divmod(t_ns, 1_000_000_000)
    return float(f"{whole}.{frac:09d}")


class Lookup:
    """Where each uid's last fast line of each kind is (later lines win, as in a merge)."""

    def __init__(self, scanner: TimelineScanner) -> None:
        self.scanner = scanner
        self.created = dict(zip(scanner._created[0], range(len(scanner._created[0])), strict=False))
        self.ended = dict(zip(scanner._ended[0], range(len(scanner._ended[0])), strict=False))
        self.assigned = dict(
            zip(scanner._assigned[0], range(len(scanner._assigned[0])), strict=False)
        )
        self.steps = {
            key: dict(zip(uids, range(len(uids)), strict=False))
            for key, (uids, _) in scanner._steps.items()
        }

    def fields(self, uid: bytes) -> dict[str, Any]:
        """The fields of ``uid``'s fast lines, as its lines' dicts would have them."""
        scanner = self.scanner
        out: dict[str, Any] = {}
        i = self.created.get(uid)
        if i is not None:
            _, t, wf, name, wf_name, cpus, gpus = (col[i] for col in scanner._created)
            out[n.TL_CREATED] = int(t)
            if wf:
                out[n.TL_WORKFLOW_ID] = wf.decode("utf-8", "replace")
            out[n.TL_LEVEL] = n.LEVEL_TASK
            out[n.TL_NAME] = name.decode("utf-8", "replace")
            out[n.TL_WORKFLOW_NAME] = wf_name.decode("utf-8", "replace")
            out[n.TL_CPUS], out[n.TL_GPUS] = int(cpus), int(gpus)
        for key, (_, times) in scanner._steps.items():
            j = self.steps[key].get(uid)
            if j is not None:
                out[key.decode()] = int(times[j])
        j = self.assigned.get(uid)
        if j is not None:
            _, t, slots, cpus, gpus = (col[j] for col in scanner._assigned)
            out[n.TL_ASSIGNED] = int(t)
            out[n.TL_SLOTS] = loads(b"[" + slots + b"]")
            out[n.TL_CPUS], out[n.TL_GPUS] = int(cpus), int(gpus)
        j = self.ended.get(uid)
        if j is not None:
            _, t, result, status, deps = (col[j] for col in scanner._ended)
            out[n.TL_ENDED] = int(t)
            out[n.TL_RESULT] = result.decode()
            out[n.TL_STATUS] = status.decode()
            if deps:
                out[n.TL_DEPENDS_ON] = loads(b"[" + deps + b"]")
        out[n.TL_UID] = uid.decode("utf-8", "replace")
        return out

    def index(self, table: dict[bytes, int], uids: list[bytes]) -> np.ndarray[Any, Any]:
        """Each uid's line in ``table`` (-1: none)."""
        return np.fromiter(map(table.get, uids, repeat(-1)), np.int64, len(uids))


_RESULTS = {r.encode(): r for r in FINAL_STATES}


def _state_code(result: bytes, status: bytes) -> int:
    """A finished task's status code from its result (its status when the result is unknown)."""
    state = _RESULTS.get(result)
    if state is None:
        state = STATE_FAILED if status == n.STATUS_ERROR.encode() else STATE_COMPLETED
    return STATUS_CODE[state]


class FastColumns:
    """The columns of the tasks all of whose lines took the fast way."""

    def __init__(
        self, scanner: TimelineScanner, at: Lookup, done: list[bytes], live: list[bytes]
    ) -> None:
        self.uids = [*done, *live]
        self.done = len(done)
        created_cols, ended_cols = scanner._created, scanner._ended
        uids = self.uids
        ci = at.index(at.created, uids)
        has = ci >= 0
        take = np.where(has, ci, 0)
        created_ns = (
            created_cols[1][take] if len(created_cols[1]) else np.zeros(len(uids), np.int64)
        )
        ei = at.index(at.ended, done)
        ended_ns = ended_cols[1][ei] if len(ei) else np.zeros(0, np.int64)
        times: dict[bytes, np.ndarray[Any, Any]] = {}
        for key, (_, values) in scanner._steps.items():
            si = at.index(at.steps[key], uids)
            found = (
                values[np.where(si >= 0, si, 0)] if len(values) else np.zeros(len(uids), np.int64)
            )
            times[key] = np.where(si >= 0, found, -1)
        count = len(uids)
        self.created = np.empty(count)
        self.resolved = np.full(count, np.nan)
        self.started = np.full(count, np.nan)
        self.finished = np.full(count, np.nan)
        self.status = np.empty(count, dtype=np.int8)
        d = self.done
        # Finished: as model.task_record (a missing created line: created at the end).
        self.created[:d] = np.where(has[:d], created_ns[:d], ended_ns) / 1e9
        self.finished[:d] = ended_ns / 1e9
        for key, column in ((_RESOLVED, self.resolved), (b"started", self.started)):
            step = times[key][:d]
            column[:d] = np.where(step > 0, step / 1e9, np.nan)
        ends = ei.tolist()
        pairs = list(zip(ended_cols[2], ended_cols[3], strict=True))
        codes = {pair: _state_code(*pair) for pair in set(pairs)}
        state_of_line = np.fromiter(map(codes.__getitem__, pairs), np.int8, len(pairs))
        self.status[:d] = state_of_line[ei] if d else state_of_line[:0]
        self.deps = list(map(ended_cols[4].__getitem__, ends))
        # Live: as CheckpointParser's live tasks (times through their decimal text).
        for k in range(d, count):
            self.created[k] = _seconds(int(created_ns[k]))
            r, s = int(times[_RESOLVED][k]), int(times[b"started"][k])
            if r > 0:
                self.resolved[k] = _seconds(r)
            if s > 0:
                self.started[k] = _seconds(s)
            code = STATE_RUNNING if s > 0 else STATE_QUEUED if r > 0 else STATE_WAITING
            self.status[k] = STATUS_CODE[code]
        self.cpus = np.where(has, created_cols[5][take] if len(created_cols[5]) else 1, 1)
        self.gpus = np.where(has, created_cols[6][take] if len(created_cols[6]) else 0, 0)
        # Slots given (resource-aware backends): their line's cpus and gpus
        # replace the asked ones, and the slots held are counted per kind.
        self.slots: dict[int, tuple[str, ...]] = {}
        self.assigned_live = np.zeros(0, np.int64)  # when live tasks were given slots
        assigned_cols = scanner._assigned
        ai = at.index(at.assigned, uids)
        given = np.flatnonzero(ai >= 0)
        if len(given):
            lines = ai[given]
            self.cpus[given] = assigned_cols[3][lines]
            self.gpus[given] = assigned_cols[4][lines]
            texts = list(map(assigned_cols[2].__getitem__, lines.tolist()))
            held = np.flatnonzero(np.fromiter(map(bool, texts), bool, len(texts)))
            for column, kind in ((self.cpus, n.KIND_CPU), (self.gpus, n.KIND_GPU)):
                mark = f'"{kind}:'.encode()
                counts = np.fromiter(map(operator.methodcaller("count", mark), texts), np.int64)
                column[given[held]] = counts[held]
            for k in held.tolist():
                self.slots[int(given[k])] = tuple(loads(b"[" + texts[k] + b"]"))
            self.assigned_live = assigned_cols[1][lines][given >= d]
        # The workflow id and name of each task, as codes of distinct pairs.
        named = list(zip(created_cols[2], created_cols[4], strict=True))
        distinct = dict.fromkeys([(b"", b""), *named])
        self.pairs = [
            (w.decode("utf-8", "replace"), k.decode("utf-8", "replace")) for w, k in distinct
        ]
        pair_code = dict(zip(distinct, range(len(distinct)), strict=True))
        of_line = np.fromiter(map(pair_code.__getitem__, named), np.int64, len(named))
        self.pair = np.where(has, of_line[take] if len(named) else 0, 0)
        # What the run's start and end take from these tasks.
        seen = np.concatenate(
            (
                self.created,
                self.finished[:d],
                self.resolved[d:],
                self.started[d:],
                [_seconds(int(t)) for t in self.assigned_live.tolist()],
            )
        )
        seen = seen[~np.isnan(seen) & (seen != 0)]
        self.first = float(seen.min()) if len(seen) else None
        self.last = float(seen.max()) if len(seen) else None


def assemble(
    run: Run,
    order: list[bytes],
    fast: FastColumns,
    records: dict[str, SpanRecord],
    at: Lookup,
    scanner: TimelineScanner,
    full: Callable[[], Run],
) -> Timeline:
    """The fast tasks' columns and the slow tasks' records, in the record reader's order."""
    count = len(order)
    position = dict(zip(order, range(count), strict=False))
    fast_at = np.fromiter(map(position.__getitem__, fast.uids), np.int64, len(fast.uids))
    slow = [u for u in order if u in scanner._slow]
    slow_records = [records[u.decode("utf-8", "replace")] for u in slow]
    part = timeline_of(dataclasses.replace(run, tasks=tuple(slow_records)))
    slow_at = np.fromiter(map(position.__getitem__, slow), np.int64, len(slow))

    def column(fast_values: Any, slow_values: Any, dtype: Any) -> Any:
        out = np.empty(count, dtype=dtype)
        out[fast_at] = fast_values
        out[slow_at] = slow_values
        return out

    # Rows: the workflow instance of each task, and each instance's type.
    keys_of_blocks = c.row_key(run)
    known = c._row_types(run, keys_of_blocks)
    workflow_types = {w.uid: w.workflow_type for w in run.workflows}
    key_index: dict[str, int] = {}
    type_index: dict[str, int] = {"": 0}
    pair_key, pair_type = [], []
    for wf, kind in fast.pairs:
        key = keys_of_blocks.get(wf, wf) or c.NO_WORKFLOW
        pair_key.append(key_index.setdefault(key, len(key_index)))
        kind = kind or workflow_types.get(wf, "")
        pair_type.append(type_index.setdefault(kind, len(type_index)))
    slow_key = [key_index.setdefault(part.keys[k], len(key_index)) for k in part.key_of.tolist()]
    slow_type = [type_index.setdefault(r.workflow_type, len(type_index)) for r in slow_records]
    key_of = column(
        np.array(pair_key, dtype=np.int64)[fast.pair], np.array(slow_key, dtype=np.int64), np.int64
    )
    type_of = column(
        np.array(pair_type, dtype=np.int64)[fast.pair],
        np.array(slow_type, dtype=np.int64),
        np.int64,
    )
    names = list(key_index)
    types = list(type_index)
    key_types = [known.get(k, "") for k in names]
    typed = np.flatnonzero(type_of > 0)
    first_keys, first = np.unique(key_of[typed], return_index=True)
    for k, i in zip(first_keys.tolist(), typed[first].tolist(), strict=True):
        key_types[k] = key_types[k] or types[type_of[i]]
    # Dependencies: a fast task's depends_on text is one uid, mostly.
    done = fast_at[: fast.done]
    has = list(map(bool, fast.deps))
    texts = list(compress(fast.deps, has))
    dependent = done[np.array(has, dtype=bool)] if len(has) else done
    many = list(map(operator.contains, texts, repeat(b'","')))
    single = [text[1:-1] for text in texts]
    target = np.fromiter(map(position.get, single, repeat(-1)), np.int64, len(single))
    one = ~np.array(many, dtype=bool) & (target >= 0) if len(many) else target >= 0
    sources, targets = dependent[one].tolist(), target[one].tolist()
    for i, text in zip(dependent.tolist(), texts, strict=True):
        if b'","' in text:
            for dep in loads(b"[" + text + b"]"):
                j = position.get(dep.encode())
                if j is not None:
                    sources.append(i)
                    targets.append(j)
    for i, slow_record in zip(slow_at.tolist(), slow_records, strict=True):
        for dep in slow_record.depends_on:
            j = position.get(dep.encode())
            if j is not None:
                sources.append(i)
                targets.append(j)
    uids = list(map(bytes.decode, order, repeat("utf-8"), repeat("replace")))
    slots = {int(slow_at[i]): s for i, s in part.slots.items()}
    slots.update({int(fast_at[i]): s for i, s in fast.slots.items()})

    def record(i: int) -> SpanRecord:
        uid = uids[i]
        found = records.get(uid)
        if found is not None:
            return found
        fields = at.fields(order[i])
        if n.TL_ENDED in fields:
            made = task_record(fields)
        else:
            builder = RunBuilder("")
            CheckpointParser(builder).add_live_tasks({uid: fields})
            made = builder.snapshot().tasks[0]
        if not made.workflow_type and made.workflow_id in workflow_types:
            made = made._replace(workflow_type=workflow_types[made.workflow_id])
        return made

    return Timeline(
        run=dataclasses.replace(run, tasks=()),
        uids=uids,
        keys=names,
        key_types=key_types,
        key_of=key_of,
        created=column(fast.created, part.created, np.float64),
        resolved=column(fast.resolved, part.resolved, np.float64),
        started=column(fast.started, part.started, np.float64),
        finished=column(fast.finished, part.finished, np.float64),
        status=column(fast.status, part.status, np.int8),
        cpus=column(fast.cpus, part.cpus, np.int64),
        gpus=column(fast.gpus, part.gpus, np.int64),
        slots=slots,
        edges=(np.array(sources, dtype=np.int64), np.array(targets, dtype=np.int64)),
        record=record,
        full=full,
    )
