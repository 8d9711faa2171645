"""Nothing hangs: executables whose descendants escape, and shutdown deadlines.

A descendant that leaves the task's process group (``setsid cmd &``) keeps the
output pipe open for as long as it lives; the task must end with its own
process all the same, and cancel and shutdown must end it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine

from .conftest import wait_until

# Generous deadlines: they catch a hang, not a slow machine.
DEADLINE = 30.0


@pytest.fixture
def escaped(tmp_path: Path) -> Iterator[Path]:
    """A file the escaped grandchild's pid is written to; the grandchild is
    killed after the test (it is nobody's child any more)."""
    pidfile = tmp_path / "escaped.pid"
    yield pidfile
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[WorkflowEngine]:
    eng = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        yield eng
    finally:
        await asyncio.wait_for(eng.shutdown(), DEADLINE)


def escaping(pidfile: Path, then: str) -> str:
    """A command whose grandchild leaves the process group holding stdout."""
    return f"sh -c 'setsid sleep 600 & echo $! > {pidfile}; {then}'"


async def test_task_ends_with_its_own_process(engine: WorkflowEngine, escaped: Path) -> None:
    @engine.executable_task
    async def escaper() -> str:
        return escaping(escaped, "echo mine")

    out = await asyncio.wait_for(escaper(), DEADLINE)
    assert out.strip() == "mine"
    # The stranger is still alive: the task did not wait for it.
    os.kill(int(escaped.read_text()), 0)


async def test_cancel_ends_a_task_whose_pipe_a_stranger_holds(
    engine: WorkflowEngine, escaped: Path
) -> None:
    @engine.executable_task
    async def escaper() -> str:
        return escaping(escaped, "sleep 600")

    fut = escaper()
    await wait_until(lambda: fut.state == "RUNNING" and escaped.exists())
    assert fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(fut, DEADLINE)


async def test_shutdown_ends_a_task_whose_pipe_a_stranger_holds(
    tmp_path: Path, escaped: Path
) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)

    @engine.executable_task
    async def escaper() -> str:
        return escaping(escaped, "sleep 600")

    fut = escaper()
    await wait_until(lambda: fut.state == "RUNNING" and escaped.exists())
    await asyncio.wait_for(engine.shutdown(), DEADLINE)
    assert fut.cancelled()


async def test_a_stranger_that_never_stops_writing_does_not_hold_the_task(
    engine: WorkflowEngine, escaped: Path
) -> None:
    """The exit is checked while output flows, not only when the pipes go quiet."""

    @engine.executable_task
    async def chatty() -> str:
        return (
            f'sh -c \'setsid sh -c "while :; do echo noise; done" & '
            f"echo $! > {escaped}; echo mine'"
        )

    out = await asyncio.wait_for(chatty(), DEADLINE)
    assert out.startswith("mine\n")  # then some of the stranger's noise, cut off


async def test_both_pipes_are_read_in_full_whatever_their_size(engine: WorkflowEngine) -> None:
    """Two megabytes on each pipe, interleaved: nothing lost, no pipe left full."""

    @engine.executable_task
    async def loud() -> str:
        return (
            "python3 -c 'import sys\n"
            "for i in range(2048):\n"
            '    sys.stdout.write("o" * 1023 + "\\n"); sys.stderr.write("e" * 1023 + "\\n")\n'
            "sys.stdout.flush(); sys.stderr.flush()'"
        )

    out = await asyncio.wait_for(loud(), DEADLINE)
    assert out == ("o" * 1023 + "\n") * 2048


async def test_a_task_that_closes_its_output_ends_when_its_process_does(
    engine: WorkflowEngine, tmp_path: Path
) -> None:
    """End of file on the pipes is not the end of the task: its process is."""
    marker = tmp_path / "last-word"

    @engine.executable_task
    async def quiet() -> str:
        return f"sh -c 'echo early; exec >&- 2>&-; sleep 0.5; touch {marker}'"

    out = await asyncio.wait_for(quiet(), DEADLINE)
    assert out == "early\n" and marker.exists()
