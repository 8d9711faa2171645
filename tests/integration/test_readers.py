"""Readers of checkpoint files skip and count lines of the wrong shape, and
tell a run that was killed from one still running."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from asyncflow import NoopExecutionBackend, WorkflowEngine
from asyncflow.cli import main
from asyncflow.dashboard.compute import notices
from asyncflow.dashboard.sources import CheckpointSource
from asyncflow.telemetry import names, read_checkpoint

REPO = Path(__file__).resolve().parents[2]
TASKS = 3


async def recorded_run(tmp_path: Path) -> Path:
    """A finished run's checkpoint file with TASKS tasks."""
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")

    @engine.function_task
    async def t(i: int) -> int:
        return i

    await asyncio.gather(*[t(i) for i in range(TASKS)])
    await engine.shutdown()
    assert tel.checkpoint_file is not None
    return Path(tel.checkpoint_file)


def spoil(path: Path) -> int:
    """Append parseable lines of the wrong shape; returns how many."""
    lines = path.read_text().splitlines()
    span = next(
        s
        for s in read_checkpoint(path, [names.SECTION_SPAN])
        if s["attributes"].get(names.LEVEL) == names.LEVEL_TASK
    )
    bad = [
        {**span, "attributes": "a string", "span_id": "f" * 16},
        {**span, "events": "not a list", "span_id": "e" * 16},
        {**span, "start_ns": "soon", "span_id": "d" * 16},
        {"section": "event", "name": 7, "task_id": "task.000099"},
        {"section": "event", "name": "TaskStarted", "task_id": "task.000099", "event_time": "x"},
        {"section": "metric", "tasks_by_state": "x"},
        {"section": "task", "uid": 5, "ended": 1},
        {"section": "task", "uid": "task.000099", "ended": "late"},
    ]
    extra = [json.dumps(record) for record in bad] + ["[" * 5000 + "]" * 5000]
    path.write_text("\n".join(lines + extra) + "\n")
    return len(extra)


async def test_read_checkpoint_skips_and_counts_wrongly_shaped_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await recorded_run(tmp_path)
    good = len(list(read_checkpoint(path)))
    bad = spoil(path)
    with caplog.at_level(logging.WARNING, logger="asyncflow.telemetry"):
        records = list(read_checkpoint(path))
    assert len(records) == good
    assert all(isinstance(r.get("attributes", {}), dict) for r in records)
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 1 and f"skipped {bad} line(s)" in said[0], said


async def test_report_and_app_source_skip_and_count_wrongly_shaped_lines(tmp_path: Path) -> None:
    path = await recorded_run(tmp_path)
    bad = spoil(path)
    run = CheckpointSource(path).poll()
    assert len(run.tasks) == TASKS
    assert any(f"Skipped {bad} line(s)" in p for p in run.problems), run.problems
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    assert f"Skipped {bad} line(s)" in out.read_text()


KILLED = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from asyncflow import NoopExecutionBackend, WorkflowEngine

    async def main():
        work_dir = os.path.dirname(sys.argv[1])  # the test's, not the checkout
        engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=work_dir)
        await engine.start_telemetry(checkpoint_path=sys.argv[1])

        @engine.function_task
        async def t():
            return 1

        await t()
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


async def test_a_killed_run_shows_as_stopped_and_a_live_one_does_not(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "killed")],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL
    source = CheckpointSource(tmp_path / "killed")
    run = source.poll()
    deadline = asyncio.get_running_loop().time() + 30
    while not run.stopped and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # the writer finishes what it was sent, then lets go
        run = source.poll()
    assert run.stopped and not run.ended
    assert any("stopped without ending" in text for text in notices(run))

    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    try:
        await engine.start_telemetry(checkpoint_path=tmp_path / "live")
        live = CheckpointSource(tmp_path / "live").poll()
        assert not live.stopped and not live.ended
    finally:
        await engine.shutdown()
    ended = CheckpointSource(tmp_path / "live").poll()
    assert ended.ended and not ended.stopped
