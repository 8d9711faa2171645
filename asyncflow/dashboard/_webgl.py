"""The aggregated campaign timeline from columns: segments, busy slots, configuration, path.

Pure: a :class:`~asyncflow.dashboard._columns.Timeline` in, numbers and
traces (Plotly's JSON, see ``_frame``) out. Every function here gives what
its record-by-record counterpart in ``compute``, ``paths`` and ``_plot``
gives for the same run, by whole-array operations: a million tasks cost no
Python loop per task, and only a handful of task records are read (the
critical path's, those that completed without running). The busy slots
are in ``_busy``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from asyncflow.telemetry import names as n

from . import compute as c
from . import paths
from ._attempts import cache_hit_marks, cache_hit_text
from ._columns import STATUS_CODE, Floats, Ints, Rows, Timeline
from ._plot import CANCELED, CASCADE, FAILED, QUEUE, WAIT
from .model import (
    STATE_CANCELED,
    STATE_COMPLETED,
    STATE_DEPENDENCY_FAILED,
    STATE_FAILED,
    STATE_QUEUED,
    STATE_WAITING,
)

__all__ = ["configuration", "critical_path", "segment_traces"]

Trace = dict[str, Any]

PIXELS = 1_500  # large timelines are aggregated to this many pixels of time...
ROW_PIXELS = 160  # ...and this many lines of instances (a few pixels each, a sub-line per type)

PENDING = {
    STATE_WAITING: ("waiting for dependencies", WAIT),
    STATE_QUEUED: ("queued for a slot or backend", QUEUE),
}
NEVER_RAN = f"{STATE_COMPLETED}, never ran"
MARKS = {
    STATE_FAILED: ("failed", FAILED),
    STATE_DEPENDENCY_FAILED: ("skipped: a dependency failed", CASCADE),
    STATE_CANCELED: ("canceled", CANCELED),
}


def _typed(values: Floats) -> dict[str, str]:
    """``_plot.typed_array`` of float32 values, from an array."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return {"dtype": "f4", "bdata": base64.b64encode(data).decode()}


def _type_codes(types: list[str]) -> tuple[list[str], Ints]:
    """The distinct ``types``, sorted, and each one's index among them."""
    names = sorted(set(types))
    code = {t: i for i, t in enumerate(names)}
    return names, np.fromiter(map(code.__getitem__, types), np.int64, len(types))


def _span(values: Ints) -> str:
    """``compute._span_of`` the values: ``"-"``, ``"2"`` or ``"1-4"``, from their bounds."""
    if not len(values):
        return "-"
    return c._span_of((int(values.min()), int(values.max())))


def _merge(group: Ints, lo: Floats, hi: Floats, pixel: float) -> tuple[Ints, Floats, Floats]:
    """Pieces merged per group where less than a pixel apart (``_plot.merge_segments``).

    ``group`` numbers the (line, type) groups in the order they are drawn.
    Returns each segment's group, start and end, in group order, then time.
    """
    if not len(group):
        return group, lo, hi
    order = np.lexsort((hi, lo, group))
    group, lo, hi = group[order], lo[order], hi[order]
    edges = np.flatnonzero(np.diff(group)) + 1
    reach = np.empty_like(hi)
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(hi)], strict=True):
        np.maximum.accumulate(hi[a:b], out=reach[a:b])
    # Within a group, a piece starting beyond the reach of those before it
    # (plus a pixel) starts a segment; the reach so far is the last one's end.
    first = np.zeros(len(lo), dtype=bool)
    first[0] = True
    first[edges] = True
    first[1:] |= lo[1:] > reach[:-1] + pixel
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(lo)] - 1
    return group[starts], lo[starts], reach[ends]


def _xy(
    groups: list[tuple[int, str]],
    found: Ints,
    lo: Floats,
    hi: Floats,
    kinds: list[str],
    line_rows: int,
) -> dict[str, tuple[Floats, Floats]]:
    """Per type, x and y of its segments (NaN between them), as ``merge_segments`` orders them."""
    out: dict[str, tuple[list[Floats], list[Floats]]] = {}
    for g, (line_no, wf_type) in enumerate(groups):
        xs, ys = out.setdefault(wf_type, ([], []))
        take = slice(*np.searchsorted(found, [g, g + 1]))
        count = take.stop - take.start
        if not count:
            continue
        share = (kinds.index(wf_type) + 0.5) / len(kinds) if line_rows > 1 else 0.5
        row_y = line_no * line_rows + share * line_rows - 0.5
        x = np.empty((count, 3))
        x[:, 0], x[:, 1], x[:, 2] = lo[take], hi[take], np.nan
        xs.append(x.ravel())
        ys.append(np.full(count * 3, row_y))
    return {
        k: (np.concatenate(xs) if xs else np.empty(0), np.concatenate(ys) if ys else np.empty(0))
        for k, (xs, ys) in out.items()
    }


