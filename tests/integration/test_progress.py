"""The progress reporter: a live tqdm bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import struct
import termios
from pathlib import Path

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.progress import Counts, format_line

from .conftest import wait_until


def test_log_line_has_every_count_rate_and_eta() -> None:
    counts = Counts(total=480, done=100, cached=20, running=8, waiting=350, failed=2)
    line = format_line(counts, 4.0, 30.0)
    assert line == (
        "asyncflow progress: 122/480 finished, 100 done, 20 cached, 8 running, "
        "350 waiting, 2 failed; elapsed 30s, 4.0 tasks/s, ETA 1m30s"
    )
    assert "ETA" not in format_line(Counts(total=5, done=5), 1.0, 5.0)


async def test_log_lines_without_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path, cache=True
    ) as engine:

        @engine.function_task
        async def work(i: int) -> int:
            await asyncio.sleep(0.01)
            return i

        @engine.function_task
        async def broken() -> None:
            raise ValueError("no")

        await work(0)  # stored: the next call of work(0) is a cache hit
        async with engine.progress(stream=stream, interval=0.05) as reporter:
            assert reporter.tty is False
            futures = [work(i) for i in range(20)]
            bad = broken()
            await wait_until(lambda: stream.getvalue().count("\n") >= 2)
            await asyncio.gather(*futures, bad, return_exceptions=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d asyncflow progress: ", x) for x in lines)
    assert "22/22 finished, 20 done, 1 cached" in lines[-1]
    assert "0 running, 0 waiting, 1 failed" in lines[-1]


async def test_a_live_bar_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    # A terminal 120 columns wide (a new pty has none).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    stream = os.fdopen(follower, "w", buffering=1, encoding="utf-8")
    try:
        async with await WorkflowEngine.create(
            backend=await LocalExecutionBackend(), work_dir=tmp_path
        ) as engine:

            @engine.function_task
            async def work(i: int) -> int:
                return i

            async with engine.progress(stream=stream, interval=0.05) as reporter:
                assert reporter.tty is True  # decided by the stream itself
                await asyncio.gather(*(work(i) for i in range(30)))
        stream.flush()
        out = b""
        while True:
            ready = await asyncio.get_running_loop().run_in_executor(None, _read, leader)
            if not ready:
                break
            out += ready
    finally:
        stream.close()
        os.close(leader)
    text = out.decode(errors="replace")
    assert "30/30" in text and "done 30" in text and "\r" in text  # redrawn in place
    assert "asyncflow progress:" not in text


def _read(fd: int) -> bytes:
    import select

    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


async def test_start_telemetry_progress_runs_until_shutdown(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    with pytest.raises(TypeError, match="progress must be True or False"):
        await engine.start_telemetry(progress=1)  # type: ignore[arg-type]
    await engine.start_telemetry(progress=True)

    @engine.function_task
    async def one() -> int:
        return 1

    await one()
    await engine.shutdown()
    err = capfd.readouterr().err
    assert "asyncflow progress: 1/1 finished, 1 done" in err


async def test_off_means_no_reporter(tmp_path: Path) -> None:
    async with await WorkflowEngine.create(
        backend=await LocalExecutionBackend(), work_dir=tmp_path
    ) as engine:
        await engine.start_telemetry()
        assert engine._progress is None
