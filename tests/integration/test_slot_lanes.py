"""The slot lanes of a run on two resource-aware backends: a lane per backend and slot."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import figures, open_source, paths
from asyncflow.dashboard.export import chrome_trace


async def test_each_backend_has_lanes_of_its_own(tmp_path: Path) -> None:
    """DASHBOARD.md view 6: one row per slot. Backend a's cpu:0 and b's cpu:0
    are two slots: five lanes for 2 + 3 CPUs, each task alone on its lane."""
    a = await LocalExecutionBackend(cpus=2, name="a")
    b = await LocalExecutionBackend(cpus=3, name="b")
    # Every task holds its slot until all five run (they run on worker
    # threads): each takes a slot of its own.
    everyone = threading.Barrier(5, timeout=60)
    async with await WorkflowEngine.create(backend=[a, b], work_dir=tmp_path) as engine:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")

        @engine.function_task
        async def on_a() -> None:
            everyone.wait()

        @engine.function_task(backend="b")
        async def on_b() -> None:
            everyone.wait()

        await asyncio.gather(on_a(), on_a(), on_b(), on_b(), on_b())
    assert tel.checkpoint_file is not None
    run = open_source(Path(tel.checkpoint_file)).poll()
    lanes = paths.slot_lanes(run)
    # A lane per slot of each backend, each holding its one task.
    assert [
        (lane.slot, [(t.backend, t.name) for t, _, _ in lane.spans]) for lane in lanes.lanes
    ] == [
        ("cpu:0", [("a", "on_a")]),
        ("cpu:1", [("a", "on_a")]),
        ("cpu:0", [("b", "on_b")]),
        ("cpu:1", [("b", "on_b")]),
        ("cpu:2", [("b", "on_b")]),
    ]
    assert [(lane.backend, lane.slot, lane.label) for lane in lanes.lanes] == [
        ("a", "cpu:0", "a cpu:0"),
        ("a", "cpu:1", "a cpu:1"),
        ("b", "cpu:0", "b cpu:0"),
        ("b", "cpu:1", "b cpu:1"),
        ("b", "cpu:2", "b cpu:2"),
    ]
    assert lanes.backends == ("a", "b")
    fig = figures.slots_figure(run)
    assert list(fig.layout.yaxis.ticktext) == [lane.label for lane in lanes.lanes]
    # The slot tracks of the trace export: a process per backend and kind.
    events = chrome_trace(run, tracks="slot")["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"a cpu slots", "b cpu slots"} <= names
    threads = {e["tid"] for e in events if e["ph"] == "X"}
    assert len(threads) == 5
