"""The aggregated campaign timeline's busy slots and capacities, from columns.

Pure: a :class:`~asyncflow.dashboard._columns.Timeline` in, numbers out,
each what its record-by-record counterpart in ``compute`` gives for the same
run, by whole-array operations. Of the task records, only the retried
tasks' are read (their attempts' runs and slots).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from itertools import chain

import numpy as np

from asyncflow.telemetry import names as n

from . import compute as c
from ._columns import Floats, Ints, Timeline

__all__ = ["busy_steps", "capacities", "envelope", "slot_bounds", "steps"]


def busy_steps(tl: Timeline, kind: str) -> tuple[Floats, Ints]:
    """``compute.busy_steps`` from columns: step times (since the start) and levels."""
    run = tl.run
    count = tl.gpus if kind == n.KIND_GPU else tl.cpus
    pick = ~np.isnan(tl.started) & (count != 0)
    # A task with recorded attempts holds its slots during each attempt
    # (SpanRecord.held): few tasks, their (start, end, count) one by one.
    per_attempt = [i for i in tl.held if pick[i]]
    pick[per_attempt] = False
    runs = np.array(
        [(low, high, count[i]) for i in per_attempt for low, high in tl.held[i]], dtype=np.float64
    ).reshape(-1, 3)
    finished = tl.finished[pick]
    times = np.concatenate(
        (
            tl.started[pick] - run.start,
            np.where(np.isnan(finished), run.end, finished) - run.start,
            runs[:, 0] - run.start,
            runs[:, 1] - run.start,
        )
    )
    deltas = np.concatenate((count[pick], -count[pick], runs[:, 2], -runs[:, 2]))
    until = run.rel(run.end)
    if not len(times):
        return np.array([0.0, until] if until > 0 else [0.0]), np.zeros(
            2 if until > 0 else 1, dtype=np.int64
        )
    # The level after every change, kept at the last change of each time. A
    # stable sort: the times come as a few sorted runs, which it merges.
    order = np.argsort(times, kind="stable")
    times = times[order]
    level = np.cumsum(deltas[order]).round().astype(np.int64)
    last = np.empty(len(times), dtype=bool)
    last[-1] = True
    np.not_equal(times[1:], times[:-1], out=last[:-1])
    unique, level = times[last], level[last]
    # As compute.level_over_time: changes at or before time 0 count at 0.
    after = unique > 0
    head = level[~after][-1:] if (~after).any() else np.zeros(1, dtype=np.int64)
    out_t = np.concatenate(([0.0], unique[after]))
    out_v = np.concatenate((head, level[after]))
    if until > out_t[-1]:
        out_t = np.append(out_t, until)
        out_v = np.append(out_v, out_v[-1])
    return out_t, out_v


def envelope(times: Floats, values: Ints, max_points: int) -> c.Steps:
    """``compute.envelope`` of the steps ``times``, ``values``, by whole-array operations."""
    count = len(times)
    if count <= max_points or max_points < 2:
        return c.Steps(times.tolist(), values.tolist())
    first, last = float(times[0]), float(times[-1])
    width = (last - first) / (max_points - 1) or 1.0
    bins = ((times - first) / width).astype(np.int64)  # non-decreasing: the times are sorted
    # A bin's peak: the steps starting in it, and the step before them, which
    # holds into it (unless every step started in an earlier bin).
    start = np.searchsorted(bins, np.arange(max_points))
    peaks = np.zeros(max_points, dtype=np.int64)
    held = (start > 0) & (start < count)
    peaks[held] = values[start[held] - 1]
    firsts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    inside = np.maximum.reduceat(values, firsts)
    at = bins[firsts]
    kept = at < max_points
    at, inside = at[kept], inside[kept]
    peaks[at] = np.maximum(peaks[at], inside)
    np.maximum(peaks, 0, out=peaks)
    return c.Steps((first + np.arange(max_points) * width).tolist(), peaks.tolist())


def steps(tl: Timeline, kind: str, max_points: int) -> tuple[int, c.Steps]:
    """The most slots of ``kind`` busy at once, and its busy steps as drawn.

    Drawn: :func:`envelope` of at most about ``max_points`` steps.
    """
    times, values = busy_steps(tl, kind)
    return int(values.max()), envelope(times, values, max_points)


def slot_bounds(tl: Timeline) -> dict[str, int]:
    """Per kind, the highest slot index held by a task (in any attempt), plus one.

    ``compute`` finds it in every record; here from the assigned slots of
    every task (few distinct strings) and the records of the retried tasks
    only, whose earlier attempts may have run on other slots.
    """
    held = set(chain.from_iterable(tl.slots.values()))
    for i in tl.held:
        held.update(tl.record(i).all_slots())
    bounds: dict[str, int] = {}
    for slot in held:
        kind, colon, index = slot.partition(":")
        if colon and index.isdigit():
            bounds[kind] = max(bounds.get(kind, 0), int(index) + 1)
    return bounds


def capacities(
    tl: Timeline, given: Mapping[str, int] | None, peaks: Mapping[str, int]
) -> dict[str, c.Capacity]:
    """``compute.capacities`` (all backends) from columns.

    Args:
        tl: the timeline.
        given: capacities to use when the run recorded none.
        peaks: per kind, the most slots busy at once (:func:`steps`).
    """
    bounds = functools.cache(lambda: slot_bounds(tl))  # only for a capacity observed
    return c.capacities(
        tl.run, given, observed=lambda kind: max(peaks[kind], bounds().get(kind, 0))
    )
