"""The critical path of a run and its slot lanes: plain numbers for the figures.

Pure: records in, dataclasses out; no plotly, no I/O. Times are epoch
seconds, as in the records.

The critical path follows dependencies back from the task that ended last:
at each step, the dependency that ended last is the one the task waited
for. Its makespan breakdown splits the time from the first task's creation
to the last task's end into the run time and queue wait of the tasks on the
path, and the rest (dependency wait: time the path spent waiting for
dependencies to be resolved, or before its first task was created).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import defaultdict
from collections.abc import Iterable

from asyncflow.telemetry import names as n

from .compute import level_over_time
from .model import Run, SpanRecord

__all__ = [
    "CriticalPath",
    "Lane",
    "Lanes",
    "critical_path",
    "slot_lanes",
    "waiting_for_slots",
]


@dataclasses.dataclass(frozen=True)
class CriticalPath:
    """The chain of tasks that set the makespan, first to last, and where the time went."""

    tasks: tuple[SpanRecord, ...]
    makespan: float
    run_time: float
    queue_wait: float
    dependency_wait: float

    @property
    def uids(self) -> frozenset[str]:
        """The uids on the path."""
        return frozenset(t.uid for t in self.tasks)

    def breakdown(self) -> str:
        """``"makespan 12.0 s: run time 9.0 s, queue wait 2.0 s, dependency wait 1.0 s"``."""
        return (
            f"makespan {self.makespan:.3f} s along {len(self.tasks)} task(s): "
            f"{n.PHASE_RUN_TIME} {self.run_time:.3f} s, "
            f"{n.PHASE_QUEUE_WAIT} {self.queue_wait:.3f} s, "
            f"{n.PHASE_DEPENDENCY_WAIT} {self.dependency_wait:.3f} s"
        )


def critical_path(run: Run) -> CriticalPath | None:
    """The critical path of the tasks that ended (``None`` when none has)."""
    by_uid: dict[str, SpanRecord] = {}
    last: SpanRecord | None = None
    end = -1.0
    origin = float("inf")
    for t in run.tasks:  # one pass: this runs on every timeline of 100,000 tasks
        if t.created < origin:
            origin = t.created
        finished = t.finished
        if finished is not None:
            by_uid[t.uid] = t
            if finished > end or (finished == end and last is not None and t.uid > last.uid):
                end, last = finished, t
    if last is None:
        return None
    path = [last]
    seen = {last.uid}
    current = last
    while True:
        deps = [by_uid[d] for d in current.depends_on if d in by_uid and d not in seen]
        if not deps:
            break
        current = max(deps, key=lambda t: (t.finished or 0.0, t.uid))
        seen.add(current.uid)
        path.append(current)
    path.reverse()
    makespan = end - origin
    run_time = sum((t.finished or 0.0) - t.started for t in path if t.started is not None)
    queue = 0.0
    for t in path:
        if t.started is not None:
            ready = t.resolved if t.resolved is not None else t.started
            queue += max(0.0, t.started - ready)
    return CriticalPath(
        tasks=tuple(path),
        makespan=makespan,
        run_time=run_time,
        queue_wait=queue,
        dependency_wait=max(0.0, makespan - run_time - queue),
    )


@dataclasses.dataclass(frozen=True)
class Lane:
    """One slot of one backend and the tasks that held it: ``(task, start, end)``.

    ``slot`` is the backend's name for it (``"gpu:1"``); ``label`` is what a
    row shows: the slot, after the backend's name when the run has several
    backends (``"b gpu:1"``).
    """

    backend: str
    slot: str
    label: str
    spans: tuple[tuple[SpanRecord, float, float], ...]


@dataclasses.dataclass(frozen=True)
class Lanes:
    """Every slot lane of a run; ``inferred``: no slots were recorded, lanes were packed.

    ``backends``: the backends the lanes belong to, in lane order.
    """

    lanes: tuple[Lane, ...]
    inferred: bool
    backends: tuple[str, ...] = ()


def _lane_order(key: tuple[str, str]) -> tuple[str, int, str, int]:
    backend, slot = key
    kind, _, index = slot.partition(":")
    order = {n.KIND_GPU: 0, n.KIND_CPU: 1}.get(kind, 2)
    return backend, order, kind, int(index) if index.isdigit() else -1


def slot_lanes(run: Run) -> Lanes:
    """The tasks that ran, by the slot they held.

    A task is drawn on each slot it was assigned, once per attempt for a
    task with retries, each attempt on its own slots when they were recorded
    (:meth:`SpanRecord.runs`). When the backend assigned
    none (it is not resource-aware), lanes are packed from the requested
    ``gpus`` (else ``cpus``): each task takes the lowest free lanes of its
    kind, so the picture shows how many slots the run needed at once.

    Each backend has slots of its own: lanes are per backend and slot, so
    ``cpu:0`` of one backend and ``cpu:0`` of another are two lanes.
    """
    now = run.end
    held: dict[tuple[str, str], list[tuple[SpanRecord, float, float]]] = defaultdict(list)
    unassigned: list[tuple[SpanRecord, float, float]] = []
    for task in run.tasks:
        if task.attempts:
            for start, end, slots in task.runs(now):
                for slot in slots:
                    held[task.backend, slot].append((task, start, end))
                if not slots:
                    unassigned.append((task, start, end))
            continue
        runs = [(task, start, end) for start, end in task.held(now)]
        if task.slots:
            for slot in task.slots:
                held[task.backend, slot] += runs
        else:
            unassigned += runs
    inferred = bool(unassigned) and not held
    for key, spans in _pack(unassigned).items():
        held[key].extend(spans)
    order = sorted(held, key=_lane_order)
    backends = tuple(dict.fromkeys(backend for backend, _ in order))
    several = len(backends) > 1
    lanes = tuple(
        Lane(
            backend,
            slot,
            f"{backend or '?'} {slot}" if several else slot,
            tuple(sorted(held[backend, slot], key=lambda s: s[1])),
        )
        for backend, slot in order
    )
    return Lanes(lanes, inferred, backends)


MOST_LANES = 1024  # lanes one task takes, at most, when no slot was assigned


def _pack(
    runs: Iterable[tuple[SpanRecord, float, float]],
) -> dict[tuple[str, str], list[tuple[SpanRecord, float, float]]]:
    """Interval partitioning per backend and kind: a run takes the lowest lanes free at its start.

    Returns the runs by (backend, slot).
    """
    out: dict[tuple[str, str], list[tuple[SpanRecord, float, float]]] = defaultdict(list)
    # Per (backend, kind): (free at, lane) heaps, free lanes (a heap), lanes opened.
    busy: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    free: dict[tuple[str, str], list[int]] = defaultdict(list)
    opened: dict[tuple[str, str], int] = defaultdict(int)
    for task, start, end in sorted(runs, key=lambda r: (r[1], r[0].uid)):
        kind = n.KIND_GPU if task.gpus else n.KIND_CPU
        group = (task.backend, kind)
        # At most MOST_LANES each: a count from a broken file (2**62 cpus)
        # would otherwise open lanes for ever.
        count = min(max(1, task.gpus if task.gpus else task.cpus), MOST_LANES)
        heap, spare = busy[group], free[group]
        while heap and heap[0][0] <= start:
            heapq.heappush(spare, heapq.heappop(heap)[1])
        for _ in range(count):
            if spare:
                lane = heapq.heappop(spare)
            else:
                lane = opened[group]
                opened[group] += 1
            heapq.heappush(heap, (end, lane))
            out[task.backend, f"{kind}:{lane}"].append((task, start, end))
    return out


def waiting_for_slots(run: Run) -> tuple[list[float], list[int]]:
    """How many tasks were in their queue wait (resolved, not started) over time.

    Returns step times (seconds since the session started) and counts; a
    task still queued counts until now.
    """
    deltas: dict[float, int] = defaultdict(int)
    now = run.end
    for task in run.tasks:
        if task.resolved is None:
            continue
        end = task.started if task.started is not None else task.finished or now
        if end > task.resolved:
            deltas[task.resolved - run.start] += 1
            deltas[end - run.start] -= 1
    return level_over_time(deltas, run.rel(now))
