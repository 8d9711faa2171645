"""A running task is named in the live view before its span exists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard.sources import CheckpointSource


async def test_live_tasks_carry_name_and_workflow_type(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")
    release = asyncio.Event()
    try:

        @engine.function_task
        async def simulate() -> str:
            while not release.is_set():
                await asyncio.sleep(0.01)
            return "done"

        async with engine.workflow_scope("md-1", name="simulate"):
            running = simulate(task_description={"gpus": 1})
        source = CheckpointSource(tel.checkpoint_file)
        deadline = time.monotonic() + 20
        task = None
        while time.monotonic() < deadline:
            tasks = [t for t in source.poll().tasks if t.uid == running.uid]
            if tasks and tasks[0].state == "running":
                task = tasks[0]
                break
            await asyncio.sleep(0.05)
        assert task is not None, "the running task never showed"
        assert task.finished is None  # no span yet: all of this came from its events
        assert (task.name, task.workflow_id, task.workflow_type) == ("simulate", "md-1", "simulate")
        assert task.gpus == 1
        release.set()
        assert await running == "done"
    finally:
        release.set()
        await engine.shutdown()
