"""What every task of one kind shares, worked out once for the recorder.

A campaign runs a great many tasks of few kinds (a task name, its type, its
backend, its workflow type, its CPUs and GPUs). Everything the recorder
derives from those alone lives here, made the first time a kind is seen:
the span name, the live-count cell of its backend, and the rows of its
histograms that a task which completes adds to. The recorder's hot path
then does no tuple building or dict lookup per transition for them.

Pure: no I/O, no SDK, no asyncio.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from . import names as n
from ._aggregate import Histograms, InstantTotals
from ._records import SHAPE

__all__ = ["TaskShape"]


class TaskShape:
    """One kind of task or block, as the recorder sees it.

    Attributes:
        id: its number in the ``Shape`` record, unique in the session.
        level: ``task`` or ``block``.
        name, kind, backend, workflow_name, cpus, gpus: what defines the kind.
        span_name: the span name of every task of the kind.
        active: ``[pending, running]`` of its backend (tasks; None for blocks).
        rows: the rows of its queue, total and run histograms for a task that
            completes, each None until first used (see :meth:`add`).
    """

    __slots__ = (
        "_hists",
        "active",
        "backend",
        "cpus",
        "gpus",
        "id",
        "instant",
        "kind",
        "level",
        "name",
        "rows",
        "sent",
        "span_name",
        "workflow_name",
    )

    def __init__(
        self,
        number: int,
        key: tuple[str, str, str, str, int, int],
        active: list[int] | None,
        hists: tuple[Histograms, Histograms, Histograms],
    ) -> None:
        name, kind, backend, workflow_name, cpus, gpus = key
        self.id = number
        self.sent = False  # its Shape record went to the checkpoint writer
        self.name = name
        self.kind = kind
        self.backend = backend
        self.workflow_name = workflow_name
        self.cpus = cpus
        self.gpus = gpus
        self.level = n.LEVEL_BLOCK if kind == n.TYPE_BLOCK else n.LEVEL_TASK
        self.span_name = f"{self.level} {name}"
        self.active = active if self.level == n.LEVEL_TASK else None
        self._hists = hists  # queue, total, run
        # Their rows for a task that completes, made when first used (a
        # series with no value is never exported).
        self.rows: list[list[Any] | None] = [None, None, None]
        # Its instant tasks' totals, counted in bulk (see instant_totals).
        self.instant: InstantTotals | None = None

    def record(self) -> tuple[Any, ...]:
        """Its ``records.Shape``."""
        return (
            SHAPE,
            self.id,
            self.level,
            self.name,
            self.kind,
            self.backend,
            self.workflow_name,
            self.cpus,
            self.gpus,
        )

    def keys(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """The series keys of the queue, total and run histograms of a task
        of this kind that completes without error."""
        name, kind, backend, wf = self.name, self.kind, self.backend, self.workflow_name
        return (
            (backend, wf),
            (name, kind, n.RESULT_COMPLETED, backend, wf, ""),
            (name, kind, n.RESULT_COMPLETED, backend, wf),
        )

    def instant_totals(self, stats: list[float]) -> InstantTotals:
        """Where its tasks that were ready as they were created and ran for
        no time leave their totals (made once; its three rows exist)."""
        queue, total, run = self.rows
        assert queue is not None and total is not None and run is not None
        if self.instant is None:
            self.instant = InstantTotals((queue, total, run), self._hists, self.keys(), stats)
        return self.instant

    def add(self, which: int, value: float) -> None:
        """Add ``value`` to the queue (0), total (1) or run (2) histogram of
        a task of this kind that completes (queue: any task that starts)."""
        hist = self._hists[which]
        row = self.rows[which]
        if row is None or hist.track:
            key = self.keys()[which]
            if hist.track:  # the series keeps raw values for an SDK reader
                hist.record(key, value)
                return
            row = self.rows[which] = hist.row(key)
        row[bisect_left(hist.bounds, value)] += 1
        row[-2] += 1
        row[-1] += value
