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

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

__all__ = ["Counters", "Histograms"]


class Histograms:
    """Cumulative explicit-bucket histograms keyed by an attribute tuple.

    Args:
        name: the instrument name.
        labels: the attribute keys, in the order of the key tuples.
        bounds: the bucket upper bounds (values ``<= bound`` fall in it).
    """

    __slots__ = ("bounds", "labels", "name", "pending", "series", "track")

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
        return [
            {
                "name": self.name,
                "attributes": self.attributes(key),
                "count": row[-2],
                "sum": row[-1],
                "bucket_counts": list(row[:n]),
                "explicit_bounds": list(self.bounds),
            }
            for key, row in list(self.series.items())
        ]


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
