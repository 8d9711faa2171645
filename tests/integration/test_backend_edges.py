"""Edges between the engine and its backends.

What a backend reports in an unusual way (Dragon's ``SystemExit``, a dry run
with ``capture_stdio``), a backend used after it was shut down, exceptions
that travel back from worker processes, and a process pool shut down with
work still queued.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from asyncflow import (
    DependencyFailureError,
    LocalExecutionBackend,
    NoopExecutionBackend,
    WorkflowEngine,
)
from asyncflow.errors import ExecutableError

REPO = Path(__file__).resolve().parents[2]


class DragonLike:
    """A backend reporting failures the way RHAPSODY's Dragon backend does.

    A failed task gets ``task["exception"] = make_exception()`` (Dragon uses
    ``SystemExit(exit code)`` for executables), some stderr, and ``FAILED``,
    from a later loop callback.
    """

    def __init__(self, make_exception: Callable[[], BaseException], name: str = "dragon") -> None:
        self.name = name
        self.make_exception = make_exception
        self._work_dir: str | None = None
        self.is_attached = False
        self.attached_to: list[str] = []
        self._callback: Callable[[dict[str, Any], str], None] | None = None

    def register_callback(self, callback: Callable[[dict[str, Any], str], None]) -> None:
        self._callback = callback

    def get_task_states_map(self) -> dict[str, str]:
        return {}

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        pass

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        assert self._callback is not None
        loop = asyncio.get_running_loop()
        for task in tasks:
            self._callback(task, "RUNNING")
            loop.call_soon(self._fail, task)

    def _fail(self, task: dict[str, Any]) -> None:
        assert self._callback is not None
        task["exception"] = self.make_exception()
        task["stderr"] = "md: segmentation fault"
        task["stdout"] = ""
        self._callback(task, "FAILED")


# ---------------------------------------------------------------------- Dragon's SystemExit


async def test_dragon_system_exit_is_an_executable_error(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=DragonLike(lambda: SystemExit(3)), work_dir=tmp_path
    )
    try:

        @engine.executable_task
        async def md() -> str:
            return "md --steps 10"

        @engine.function_task
        async def analyse(x: Any) -> Any:
            return x

        fut = md()
        try:
            await fut
        except Exception as exc:  # what user code writes
            caught: Exception = exc
        else:
            pytest.fail("the failed executable did not raise")
        assert isinstance(caught, ExecutableError)
        assert caught.exit_code == 3 and caught.stderr == "md: segmentation fault"
        assert caught.command == ["md", "--steps", "10"]
        assert isinstance(caught.__cause__, SystemExit)
        assert fut.state == "FAILED"
        with pytest.raises(DependencyFailureError) as dep:
            await analyse(md())
        assert isinstance(dep.value.root_cause, ExecutableError)
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("cause", [SystemExit, KeyboardInterrupt])
async def test_dragon_base_exception_of_a_function_is_runtime_error(
    tmp_path: Path, cause: type[BaseException]
) -> None:
    engine = await WorkflowEngine.create(backend=DragonLike(cause), work_dir=tmp_path)
    try:

        @engine.function_task
        async def train() -> int:
            return 1

        with pytest.raises(RuntimeError, match=f"'train' ended with {cause.__name__}") as info:
            await train()
        assert isinstance(info.value.__cause__, cause)
    finally:
        await engine.shutdown()


# ---------------------------------------------------------------------- dry run


async def test_dry_run_capture_stdio_gives_dummy_output(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    try:

        @engine.executable_task(capture_stdio=True)
        async def simulate() -> str:
            return "md --steps 10"

        fut = simulate()
        assert await fut == "Dummy Output"
        assert fut.state == "DONE"
        assert not (tmp_path / engine.uid / f"{fut.uid}.stdout").exists()
    finally:
        await engine.shutdown()


async def test_local_capture_stdio_still_gives_the_path(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:

        @engine.executable_task(capture_stdio=True)
        async def talk() -> str:
            return "echo hello"

        fut = talk()
        path = await fut
        assert path == str(tmp_path / engine.uid / f"{fut.uid}.stdout")
        assert Path(path).read_text() == "hello\n"
    finally:
        await engine.shutdown()


# ---------------------------------------------------------------------- reuse after shutdown


@pytest.mark.parametrize("slots", [False, True], ids=["plain", "with-slots"])
async def test_shut_down_backend_fails_tasks_with_a_clear_error(
    tmp_path: Path, slots: bool
) -> None:
    backend = await (
        LocalExecutionBackend(name="cpu", cpus=2) if slots else LocalExecutionBackend(name="cpu")
    )
    first = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    await first.shutdown()  # shuts the backend down too
    second = await WorkflowEngine.create(backend=backend, work_dir=tmp_path)
    try:

        @second.function_task
        async def t() -> int:
            return 1

        @second.executable_task
        async def e() -> str:
            return "true"

        for task in (t, e):
            fut = task()
            with pytest.raises(RuntimeError, match="LocalExecutionBackend 'cpu' is shut down"):
                await asyncio.wait_for(fut, 10)
            assert fut.state == "FAILED"
    finally:
        await second.shutdown()


# ---------------------------------------------------------------------- worker processes


async def test_errors_come_back_from_worker_processes_intact(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ProcessPoolExecutor(max_workers=1)), work_dir=tmp_path
    )
    try:

        @engine.function_task
        async def sub_workflow() -> None:
            raise DependencyFailureError.for_task("inner", ["prep"], ValueError("bad input"))

        @engine.function_task
        async def sub_exe() -> None:
            raise ExecutableError(3, "segfault", "", ["md"])

        with pytest.raises(DependencyFailureError) as dep:
            await sub_workflow()
        assert str(dep.value) == "Cannot execute 'inner' due to dependency failure"
        assert dep.value.failed_dependencies == ["prep"]
        assert isinstance(dep.value.root_cause, ValueError)
        assert dep.value.__cause__ is dep.value.root_cause

        with pytest.raises(ExecutableError) as exe:
            await sub_exe()
        assert str(exe.value) == "executable failed with exit code 3 (md): segfault"
        assert exe.value.exit_code == 3 and exe.value.stderr == "segfault"
    finally:
        await engine.shutdown()


def run_script(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a program of its own (this checkout importable), with ``args``."""
    script = tmp_path / "program.py"
    script.write_text(source)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from asyncflow import LocalExecutionBackend, WorkflowEngine

    async def main():
        backend = await LocalExecutionBackend(ProcessPoolExecutor(2))
        engine = await WorkflowEngine.create(backend=backend, work_dir=sys.argv[1])

        @engine.function_task
        async def slow(t):
            await asyncio.sleep(t)
            return t

        futs = [slow(1.0) for _ in range(4)]  # two run, the others wait in the pool
        while sum(f.state == "RUNNING" for f in futs) < 2:
            await asyncio.sleep(0.01)
        start = time.monotonic()
        await engine.shutdown()
        print(f"shutdown {time.monotonic() - start:.3f}", flush=True)
        print("states", sorted({f.state for f in futs}), flush=True)

    asyncio.run(main())
    """
)


def test_process_pool_shutdown_with_queued_work_is_quiet(tmp_path: Path) -> None:
    done = run_script(tmp_path, SHUTDOWN_SCRIPT, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "Error" not in done.stderr, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    # Cancelled, not completed: shutdown did not wait for the queued work.
    assert lines["states"] == "['CANCELLED']"


# A program whose one worker process runs a stuck function; argv[3] says what
# happens next: "shutdown" the engine, or "sigterm" the worker alone.
STUCK_WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from concurrent.futures import ProcessPoolExecutor
    from asyncflow import LocalExecutionBackend, WorkflowEngine

    async def main():
        backend = await LocalExecutionBackend(ProcessPoolExecutor(1))
        engine = await WorkflowEngine.create(backend=backend, work_dir=sys.argv[1])

        @engine.function_task
        async def stuck(path):
            # Written whole, then renamed: the engine's side polls for the file
            # and must never read it empty.
            with open(path + ".part", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".part", path)
            await asyncio.sleep(120)

        fut = stuck(sys.argv[2])
        while not os.path.exists(sys.argv[2]) or fut.state != "RUNNING":
            await asyncio.sleep(0.01)
        if sys.argv[3] == "sigterm":
            os.kill(int(open(sys.argv[2]).read()), signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(fut), 20)
            except Exception as exc:
                print("task", fut.state, type(exc).__name__, flush=True)
            print("engine shut down", engine.is_shutdown, flush=True)
        await engine.shutdown()
        print("state", fut.state, flush=True)

    asyncio.run(main())
    """
)


def test_process_pool_shutdown_ends_workers_still_running(tmp_path: Path) -> None:
    """A function running in a worker process cannot be cancelled: shutdown ends
    the worker instead of leaving the program waiting for it at exit."""
    pid_file = tmp_path / "worker.pid"
    started = time.monotonic()
    done = run_script(tmp_path, STUCK_WORKER, str(tmp_path), str(pid_file), "shutdown")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "state CANCELLED" in done.stdout
    assert took < 30, f"the program waited {took:.0f} s for the worker"
    worker = int(pid_file.read_text())
    assert not _alive(worker), f"worker process {worker} still runs"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_a_worker_kills_that_worker_not_the_engine(tmp_path: Path) -> None:
    """A forked worker must not keep the engine's signal handling: SIGTERM
    sent to it ends it (its task fails), and the engine's loop never hears."""
    pid_file = tmp_path / "worker.pid"
    done = run_script(tmp_path, STUCK_WORKER, str(tmp_path), str(pid_file), "sigterm")
    assert done.returncode == 0, done.stderr
    assert "task FAILED" in done.stdout, done.stdout + done.stderr
    assert "engine shut down False" in done.stdout
