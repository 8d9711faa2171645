"""Histogram aggregation on the hot path, without the SDK's per-call cost.

Recording a task duration through an SDK instrument costs a few
microseconds (attribute hashing, a measurement object, one storage per
reader): more than the engine spends on a no-op task. The engine aggregates
into these plain histograms instead (a dict lookup and a bisect), and keeps
the raw values only while an OpenTelemetry reader is attached; they are
replayed into the SDK instruments right before each collection, off the hot
path. Pure logic: no I/O, no SDK import.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import repeat
from operator import truediv
from typing import Any

__all__ = ["FOLD_AT", "Counters", "Histograms", "InstantTotals", "consistent"]

# Values an InstantTotals holds before the loop's thread counts them into rows.
FOLD_AT = 4096


class Histograms:
    """Cumulative explicit-bucket histograms keyed by an attribute tuple.

    Args:
        name: the instrument name.
        labels: the attribute keys, in the order of the key tuples.
        bounds: the bucket upper bounds (values ``<= bound`` fall in it).
    """

    __slots__ = ("bounds", "instant", "labels", "name", "pending", "series", "track")

    def __init__(self, name: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        # key -> [bucket counts..., count, sum]
        self.series: dict[tuple[str, ...], list[Any]] = {}
        # key -> values recorded since the last replay. Plain floats in one
        # list per series: a (value, key) tuple per value would be three
        # more objects per task for the garbage collector to scan, which
        # cost about 5 us a task at 50k tasks.
        self.pending: dict[tuple[str, ...], list[float]] = {}
        self.track = False
        # key -> the InstantTotals whose values this series counts, each
        # with whether it counts them as zero (a run histogram's).
        self.instant: dict[tuple[str, ...], list[tuple[InstantTotals, bool]]] = {}

    def record(self, key: tuple[str, ...], value: float) -> None:
        """Add one value to the series ``key``."""
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0] * (len(self.bounds) + 1) + [0, 0.0]
        row[bisect_left(self.bounds, value)] += 1
        row[-2] += 1
        row[-1] += value
        if self.track:
            values = self.pending.get(key)
            if values is None:
                values = self.pending[key] = []
            values.append(value)

    def row(self, key: tuple[str, ...]) -> list[Any]:
        """The series ``key``'s row (bucket counts..., count, sum), created
        empty if new: a hot path that keeps it adds values in place (see
        :func:`add_to_row`) while :attr:`track` is False."""
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0] * (len(self.bounds) + 1) + [0, 0.0]
        return row

    def take_pending(self) -> list[tuple[tuple[str, ...], list[float]]]:
        """The values recorded since the last call, by series (for the SDK replay)."""
        taken, self.pending = self.pending, {}
        return list(taken.items())

    def attributes(self, key: tuple[str, ...]) -> dict[str, str]:
        """The attribute dict of a key, empty values left out."""
        return {label: value for label, value in zip(self.labels, key, strict=True) if value}

    def points(self) -> list[dict[str, Any]]:
        """Every series as a plain dict (count, sum, bucket counts, bounds)."""
        n = len(self.bounds) + 1
        points = []
        for key, row in list(self.series.items()):
            now = self._row_now(key, row)
            points.append(
                {
                    "name": self.name,
                    "attributes": self.attributes(key),
                    "count": now[-2],
                    "sum": now[-1],
                    "bucket_counts": now[:n],
                    "explicit_bounds": list(self.bounds),
                }
            )
        return points

    def _row_now(self, key: tuple[str, ...], row: list[Any]) -> list[Any]:
        """A copy of ``row`` with the values its InstantTotals hold and have
        not counted into it yet (any thread)."""
        # A copy: the loop's thread may add a kind's totals meanwhile.
        instant = list(self.instant.get(key) or ())
        if not instant:
            return list(row)
        copy, held = consistent(row, [totals for totals, _ in instant])
        for values, (totals, as_zero) in zip(held, instant, strict=True):
            if values:
                _add(copy, totals.bucket_counts(values, as_zero), values, as_zero)
        return copy


class InstantTotals:
    """The total durations (ns) of the tasks of one kind that were ready as
    they were created and ran for no time (a dry run's): counted into their
    rows in bulk instead of one task at a time.

    Such a task adds its total to the queue and total histograms (it waited
    its whole time) and a zero to the run histogram and the run statistics.
    The loop's thread appends to :attr:`values` and calls :meth:`fold` when
    they reach ``FOLD_AT``; readers on any thread see the values not yet
    counted through :meth:`Histograms.points` and :func:`consistent`.

    Args:
        rows: the queue, total and run histogram rows the values count in.
        hists: the three histograms (their ``instant`` maps are told).
        keys: the three rows' series keys.
        stats: the recorder's run statistics ``[count, total, min, max]``.
    """

    __slots__ = ("bounds", "folds", "rows", "stats", "values", "zero")

    def __init__(
        self,
        rows: tuple[list[Any], list[Any], list[Any]],
        hists: tuple[Histograms, Histograms, Histograms],
        keys: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
        stats: list[float],
    ) -> None:
        self.values: list[int] = []
        # Odd while the loop's thread moves values into the rows: a reader
        # that saw it change reads again.
        self.folds = 0
        self.rows = rows
        self.bounds = hists[1].bounds
        self.zero = bisect_left(self.bounds, 0.0)
        self.stats = stats
        for hist, key, as_zero in zip(hists, keys, (False, False, True), strict=True):
            hist.instant.setdefault(key, []).append((self, as_zero))

    def fold(self) -> None:
        """Count the values held into the rows and the run statistics (the
        loop's thread only: it alone writes the rows)."""
        self.folds += 1
        try:
            values = self.values[:]
            if not values:
                return
            queue, total, run = self.rows
            counts = self.bucket_counts(values, False)
            _add(queue, counts, values, False)
            _add(total, counts, values, False)
            _add(run, self.bucket_counts(values, True), values, True)
            stats = self.stats
            stats[0] += len(values)
            if stats[2] > 0.0:
                stats[2] = 0.0
            del self.values[: len(values)]
        finally:
            self.folds += 1

    def bucket_counts(self, values: list[int], as_zero: bool) -> list[int]:
        """The bucket counts of ``values`` (ns) in seconds, or of as many zeros."""
        counts = [0] * (len(self.bounds) + 1)
        if as_zero:
            counts[self.zero] = len(values)
            return counts
        seconds = sorted(map(truediv, values, repeat(1e9)))
        below = 0
        for at, bound in enumerate(self.bounds):
            upto = bisect_right(seconds, bound)  # the values <= bound
            counts[at] = upto - below
            below = upto
        counts[-1] = len(seconds) - below
        return counts


def _add(row: list[Any], counts: list[int], values: list[int], as_zero: bool) -> None:
    """Add bucket ``counts`` of ``values`` to a row (buckets..., count, sum)."""
    for at, count in enumerate(counts):
        if count:
            row[at] += count
    row[-2] += len(values)
    if not as_zero:
        row[-1] += sum(map(truediv, values, repeat(1e9)))


def consistent(row: list[Any], instant: list[InstantTotals]) -> tuple[list[Any], list[list[int]]]:
    """A copy of ``row`` and of the values each of ``instant`` holds, taken
    while none of them was folding (then no value is in both, or in neither)."""
    while True:
        before = [totals.folds for totals in instant]
        if not any(folds & 1 for folds in before):
            copy = list(row)
            held = [totals.values[:] for totals in instant]
            if [totals.folds for totals in instant] == before:
                return copy, held
        time.sleep(0)  # the loop's thread is folding: let it finish


class Counters:
    """Monotonic counters keyed by an attribute tuple (read by observable counters).

    Args:
        name: the instrument name.
        labels: the attribute keys, in the order of the key tuples.
        unit: the instrument's unit.
    """

    __slots__ = ("labels", "name", "series", "unit")

    def __init__(self, name: str, labels: Sequence[str], unit: str) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.unit = unit
        self.series: dict[tuple[str, ...], int] = {}

    def add(self, key: tuple[str, ...], amount: int = 1) -> None:
        """Count ``amount`` more in the series ``key``."""
        self.series[key] = self.series.get(key, 0) + amount

    def points(self) -> list[dict[str, Any]]:
        """Every series as a plain dict (name, unit, attributes, value)."""
        return [
            {
                "name": self.name,
                "unit": self.unit,
                "attributes": {
                    label: value for label, value in zip(self.labels, key, strict=True) if value
                },
                "value": value,
            }
            for key, value in list(self.series.items())
        ]
