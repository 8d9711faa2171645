"""A real run's campaign timeline, drawn from columns, is the one drawn record by record.

The run has plain tasks in chains inside workflow instances, a failure and
its cascade, a retried task, blocks, and tasks outside any workflow; it is
read whole, then as a run killed mid-write leaves it (a torn last line).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import open_source

from ..unit.test_dashboard_columns import VIEWS, assert_same_timeline


async def record_run(tmp_path: Path) -> Path:
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path
    ) as engine:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "run")
        tries = {"n": 0}

        @engine.function_task
        async def step(*_: Any) -> int:
            return 1

        @engine.function_task
        async def broken(*_: Any) -> int:
            raise ValueError("broken <b>on purpose</b>")

        @engine.function_task(retries=2)
        async def flaky() -> int:
            tries["n"] += 1
            if tries["n"] < 2:
                raise RuntimeError("first try fails")
            return tries["n"]

        @engine.block
        async def stage(x: Any) -> Any:
            return await step(step(x))

        pending: list[Any] = []
        for i in range(24):
            async with engine.workflow_scope(name=("simulate", "analyze", "train")[i % 3]):
                previous = step()
                for _ in range(6):
                    previous = step(previous)
                pending.append(previous)
                if i % 8 == 3:
                    pending.append(step(broken(previous)))  # a failure and its cascade
                if i % 8 == 5:
                    pending.append(stage(previous))
        pending += [flaky(), step(), stage(step())]  # outside any workflow
        await asyncio.gather(*pending, return_exceptions=True)
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


async def test_a_real_run_draws_the_same_from_columns(tmp_path: Path) -> None:
    path = await record_run(tmp_path)
    run = open_source(path).poll()
    states = {t.state for t in run.tasks}
    assert states == {"completed", "failed"} and run.blocks and len(run.workflows) == 24
    assert any(t.attempts for t in run.tasks)
    assert any(t.error_type == "DependencyFailureError" for t in run.tasks)
    assert_same_timeline(run, VIEWS)
    # A run killed mid-write: tasks still waiting or running, a torn last line.
    lines = path.read_bytes().splitlines(keepends=True)
    torn = tmp_path / "torn.telemetry.jsonl"
    cut = len(lines) * 2 // 3
    torn.write_bytes(b"".join(lines[:cut]) + lines[cut][:25])
    killed = open_source(torn).poll()
    assert any("incomplete" in p for p in killed.problems)
    assert any(t.finished is None for t in killed.tasks)
    assert_same_timeline(killed, VIEWS)
    assert json.loads(lines[0])["section"] == "header"
