"""``asyncflow export``: a run as Chrome trace events, for Perfetto and ``chrome://tracing``.

The Trace Event Format is a JSON object whose ``traceEvents`` list holds
complete events (``"ph": "X"``: a name, a start ``ts`` and a duration
``dur`` in microseconds, on a track ``pid``/``tid``), metadata events
(``"ph": "M"``) that name the tracks, and counter events (``"ph": "C"``).
Times count from the session start. Two layouts:

- ``workflow`` (default): a process per workflow instance, a thread per
  task, and one complete event per phase the task went through (dependency
  wait, queue wait, run time), so the phases follow each other on its track;
- ``slot``: a process per resource kind, a thread per slot, one complete
  event per task's run time on each slot it held (as the Slots tab), and a
  counter of the tasks waiting for a slot.

:func:`chrome_trace` is pure (a run in, a dict out); :func:`write_chrome_trace`
writes the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asyncflow.telemetry import names as n

from . import compute as c
from . import paths
from .model import Run, SpanRecord, status

__all__ = ["FORMATS", "TRACKS", "chrome_trace", "write_chrome_trace"]

FORMATS = ("chrome-trace",)
TRACKS = ("workflow", "slot")
_US = 1_000_000.0


def _us(run: Run, t: float) -> float:
    return round((t - run.start) * _US, 3)


def _dur(run: Run, start: float, end: float) -> float:
    """The duration from the rounded ends: one phase ends exactly where the next starts."""
    return round(max(_us(run, end) - _us(run, start), 0.0), 3)


def _meta(kind: str, pid: int, tid: int, value: Any) -> dict[str, Any]:
    return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": value}


def _args(task: SpanRecord, where: str) -> dict[str, Any]:
    args: dict[str, Any] = {
        "uid": task.uid,
        "task": task.name,
        "workflow": where,
        "state": status(task),
    }
    if task.slots:
        args["slots"] = list(task.slots)
    if task.error_type:
        args["error"] = f"{task.error_type}: {task.message}"
    return args


def _phases(task: SpanRecord, now: float) -> Iterator[tuple[str, float, float]]:
    """``(phase, start, end)`` of each main phase the task reached; an open one ends now."""
    end = task.finished if task.finished is not None else now
    ready = task.resolved if task.resolved is not None else None
    if ready is not None:
        yield n.PHASE_DEPENDENCY_WAIT, task.created, ready
        if task.started is not None:
            yield n.PHASE_QUEUE_WAIT, ready, task.started
            yield n.PHASE_RUN_TIME, task.started, end
        else:
            yield n.PHASE_QUEUE_WAIT, ready, end
    elif task.started is not None:  # a source without the resolved step
        yield n.PHASE_RUN_TIME, task.started, end
    else:
        yield n.PHASE_DEPENDENCY_WAIT, task.created, end


def _by_workflow(run: Run) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for pid, row in enumerate(c.timeline_rows(run), start=1):
        events.append(_meta("process_name", pid, 0, {"name": row.label}))
        events.append(_meta("process_sort_index", pid, 0, {"sort_index": pid}))
        for tid, task in enumerate(row.tasks, start=1):
            events.append(_meta("thread_name", pid, tid, {"name": f"{task.uid} {task.name}"}))
            events.append(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
            args = _args(task, row.label)
            for phase, start, end in _phases(task, run.end):
                events.append(
                    {
                        "ph": "X",
                        "name": task.name if phase == n.PHASE_RUN_TIME else phase,
                        "cat": phase,
                        "ts": _us(run, start),
                        "dur": _dur(run, start, end),
                        "pid": pid,
                        "tid": tid,
                        "args": args,
                    }
                )
    return events


def _by_slot(run: Run) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    rows = {t.uid: row for row in c.timeline_rows(run) for t in row.tasks}
    pids: dict[tuple[str, str], int] = {}
    lanes = paths.slot_lanes(run)
    several = len(lanes.backends) > 1
    for tid, lane in enumerate(lanes.lanes, start=1):
        kind = lane.slot.partition(":")[0]
        pid = pids.get((lane.backend, kind))
        if pid is None:
            pid = pids[lane.backend, kind] = len(pids) + 1
            name = f"{lane.backend or '?'} {kind} slots" if several else f"{kind} slots"
            events.append(_meta("process_name", pid, 0, {"name": name}))
        events.append(_meta("thread_name", pid, tid, {"name": lane.label}))
        events.append(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
        for task, start, end in lane.spans:
            row = rows.get(task.uid)
            where = row.label if row is not None else task.workflow_id
            events.append(
                {
                    "ph": "X",
                    "name": task.name,
                    "cat": (row.workflow_type if row is not None else task.workflow_type)
                    or c.NO_WORKFLOW,
                    "ts": _us(run, start),
                    "dur": _dur(run, start, end),
                    "pid": pid,
                    "tid": tid,
                    "args": _args(task, where),
                }
            )
    pid = len(pids) + 1
    events.append(_meta("process_name", pid, 0, {"name": "tasks waiting for a slot"}))
    times, values = paths.waiting_for_slots(run)
    for t, value in zip(times, values, strict=True):
        events.append(
            {
                "ph": "C",
                "name": "waiting for a slot",
                "ts": round(t * _US, 3),
                "pid": pid,
                "tid": 0,
                "args": {"tasks": value},
            }
        )
    return events


def chrome_trace(run: Run, tracks: str = "workflow") -> dict[str, Any]:
    """The run as a Trace Event Format document.

    Args:
        run: the run.
        tracks: ``"workflow"`` (a track per task, grouped by workflow instance)
            or ``"slot"`` (a track per slot).

    Raises:
        ValueError: ``tracks`` is neither.
    """
    if tracks not in TRACKS:
        raise ValueError(f"tracks must be one of {', '.join(TRACKS)}, not {tracks!r}")
    events = _by_workflow(run) if tracks == "workflow" else _by_slot(run)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "source": run.source,
            "session_start_epoch_s": run.start,
            "tracks": tracks,
            "generator": "asyncflow export",
        },
    }


def write_chrome_trace(run: Run, path: str | os.PathLike[str], tracks: str = "workflow") -> Path:
    """Write :func:`chrome_trace` of ``run`` to ``path``; returns the path."""
    document = chrome_trace(run, tracks)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        json.dump(document, out, separators=(",", ":"), ensure_ascii=False)
    return target