def segment_traces(
    tl: Timeline,
    rows: Rows,
    colours: Mapping[str, str],
    height: int,
    window: tuple[float, float] | None = None,
) -> tuple[list[Trace], int]:
    """The aggregated timeline's traces from columns, and the number of segments drawn."""
    run = tl.run
    line_rows = max(1, math.ceil(len(rows) / ROW_PIXELS))
    now = run.rel(run.end)
    if window is not None:
        low, high = window
        pixel = (high - low) / PIXELS
    else:
        low, high = -math.inf, math.inf
        pixel = now / PIXELS
    tasks, row = rows.tasks, rows.row
    line = row // line_rows
    names, row_type = _type_codes(rows.types)
    kind_of = row_type[row] if len(row) else row
    width_types = len(names)
    started = tl.started[tasks] - run.start
    finished = tl.finished[tasks]
    ended = np.where(np.isnan(finished), run.end, finished) - run.start
    ran = ~np.isnan(started)
    status = tl.status[tasks]

    # Groups in the order the record path meets them: every row's (line,
    # type) as its first row comes.
    pairs = line * width_types + kind_of
    row_pairs = (np.arange(len(rows)) // line_rows) * width_types + row_type
    _, at = np.unique(row_pairs, return_index=True)
    span_groups = row_pairs[np.sort(at)]
    traces: list[Trace] = []
    drawn = 0
    kinds = sorted(colours)
    sub_lines = len(kinds) if line_rows > 1 else 1
    width = max(1.0, min(12.0, 0.8 * height * line_rows / (max(len(rows), 1) * sub_lines)))

    def groups_of(order: Ints) -> list[tuple[int, str]]:
        return [(int(p) // width_types, names[int(p) % width_types]) for p in order]

    for state, (label, colour) in PENDING.items():
        pick = (status == STATUS_CODE[state]) & ~ran
        if not pick.any():
            continue
        resolved = tl.resolved[tasks][pick]
        begin = np.where(np.isnan(resolved), tl.created[tasks][pick], resolved) - run.start
        keep = (begin <= high + pixel) if now >= low - pixel else np.zeros(len(begin), bool)
        if not keep.any():
            continue
        p = pairs[pick][keep]
        _, at = np.unique(p, return_index=True)
        order = p[np.sort(at)]  # groups as their first pending task comes
        rank = np.empty(int(order.max()) + 1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        b = begin[keep]
        found, lo, hi = _merge(rank[p], b, np.maximum(now, b + pixel), pixel)
        drawn += len(found)
        xy = _xy(groups_of(order), found, lo, hi, kinds, line_rows)
        traces.append(
            {
                "hovertemplate": f"%{{x:.3f}} s, instance %{{y:.0f}}<extra>{label}</extra>",
                "legendgroup": state,
                "line": {"color": colour, "width": max(1.0, width / 3)},
                "mode": "lines",
                "name": label,
                "x": _typed(np.concatenate([v[0] for v in xy.values()])),
                "y": _typed(np.concatenate([v[1] for v in xy.values()])),
                "type": "scattergl",
            }
        )
    s0, s1 = started[ran], ended[ran]
    keep = (s1 >= low - pixel) & (s0 <= high + pixel)
    rank = np.empty(int(span_groups.max()) + 1, dtype=np.int64)
    rank[span_groups] = np.arange(len(span_groups))
    p = rank[pairs[ran][keep]]
    found, lo, hi = _merge(p, s0[keep], np.maximum(s1[keep], s0[keep] + pixel), pixel)
    drawn += len(found)
    xy = _xy(groups_of(span_groups), found, lo, hi, kinds, line_rows)
    traces += [
        {
            "hovertemplate": "%{x:.3f} s, instance %{y:.0f}<extra>%{fullData.name}</extra>",
            "legendgroup": wf_type,
            "line": {"color": colours[wf_type], "width": width},
            "mode": "lines",
            "name": wf_type or c.NO_WORKFLOW,
            "x": _typed(xy[wf_type][0]),
            "y": _typed(xy[wf_type][1]),
            "type": "scattergl",
        }
        for wf_type in sorted(xy)
    ]
    for state, (label, colour) in MARKS.items():
        pick = (status == STATUS_CODE[state]) & (ended >= low) & (ended <= high)
        if pick.any():
            traces.append(_crosses(label, state, colour, ended[pick], row[pick]))
    never = (status == STATUS_CODE[STATE_COMPLETED]) & ~ran & (ended >= low) & (ended <= high)
    traces += _never_ran(tl, tasks, row, ended, never)
    return traces, drawn


def _crosses(label: str, group: str, colour: str, x: Floats, y: npt.NDArray[Any]) -> Trace:
    """Crosses at ``x`` (seconds) on rows ``y``: tasks that ended so."""
    return {
        "hovertemplate": f"%{{x:.3f}} s, instance %{{y}}<extra>{label}</extra>",
        "legendgroup": group,
        "marker": {"color": colour, "size": 5, "symbol": "x"},
        "mode": "markers",
        "name": label,
        "x": _typed(x),
        "y": _typed(y.astype(np.float64)),
        "type": "scattergl",
    }


def _never_ran(
    tl: Timeline, tasks: Ints, row: Ints, ended: Floats, pick: npt.NDArray[np.bool_]
) -> list[Trace]:
    """Marks at their end for the ``pick`` tasks: completed ones that never ran.

    As the per-task timeline draws them: a cache hit as a hollow diamond,
    any other as a cross. Few tasks: their records are read one by one.
    """
    at = np.flatnonzero(pick).tolist()
    if not at:
        return []
    records = [tl.record(i) for i in tasks[at].tolist()]
    hit = np.array([r.cache == n.CACHE_HIT for r in records], dtype=bool)
    x, y = ended[at], row[at].astype(np.float64)
    traces: list[Trace] = []
    if hit.any():
        text = [cache_hit_text(r) for r, h in zip(records, hit.tolist(), strict=True) if h]
        marks = cache_hit_marks(x[hit].tolist(), y[hit].tolist(), text, gl=True)
        traces.append(marks.to_plotly_json())
    if not hit.all():
        traces.append(_crosses(NEVER_RAN, STATE_COMPLETED, CANCELED, x[~hit], y[~hit]))
    return traces


# ---------------------------------------------------------------- configuration
def configuration(tl: Timeline, rows: Rows) -> list[c.TypeConfig]:
    """``compute.configuration`` from columns (``rows``: the unfiltered rows)."""
    names, row_type = _type_codes(rows.types)
    task_type = np.full(len(tl), -1, dtype=np.int64)
    task_type[rows.tasks] = row_type[rows.row]
    src, dst = tl.edges
    pairs = set()
    if len(src):
        width = len(names) + 1  # codes from -1 (a task in no row) up
        seen = np.bincount((task_type[src] + 1) * width + task_type[dst] + 1)
        pairs = {(int(p) // width - 1, int(p) % width - 1) for p in np.flatnonzero(seen).tolist()}
    out = []
    instances = np.bincount(row_type, minlength=len(names))
    for i, wf_type in enumerate(names):
        mine = task_type == i
        deps = {names[b] for a, b in pairs if a == i and b != i and b >= 0}
        priority = tl.run.priorities.get(wf_type)
        out.append(
            c.TypeConfig(
                workflow_type=wf_type or c.NO_WORKFLOW,
                instances=int(instances[i]),
                tasks=int(mine.sum()),
                cpus=_span(tl.cpus[mine]),
                gpus=_span(tl.gpus[mine]),
                priority="-" if priority is None else str(priority),
                depends_on=tuple(sorted(d or c.NO_WORKFLOW for d in deps)),
            )
        )
    return out


# ---------------------------------------------------------------- critical path
def critical_path(tl: Timeline) -> tuple[paths.CriticalPath, list[int]] | None:
    """``paths.critical_path`` from columns, and the indices of its tasks.

    The walk touches only the tasks on the path.
    """
    done = np.flatnonzero(~np.isnan(tl.finished))
    if not len(done):
        return None
    finished = tl.finished
    end = float(finished[done].max())
    tied = done[finished[done] == end]
    last = int(max(tied.tolist(), key=tl.uids.__getitem__))
    src, dst = tl.edges
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    path = [last]
    seen = {tl.uids[last]}
    current = last
    while True:
        a, b = np.searchsorted(src, [current, current + 1])
        deps = [
            j for j in dst[a:b].tolist() if not math.isnan(finished[j]) and tl.uids[j] not in seen
        ]
        if not deps:
            break
        current = max(deps, key=lambda j: (finished[j], tl.uids[j]))
        seen.add(tl.uids[current])
        path.append(current)
    path.reverse()
    tasks = tuple(tl.record(i) for i in path)
    makespan = end - float(tl.created.min())
    run_time = sum((t.finished or 0.0) - t.started for t in tasks if t.started is not None)
    queue = 0.0
    for t in tasks:
        if t.started is not None:
            ready = t.resolved if t.resolved is not None else t.started
            queue += max(0.0, t.started - ready)
    critical = paths.CriticalPath(
        tasks=tasks,
        makespan=makespan,
        run_time=run_time,
        queue_wait=queue,
        dependency_wait=max(0.0, makespan - run_time - queue),
    )
    return critical, path
