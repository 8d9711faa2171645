"""Resource-aware LocalExecutionBackend: slots, CUDA_VISIBLE_DEVICES, telemetry."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine, current_slots
from asyncflow.telemetry import names, read_checkpoint

from .conftest import wait_until


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    return peak


async def test_gpu_bound_workload_respects_capacity(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(cpus=4, gpus=2)
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run", checkpoint_interval=0.05)
    seen: list[Any] = []
    tel.subscribe(
        lambda e: seen.append(e) if e.event_type == names.EVENT_RESOURCE_ASSIGNED else None
    )
    try:

        @engine.executable_task
        async def cuda(i: int) -> str:
            code = "import os, time; time.sleep(0.05); print(os.environ['CUDA_VISIBLE_DEVICES'])"
            return f'{sys.executable} -c "{code}"'

        @engine.function_task
        async def train(i: int) -> list[str]:
            await asyncio.sleep(0.02)
            return current_slots()

        @engine.function_task
        async def evaluate() -> list[str]:
            return current_slots()

        gpu = {"gpus": 1}
        async with engine.workflow_scope(name="train"):
            futures = [cuda(i, task_description=gpu) for i in range(6)]
            futures += [train(i, task_description={"gpus": 2, "cpus": 1}) for i in range(3)]
            cpu_only = [evaluate() for _ in range(4)]
            results = await asyncio.gather(*futures, *cpu_only)
        # Each executable saw exactly the GPU it was given.
        for fut, printed in zip(futures[:6], results[:6], strict=True):
            slots = engine.components[fut.uid]["description"]["slots"]
            assert printed.strip() == ",".join(s[4:] for s in slots if s.startswith("gpu:"))
        for slots in results[6:9]:
            assert sorted(s for s in slots if s.startswith("gpu")) == ["gpu:0", "gpu:1"]
            assert len([s for s in slots if s.startswith("cpu")]) == 1
        for slots in results[9:]:
            assert [s for s in slots if s.startswith("gpu")] == [] and len(slots) == 1
        points = {
            (p["attributes"][names.RESOURCE_KIND], p["attributes"][names.SLOT_STATE]): p["value"]
            for p in tel.read_metrics()
            if p["name"] == names.METRIC_RESOURCE_SLOTS
        }
        assert points == {
            ("gpu", "busy"): 0,
            ("gpu", "idle"): 2,
            ("cpu", "busy"): 0,
            ("cpu", "idle"): 4,
        }
    finally:
        await engine.shutdown()
    spans = [
        s
        for s in read_checkpoint(tel.checkpoint_file, ["span"])
        if s["attributes"].get(names.LEVEL) == "task"
    ]
    assert len(spans) == 13
    gpu_runs = []
    for span in spans:
        started = next(e["time_ns"] for e in span["events"] if e["name"] == "started")
        slots = span["attributes"][names.TASK_SLOTS]
        gpus = [s for s in slots if s.startswith("gpu")]
        assert len(gpus) == span["attributes"][names.TASK_GPUS]
        gpu_runs += [(started, span["end_ns"])] * len(gpus)
    assert max_overlap(gpu_runs) <= 2
    assert len(seen) == 13 and all(e.slots for e in seen)  # type: ignore[attr-defined]
    events = [
        r
        for r in read_checkpoint(tel.checkpoint_file, ["event"])
        if r["name"] == names.EVENT_RESOURCE_ASSIGNED
    ]
    assert len(events) == 13 and {"slots", "cpus", "gpus"} <= set(events[0])
    snapshots = [r for r in read_checkpoint(tel.checkpoint_file, ["metric"])]
    assert snapshots[0]["resource_slots"]["default/gpu/idle"] == 2


async def test_oversized_request_fails_that_task_only(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=2, gpus=1), work_dir=tmp_path
    )
    try:

        @engine.function_task
        async def t() -> str:
            return "ran"

        with pytest.raises(ValueError, match="can never be served"):
            await t(task_description={"gpus": 4})
        assert await t() == "ran"
    finally:
        await engine.shutdown()


async def test_cancel_while_waiting_for_slots(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(cpus=1)
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    gate = asyncio.Event()
    try:

        @engine.function_task
        async def hold() -> str:
            while not gate.is_set():
                await asyncio.sleep(0.005)
            return "held"

        @engine.function_task
        async def later() -> str:
            return "later"

        first = hold()
        second = later()
        while first.state != "RUNNING":
            await asyncio.sleep(0.005)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert second.cancelled()
        gate.set()
        assert await first == "held"
        pool = backend.resource_pool
        assert pool is not None
        await wait_until(lambda: pool.usage() == {"cpu": (0, 1)})  # freed right after DONE
        assert await later() == "later"
    finally:
        gate.set()
        await engine.shutdown()


async def test_slots_are_free_once_the_task_is_awaited(tmp_path: Path) -> None:
    # The final report and the release happen in one loop callback, so the
    # code that awaited a task never sees its slots still held. (Released in
    # a second callback, executables left them busy a few times in 300.)
    backend = await LocalExecutionBackend(cpus=2, gpus=1)
    engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    pool = backend.resource_pool
    assert pool is not None
    try:

        @engine.executable_task
        async def probe(i: int) -> str:
            return "true"

        @engine.function_task
        async def step(i: int) -> int:
            return i

        held = []
        for i in range(300):
            await probe(i, task_description={"gpus": 1})
            held.append(pool.usage())
            await step(i, task_description={"gpus": 1})
            held.append(pool.usage())
        assert held == [{"cpu": (0, 2), "gpu": (0, 1)}] * 600
    finally:
        await engine.shutdown()
