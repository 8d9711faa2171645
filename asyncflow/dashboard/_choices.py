"""What the page shows beside its figures (state chips, workflow types, instances, one
instance's records), from the timeline's columns when a reader made them.

A finished file read by the compiled scanner (``_finished``) makes a task's
record only when a view asks for it: the page's header and menus, shown on
every refresh, must not ask for all of them. For other runs (records) these
are ``compute``'s functions. Pure: no I/O, no plotly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np

from . import compute as c
from . import paths
from ._columns import STATUS_CODE, timeline_of
from .model import STATE_DEPENDENCY_FAILED, STATE_FAILED, STATUSES, Run, SpanRecord

__all__ = ["Instance", "critical_path", "instance_records", "instances", "state_counts"]

_FAILED = [STATUS_CODE[STATE_FAILED], STATUS_CODE[STATE_DEPENDENCY_FAILED]]


@dataclasses.dataclass(frozen=True)
class Instance:
    """One workflow instance (timeline row) as a menu lists it."""

    key: str
    label: str
    failed: bool  # one of its tasks shown failed (as a root failure or a cascade)


def _columnar(run: Run) -> bool:
    return getattr(run.tasks, "columns", None) is not None


def state_counts(run: Run) -> dict[str, int]:
    """``compute.count_states(run.tasks)``."""
    if not _columnar(run):
        return c.count_states(run.tasks)
    counts = np.bincount(timeline_of(run).status, minlength=len(STATUSES))
    return {s: int(counts[STATUS_CODE[s]]) for s in STATUSES}


def instances(
    run: Run, types: Collection[str] | None = None, states: Collection[str] | None = None
) -> tuple[list[str], list[Instance]]:
    """The run's workflow types (``compute.workflow_types``) and the instances
    ``compute.timeline_rows(run, types, states)`` gives, in its order."""
    if not _columnar(run):
        rows = c.timeline_rows(run)
        shown = rows if types is None and states is None else c.timeline_rows(run, types, states)
        return c.workflow_types(run, rows), [
            Instance(r.key, r.label, any(t.state == STATE_FAILED for t in r.tasks)) for r in shown
        ]
    from ._columns import rows_of

    tl = timeline_of(run)
    all_rows = rows_of(tl)
    chosen = all_rows if types is None and states is None else rows_of(tl, types, states)
    failed = np.zeros(len(chosen), dtype=bool)
    np.logical_or.at(failed, chosen.row, np.isin(tl.status[chosen.tasks], _FAILED))
    return sorted(set(all_rows.types)), [
        Instance(chosen.keys[i], chosen.label(i), bool(failed[i])) for i in range(len(chosen))
    ]


def instance_records(run: Run, key: str) -> list[SpanRecord]:
    """``compute.workflow_records(run, key)``: one instance's tasks and blocks."""
    if not _columnar(run):
        return c.workflow_records(run, key)
    tl = timeline_of(run)
    keys = c.row_key(run)
    blocks = [b for b in run.blocks if b.uid != key and keys.get(b.uid, b.uid) == key]
    if key not in tl.keys:
        tasks: list[SpanRecord] = []
    else:
        tasks = [tl.record(i) for i in np.flatnonzero(tl.key_of == tl.keys.index(key)).tolist()]
    records = blocks + tasks
    records.sort(key=lambda r: (r.created, r.uid))
    return records


def critical_path(run: Run) -> paths.CriticalPath | None:
    """``paths.critical_path(run)``."""
    if not _columnar(run):
        return paths.critical_path(run)
    from ._webgl import critical_path as from_columns

    found = from_columns(timeline_of(run))
    return found[0] if found is not None else None
