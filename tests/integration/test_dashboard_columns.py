"""A real run's checkpoint file gives the same campaign timeline read as columns or as records.

The run has what makes lines take the slow way and what keeps them on the
fast one: plain tasks in chains inside workflow instances, a failure and
its cascade, a retried task, blocks, tasks outside any workflow; the file
is read in small blocks so both ways meet, and again with a torn last line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.dashboard import open_source
from asyncflow.dashboard._columns import timeline_of
from asyncflow.dashboard._scan import TimelineScanner
from asyncflow.dashboard.model import RunBuilder
from asyncflow.dashboard.sources import read_timeline

from ..unit.test_dashboard_columns import VIEWS, assert_columns, figure


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


def assert_same(path: Path, chunk: int) -> None:
    scanned = read_timeline(path, chunk=chunk)
    assert scanned is not None
    run = open_source(path).poll()
    assert_columns(scanned, timeline_of(run))
    for view in VIEWS:
        assert figure(scanned, **view) == figure(run, **view), view


async def test_a_real_run_reads_the_same_as_columns(tmp_path: Path) -> None:
    path = await record_run(tmp_path)
    run = open_source(path).poll()
    states = {t.state for t in run.tasks}
    assert states == {"completed", "failed"} and run.blocks and len(run.workflows) == 24
    assert any(t.attempts for t in run.tasks)
    for chunk in (4096, 20_000, 1 << 22):
        assert_same(path, chunk)
    # Both ways were taken: most blocks hold plain lines only.
    scanner = TimelineScanner(RunBuilder(str(path)))
    lines = path.read_bytes().splitlines(keepends=True)
    for start in range(0, len(lines), 20):
        scanner.feed(b"".join(lines[start : start + 20]))
    assert scanner.blocks["fast"] > scanner.blocks["slow"] > 0
    # A run killed mid-write: its last line is torn.
    torn = tmp_path / "torn.telemetry.jsonl"
    torn.write_bytes(b"".join(lines[: len(lines) * 2 // 3]) + lines[len(lines) * 2 // 3][:25])
    assert_same(torn, 4096)
    problems = read_timeline(torn, chunk=4096)
    assert problems is not None and any("incomplete" in p for p in problems.run.problems)
    assert json.loads(lines[0])["section"] == "header"
