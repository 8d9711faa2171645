"""LocalExecutionBackend for real: threads, processes and subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.errors import ExecutableError

from .conftest import wait_until

ARGV_PRINTER = "import json, sys; print(json.dumps(sys.argv[1:]))"


async def make_engine(tmp_path: Path, **kwargs: Any) -> WorkflowEngine:
    backend = await LocalExecutionBackend(**kwargs)
    return await WorkflowEngine.create(backend=backend, work_dir=tmp_path)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await make_engine(tmp_path)
    try:
        yield eng
    finally:
        await eng.shutdown()


async def test_executable_gets_the_exact_argv(engine: WorkflowEngine) -> None:
    @engine.executable_task
    async def show(extra: str) -> str:
        return f"{sys.executable} -c '{ARGV_PRINTER}' 'two  spaces' \"it's\" {extra} '' \\$HOME"

    out = await show("'a \"quoted\" word'")
    assert json.loads(out) == ["two  spaces", "it's", 'a "quoted" word', "", "$HOME"]


async def test_executable_path_with_spaces(engine: WorkflowEngine, tmp_path: Path) -> None:
    tool_dir = tmp_path / "my tools"
    tool_dir.mkdir()
    tool = tool_dir / "my tool"
    tool.write_text(f"#!{sys.executable}\n{ARGV_PRINTER}\n")
    tool.chmod(0o755)

    @engine.executable_task
    async def run() -> str:
        return f'"{tool}" --verbose'

    fut = run()
    assert json.loads(await fut) == ["--verbose"]
    desc = engine.components[fut.uid]["description"]
    assert desc["executable"] == str(tool) and desc["arguments"] == ["--verbose"]


async def test_shell_cwd_env_and_failure(engine: WorkflowEngine, tmp_path: Path) -> None:
    @engine.executable_task
    async def shell() -> str:
        return 'echo "$GREETING" | tr a-z A-Z && pwd'

    @engine.executable_task
    async def fail() -> str:
        return "sh -c 'echo partial; echo broken >&2; exit 3'"

    @engine.executable_task
    async def missing() -> str:
        return "/no/such/program --flag"

    out = await shell(
        task_description={"shell": True, "cwd": str(tmp_path), "env": {"GREETING": "hi there"}}
    )
    assert out.splitlines() == ["HI THERE", str(tmp_path)]
    with pytest.raises(ExecutableError) as exc:
        await fail()
    assert exc.value.exit_code == 3
    assert exc.value.stderr == "broken\n" and exc.value.stdout == "partial\n"
    assert "exit code 3" in str(exc.value)
    # A shell line: the shell says "not found" and exits 127, as in a terminal.
    with pytest.raises(ExecutableError) as not_found:
        await missing()
    assert not_found.value.exit_code == 127
    assert "/no/such/program" in not_found.value.stderr
    # Without a shell, the program cannot be started at all.
    with pytest.raises(FileNotFoundError):
        await missing(task_description={"shell": False})


async def test_capture_stdio_writes_files_and_returns_the_path(engine: WorkflowEngine) -> None:
    @engine.executable_task(capture_stdio=True)
    async def talk() -> str:
        return "sh -c 'echo to-out; echo to-err >&2'"

    fut = talk()
    path = await fut
    work = Path(engine.backend._work_dir)
    assert path == str(work / f"{fut.uid}.stdout")
    assert Path(path).read_text() == "to-out\n"
    assert (work / f"{fut.uid}.stderr").read_text() == "to-err\n"
    assert engine.components[fut.uid]["description"]["capture_stdio"] is True


async def test_running_is_reported_when_work_really_starts(tmp_path: Path) -> None:
    release = threading.Event()
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ThreadPoolExecutor(max_workers=1)), work_dir=tmp_path
    )
    try:

        @engine.function_task
        async def hold() -> str:
            await asyncio.get_running_loop().run_in_executor(None, release.wait)
            return "held"

        first, second = hold(), hold()
        await wait_until(lambda: first.state == "RUNNING")
        assert second.state == "PENDING"  # queued behind the only worker
        release.set()
        assert await asyncio.gather(first, second) == ["held", "held"]
    finally:
        release.set()
        await engine.shutdown()


async def test_cancel_running_executable_kills_its_process_group(engine: WorkflowEngine) -> None:
    @engine.executable_task
    async def sleepy() -> str:
        # A child and a grandchild: both must die.
        return "sleep 60 & sleep 60; wait"

    fut = sleepy()
    await wait_until(lambda: fut.state == "RUNNING")
    backend = engine.backend
    await wait_until(lambda: fut.uid in backend._procs)
    proc = psutil.Process(backend._procs[fut.uid].pid)
    await wait_until(lambda: len(proc.children(recursive=True)) == 2)
    family = [proc, *proc.children(recursive=True)]
    assert fut.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        await fut
    assert fut.state == "CANCELLED"
    _, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []


async def test_cancel_running_async_function_on_a_thread(engine: WorkflowEngine) -> None:
    reached = threading.Event()
    cancelled = threading.Event()

    @engine.function_task
    async def long() -> None:
        reached.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    fut = long()
    await wait_until(reached.is_set)
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fut
    await wait_until(cancelled.is_set)


async def test_executable_concurrency_is_bounded(tmp_path: Path) -> None:
    engine = await make_engine(tmp_path, max_executables=2)
    log = tmp_path / "log"
    script = (
        "import os, sys, time; f = open(sys.argv[1], 'a'); "
        "f.write(f'start {time.monotonic()}\\n'); f.flush(); time.sleep(0.15); "
        "f.write(f'end {time.monotonic()}\\n')"
    )
    try:

        @engine.executable_task
        async def work() -> str:
            return f'{sys.executable} -c "{script}" {log}'

        await asyncio.gather(*(work() for _ in range(6)))
    finally:
        await engine.shutdown()
    events = sorted(
        (float(t), 1 if kind == "start" else -1)
        for kind, t in (line.split() for line in log.read_text().splitlines())
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2
    assert engine.backend.max_executables == 2


async def test_process_pool_runs_closures_via_cloudpickle(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ProcessPoolExecutor(max_workers=2)), work_dir=tmp_path
    )
    offset = 100
    try:

        @engine.function_task
        async def where(x: int) -> tuple[int, int]:
            await asyncio.sleep(0)
            return os.getpid(), x + offset  # a closure over ``offset``

        @engine.function_task
        async def boom() -> None:
            class LocalError(Exception):
                pass

            raise LocalError("from a child")

        pid, value = await where(1)
        assert pid != os.getpid() and value == 101
        with pytest.raises(Exception, match="from a child"):
            await boom()
        fut = where(where(1))
        with pytest.raises(TypeError):  # a tuple + int: the child's own error
            await fut
    finally:
        await engine.shutdown()


async def test_process_pool_reports_running_when_a_worker_starts(tmp_path: Path) -> None:
    marker = tmp_path / "go"
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ProcessPoolExecutor(max_workers=1)), work_dir=tmp_path
    )
    try:

        @engine.function_task
        async def hold(path: str) -> str:
            while not os.path.exists(path):
                await asyncio.sleep(0.01)
            return "ok"

        first, second = hold(str(marker)), hold(str(marker))
        await wait_until(lambda: first.state == "RUNNING", timeout=30)
        assert second.state == "PENDING"
        marker.touch()
        assert await asyncio.gather(first, second) == ["ok", "ok"]
    finally:
        marker.touch()
        await engine.shutdown()


async def test_shutdown_does_not_block_the_loop(tmp_path: Path) -> None:
    engine = await make_engine(tmp_path)
    release = threading.Event()

    @engine.function_task
    async def stuck() -> None:
        release.wait(30)  # a blocking function that ignores cancellation

    @engine.executable_task
    async def sleeper() -> str:
        return "sleep 60"

    fut, proc_fut = stuck(), sleeper()
    await wait_until(lambda: fut.state == "RUNNING" and proc_fut.state == "RUNNING")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    ticks_before = ticks
    # A deadline that only a hang misses: the stuck thread holds 30 s.
    await asyncio.wait_for(engine.shutdown(), 25)
    tick_task.cancel()
    release.set()
    assert fut.cancelled() and proc_fut.cancelled()
    # The loop kept running while the pools wound down (it was not blocked).
    assert ticks > ticks_before


async def test_backend_as_async_context_manager(tmp_path: Path) -> None:
    async with LocalExecutionBackend(name="ctx") as backend:
        engine = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)

        @engine.function_task
        async def t() -> int:
            return 7

        assert await t() == 7
        await engine.shutdown(skip_execution_backend=True)
        assert not backend._closed
    assert backend._closed


async def test_bad_backend_arguments() -> None:
    with pytest.raises(TypeError, match="Executor"):
        LocalExecutionBackend(executor="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_executables"):
        LocalExecutionBackend(max_executables=0)
    with pytest.raises(ValueError, match="name"):
        LocalExecutionBackend(name="")
