"""The checkpoint file under faults: SIGKILL, a stalled writer, a full disk,
a deleted or read-only directory.

The full disk and the read-only directory are real: small tmpfs mounts, which
need root (CI runs as root); those tests say so when skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from asyncflow import NoopExecutionBackend, WorkflowEngine
from asyncflow.telemetry import _pipe_writer, names, read_checkpoint
from asyncflow.telemetry import _records as records

from .conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: mounts a small tmpfs (CI runs as root)"
)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``mount(size, read_only)``: a fresh tmpfs, unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str = "1m", read_only: bool = False) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def writer_processes(pid: int | None = None) -> list[psutil.Process]:
    """The checkpoint writer processes that are children of ``pid``."""
    me = psutil.Process(pid)
    return [
        p
        for p in me.children(recursive=True)
        if any("_writer_main" in part for part in _cmdline(p))
    ]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def task_uids(path: Path) -> set[str]:
    """The uids of tasks whose final span is in the checkpoint file(s) at ``path``."""
    return {
        r["attributes"].get(names.TASK_UID)
        for r in read_checkpoint(path, sections=["span"])
        if r["attributes"].get(names.LEVEL) == names.LEVEL_TASK
    }


# ---------------------------------------------------------------- SIGKILL keeps what finished


def _run_script(body: str, preamble: str = "") -> str:
    """A script whose ``main()`` starts a no-op engine with the checkpoint
    file in ``argv[1]``, defines task ``t`` and opens ``done`` (``argv[2]``,
    where the run writes the uids whose futures completed), then runs
    ``body`` (at the indentation of ``main``'s body)."""
    head = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        from asyncflow import NoopExecutionBackend, WorkflowEngine
        from asyncflow.telemetry import _pipe_writer
        {preamble}
        async def main():
            work_dir = os.path.dirname(sys.argv[2])  # the test's, not the checkout
            engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=work_dir)
            await engine.start_telemetry(checkpoint_path=sys.argv[1])

            @engine.function_task
            async def t(i):
                return i

            done = open(sys.argv[2], "w")
        """
    ).format(preamble=textwrap.dedent(preamble))
    return head + textwrap.indent(textwrap.dedent(body), "    ") + "\nasyncio.run(main())\n"


KILLED_RUN = _run_script(
    """
    for _ in range(int(sys.argv[3])):
        futs = [t(i) for i in range(200)]
        await asyncio.gather(*futs)
        # The waiter ran: the record of these tasks must be safe by now.
        done.write("".join(f.uid + "\\n" for f in futs))
        done.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_keeps_every_task_whose_future_completed(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    done = tmp_path / "done.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "tel"), str(done), "20"],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    writers: list[psutil.Process] = []
    deadline = time.monotonic() + DEADLINE
    while proc.poll() is None and time.monotonic() < deadline:
        writers = writers or writer_processes(proc.pid)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    # The writer finishes what it was sent, then ends.
    _, alive = psutil.wait_procs(writers, timeout=DEADLINE)
    assert alive == []
    finished = set(done.read_text().split())
    assert len(finished) == 20 * 200
    assert finished <= task_uids(tmp_path / "tel")


STALLED_THEN_KILLED = _run_script(
    """
    print("ready", flush=True)
    sys.stdin.readline()  # the test has stopped the writer
    while True:
        futs = [t(i) for i in range(500)]
        await asyncio.gather(*futs)
        done.write("".join(f.uid + "\\n" for f in futs))
        done.flush()
    """,
    # The writer stops for longer than the test's pause before it counts
    # as stalled: a machine however loaded keeps this test's meaning.
    preamble="_pipe_writer.STALL_SECONDS = 60.0",
)


def test_sigkill_keeps_completed_tasks_while_the_writer_is_behind(tmp_path: Path) -> None:
    """The writer is stopped (a slow disk) while the run goes on, then the
    engine is killed: every task whose future completed is in the file.
    Futures completed while the writer's records waited in the engine's
    memory (beyond the pipe's 1 MiB) were lost, thousands of them; now they
    wait in the spill file the writer holds open."""
    script = tmp_path / "stalled.py"
    script.write_text(STALLED_THEN_KILLED)
    done = tmp_path / "done.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "tel"), str(done)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        (writer,) = writer_processes(proc.pid)
        writer.suspend()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        # The run goes on with the writer stopped until it has made several
        # times the records a pipe holds (1 MiB: about 15,000 tasks).
        deadline = time.monotonic() + DEADLINE
        while _lines(done) < 60_000 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        with contextlib.suppress(psutil.NoSuchProcess, NameError):
            writer.resume()  # it holds the run's stderr: resumed, it ends
        _, err = proc.communicate(timeout=DEADLINE)  # and closes the pipes
    assert psutil.wait_procs([writer], timeout=DEADLINE)[1] == []
    finished = set(done.read_text().split())
    assert len(finished) >= 60_000, err.decode()
    assert finished <= task_uids(tmp_path / "tel")


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


# ---------------------------------------------------------------- a stalled writer


async def test_stalled_writer_never_blocks_tasks_and_shutdown_has_a_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_pipe_writer, "BACKLOG_BYTES", 256 * 1024)
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
    (writer,) = writer_processes()
    writer.suspend()  # SIGSTOP: a hung network filesystem
    try:

        @engine.function_task
        async def t(i: int) -> int:
            return i

        for _ in range(20):
            await asyncio.wait_for(asyncio.gather(*[t(i) for i in range(1000)]), DEADLINE)
        with caplog.at_level(logging.ERROR, logger="asyncflow.telemetry"):
            await asyncio.wait_for(engine.shutdown(), DEADLINE)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("took nothing for" in m for m in messages) == 1, messages
        assert any("records were not written" in m for m in messages), messages
        # Nothing is left behind: the stopped writer was ended.
        assert psutil.wait_procs([writer], timeout=DEADLINE)[1] == []
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            writer.kill()


async def test_a_writer_slower_than_the_run_slows_it_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that keeps taking records, however slowly, gets all of them:
    with the backlog full the run waits for it (here it is stopped for 0.3 s
    at a time, under the 2 s after which it would count as stalled)."""
    import threading

    monkeypatch.setattr(_pipe_writer, "BACKLOG_BYTES", 64 * 1024)
    monkeypatch.setenv(names.ENV_TELEMETRY_NICE, "0")  # its own pace is the stutter's
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
    (writer,) = writer_processes()
    done = threading.Event()

    def stutter() -> None:
        while not done.is_set():
            writer.suspend()
            done.wait(0.3)
            writer.resume()
            done.wait(0.1)

    stutterer = threading.Thread(target=stutter, daemon=True)
    stutterer.start()
    caplog.set_level(logging.WARNING, logger="asyncflow.telemetry")
    try:

        @engine.function_task
        async def t(i: int) -> int:
            return i

        futures = [t(i) for i in range(20_000)]
        await asyncio.wait_for(asyncio.gather(*futures), DEADLINE * 4)
    finally:
        done.set()
        stutterer.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            writer.resume()
        await asyncio.wait_for(engine.shutdown(), DEADLINE)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert task_uids(tel.checkpoint_file) == {f.uid for f in futures}


# ---------------------------------------------------------------- failures are reported


@needs_root
async def test_read_only_directory_fails_start_telemetry_at_once(
    tmpfs: Any, tmp_path: Path
) -> None:
    target = tmpfs(read_only=True)
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    try:
        with pytest.raises(OSError, match="cannot write the checkpoint file") as info:
            await asyncio.wait_for(engine.start_telemetry(checkpoint_path=target), 10)
        assert str(target) in str(info.value)
        assert "Read-only" in str(info.value)
    finally:
        await engine.shutdown()


@needs_root
@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_full_disk_is_reported_once_and_writing_resumes_on_a_fresh_line(
    tmpfs: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    writer: str,
) -> None:
    """Also with the thread that writes when no writer process can start:
    it stopped writing for good at the first failure, and dropped every
    later record uncounted."""
    if writer == "thread":

        def no_spill() -> int:
            raise OSError("no spill here")

        monkeypatch.setattr(_pipe_writer, "make_spill", no_spill)
    target = tmpfs(size="4m")
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    caplog.set_level(logging.WARNING, logger="asyncflow.telemetry")
    tel = await engine.start_telemetry(checkpoint_path=target)
    assert (writer_processes() != []) == (writer == "process")

    @engine.function_task
    async def t(i: int) -> int:
        return i

    filler = target / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        f.write(b"x" * (8 << 20))  # fills the disk (short write, then ENOSPC)

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    before = [t(i) for i in range(300)]
    await asyncio.gather(*before)
    await wait_until(lambda: said("No space left on device") > 0, DEADLINE)
    filler.unlink()
    after = [t(i) for i in range(50)]
    await asyncio.gather(*after)
    await wait_until(lambda: said("writing again") > 0, DEADLINE)
    await asyncio.wait_for(engine.shutdown(), DEADLINE)
    assert said("No space left on device") == 1
    assert tel.checkpoint_file is not None
    lines = tel.checkpoint_file.read_text().splitlines()
    for line in lines:
        json.loads(line)  # no torn line anywhere: each one parses
    assert {f.uid for f in before + after} <= task_uids(tel.checkpoint_file)


FULL_AT_THE_END = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from asyncflow import NoopExecutionBackend, WorkflowEngine

    # A file size limit, inherited by the writer process: a write past it is
    # cut short, then fails (EFBIG), as on a disk that fills up mid-line.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))

    async def main():
        engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=sys.argv[2])
        await engine.start_telemetry(checkpoint_path=sys.argv[1])

        @engine.function_task
        async def t(i):
            return i

        for _ in range(10):
            await asyncio.gather(*[t(i) for i in range(100)])
        await engine.shutdown()

    asyncio.run(main())
    """
)


def test_a_disk_full_to_the_end_leaves_whole_lines(tmp_path: Path) -> None:
    """The file cannot grow any more until the run ends: what the last write
    cut short is taken off the end, so the file ends with a whole line (it
    ended mid-line: its last write was never written again)."""
    script = tmp_path / "full.py"
    script.write_text(FULL_AT_THE_END)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "tel"), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        timeout=DEADLINE * 2,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"lines could not be written (EFBIG)" in proc.stderr
    (file,) = (tmp_path / "tel").glob(f"*{names.CHECKPOINT_SUFFIX}")
    data = file.read_bytes()
    assert 30_000 < len(data) <= 40_000
    assert data.endswith(b"\n")
    for line in data.decode().splitlines():
        json.loads(line)


async def test_deleted_directory_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    caplog.set_level(logging.WARNING, logger="asyncflow.telemetry")
    await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
    shutil.rmtree(tmp_path / "tel")

    @engine.function_task
    async def t(i: int) -> int:
        return i

    def said() -> int:
        return sum("was removed" in r.getMessage() for r in caplog.records)

    await asyncio.gather(*[t(i) for i in range(10)])
    await wait_until(lambda: said() > 0, DEADLINE)
    await asyncio.gather(*[t(i) for i in range(10)])
    await asyncio.wait_for(engine.shutdown(), DEADLINE)
    assert said() == 1


def test_records_written_after_the_loop_closed_still_reach_the_file(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    path = tmp_path / f"late{names.CHECKPOINT_SUFFIX}"
    writer = _pipe_writer.ProcessCheckpointWriter(path, ("s", "n", "01" * 16), loop)
    try:
        assert writer.wait_ready()
        writer.write_record({"section": "metric", "when": "before"})
        loop.run_until_complete(asyncio.sleep(0))  # the end of that turn sends it
        loop.close()
        writer.write_record({"section": "metric", "when": "after"})  # no loop any more
    finally:
        writer.close()
        loop.close()
    assert [r["when"] for r in read_checkpoint(path)] == ["before", "after"]


async def test_a_large_loop_turn_is_written_whole(tmp_path: Path) -> None:
    """20,000 tasks finishing in one turn: one write far larger than the pipe,
    rendered into more lines than the writer holds back for a full disk."""
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")

    @engine.function_task
    async def t(i: int) -> int:
        return i

    futures = [t(i) for i in range(20_000)]
    await asyncio.wait_for(asyncio.gather(*futures), DEADLINE * 4)
    await asyncio.wait_for(engine.shutdown(), DEADLINE * 4)
    assert tel.checkpoint_file is not None
    assert {f.uid for f in futures} == task_uids(tel.checkpoint_file)


@contextlib.contextmanager
def _writer_process(
    path: Path,
) -> Iterator[tuple[asyncio.AbstractEventLoop, _pipe_writer.ProcessCheckpointWriter]]:
    """A writer process for ``path`` on a loop of its own, ready; closed after."""
    loop = asyncio.new_event_loop()
    writer = _pipe_writer.ProcessCheckpointWriter(path, ("s", "n", "01" * 16), loop)
    try:
        assert writer.wait_ready()
        yield loop, writer
    finally:
        writer.close()
        loop.close()


def test_the_writer_holds_nothing_per_task_and_reports_its_peak_rss(tmp_path: Path) -> None:
    """100,000 tasks created in one loop turn and still running: the writer
    renders them in frames and keeps nothing per task, so its memory stays
    near its start-up size (layout 1's renderer kept each live task: 200 MB)."""
    tasks = 100_000
    with _writer_process(tmp_path / f"many{names.CHECKPOINT_SUFFIX}") as (loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        for i in range(tasks):
            writer.write((records.CREATED, f"task.{i:06d}", i << 3, i, 0, "wf-1", i + 1, 1))
        loop.run_until_complete(asyncio.sleep(0))  # the turn ends: one batch of them all
        assert writer.writer_peak_rss is None  # reported at exit
    lines = (tmp_path / f"many{names.CHECKPOINT_SUFFIX}").read_text().splitlines()
    assert len(lines) == tasks + 1  # and the header
    assert writer.writer_peak_rss is not None
    assert 0 < writer.writer_peak_rss < 80 * 2**20


def test_a_large_batch_is_submitted_without_growing_the_writer(tmp_path: Path) -> None:
    """The tasks of one submit_tasks call share submitted records a few
    uids at a time: 300,000 tasks handed over at once reach the writer in
    frames of bounded size, so its memory stays near its start-up size (one
    record for the whole batch took it from 38 to 64 MB at 100,000 tasks)."""
    from types import SimpleNamespace

    from asyncflow.telemetry._recorder import Recorder

    tasks = 400_000
    path = tmp_path / f"batch{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (loop, writer):
        recorder = Recorder("s", "n", 10, None)
        recorder.attach(writer)
        # All submitted_all reads of a task is its uid.
        spans = [SimpleNamespace(uid=f"task.{i:06d}") for i in range(tasks)]
        recorder.submitted_all(spans)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0))  # the turn ends: all of it in one send
    lines = path.read_text().splitlines()
    assert len(lines) == tasks + 1  # and the header
    assert json.loads(lines[-1])["uid"] == f"task.{tasks - 1:06d}"
    assert writer.writer_peak_rss is not None
    assert 0 < writer.writer_peak_rss < 80 * 2**20


def test_a_bad_packed_record_is_skipped_and_the_rest_written(tmp_path: Path) -> None:
    """A packed record that does not expand (its integers cut short) is
    skipped like any bad record: the writer process goes on with the rest."""
    path = tmp_path / f"bad{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        for i in range(3):
            ints = records.CREATED_INTS.pack(i << 3, i, 0, i + 1, 1)
            writer.write(
                (records.CREATED_PACKED, f"task.{i:06d}", "wf-1", ints[:-1] if i == 1 else ints)
            )
        loop.run_until_complete(asyncio.sleep(0))
    uids = [json.loads(line).get("uid") for line in path.read_text().splitlines()[1:]]
    assert uids == ["task.000000", "task.000002"]


def test_a_writer_that_dies_on_its_own_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer process that ended by itself (here: a frame it cannot read)
    has not written the rest of the run: shutdown says so."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"dead{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        frame = struct.pack("<I", 3) + b"\xff\xff\xff"  # not marshal
        os.pwrite(writer._spill, frame, writer._end)
        writer._end += len(frame)
        writer._proc.wait(DEADLINE)  # it reads the frame and dies
    assert writer._proc.returncode == 1
    assert "ended with exit status 1" in caplog.text
    assert "may be missing" in caplog.text


def test_a_large_batch_goes_in_frames() -> None:
    batch = [
        (records.STARTED, f"task.{i:06d}", i) for i in range(2 * _pipe_writer.FRAME_RECORDS + 1)
    ]
    blob = _pipe_writer._frame(batch)
    frames, at = [], 0
    while at < len(blob):
        size = struct.unpack_from("<I", blob, at)[0]
        frames.append(marshal.loads(blob[at + 4 : at + 4 + size]))
        at += 4 + size
    assert [len(f) for f in frames] == [_pipe_writer.FRAME_RECORDS] * 2 + [1]
    assert [tuple(r) for f in frames for r in f] == batch


def test_a_burst_of_task_calls_in_one_loop_turn_queues_a_bounded_number_of_records(
    tmp_path: Path,
) -> None:
    """A million task calls in one turn queue three records each before any
    future completes: the recorder hands them on every 1,024 tasks once
    more than RELIEVE_RECORDS wait, so they never all wait as objects."""
    from types import SimpleNamespace

    from asyncflow.telemetry._recorder import Recorder

    loop = asyncio.new_event_loop()
    path = tmp_path / f"burst{names.CHECKPOINT_SUFFIX}"
    writer = _pipe_writer.ProcessCheckpointWriter(path, ("s", "n", "01" * 16), loop)
    recorder = Recorder("s", "n", 16, None)
    tasks = 3 * _pipe_writer.RELIEVE_RECORDS // 2  # 4.5 records per limit: over it
    try:
        assert writer.wait_ready()
        recorder.attach(writer)
        most = 0
        for i in range(tasks):  # no loop turn: as one burst of task calls
            task = SimpleNamespace(
                uid=f"task.{i:06d}",
                name="t",
                kind=names.TYPE_FUNCTION,
                workflow_id=None,
                workflow_name=None,
                task_description={},
            )
            span = recorder.task_created(task, "default", None, None)
            recorder.resolved(span)
            recorder.queued(span)
            most = max(most, writer.queued)
        assert most <= _pipe_writer.RELIEVE_RECORDS + 3 * 1024
    finally:
        writer.close()
        loop.close()
    created = [line for line in path.read_text().splitlines() if '"task.' in line]
    assert len({line.split('"task.')[1][:6] for line in created}) == tasks  # none lost


DECOY_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from asyncflow import NoopExecutionBackend, WorkflowEngine

    async def main():
        engine = await WorkflowEngine.create(backend=NoopExecutionBackend())
        await engine.start_telemetry(checkpoint_path=sys.argv[1])

        @engine.function_task
        async def t(i):
            return i

        await asyncio.gather(*[t(i) for i in range(50)])
        await engine.shutdown()

    asyncio.run(main())
    """
)


def test_the_writer_is_this_packages_whatever_the_current_directory(tmp_path: Path) -> None:
    """Run from a folder holding another ``asyncflow`` (a clone of another
    version), the writer process is still this package's: every task is in
    the file (``python -m`` alone would import the folder's writer)."""
    decoy = tmp_path / "elsewhere" / "asyncflow" / "telemetry"
    decoy.mkdir(parents=True)
    (decoy.parent / "__init__.py").write_text("")
    (decoy / "__init__.py").write_text("")
    (decoy / "_writer_main.py").write_text("import sys\nsys.exit(3)\n")
    script = tmp_path / "run.py"
    script.write_text(DECOY_RUN)
    out = tmp_path / "tel"
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=decoy.parent.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    assert len(task_uids(out)) == 50, done.stderr


def test_the_spill_is_freed_as_the_writer_reads_it(tmp_path: Path) -> None:
    """The records the writer has read are freed from the spill (memory on
    Linux): a run's spill holds what the writer has yet to read, not all it
    was ever sent."""
    tasks = 400_000
    path = tmp_path / f"freed{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        for i in range(tasks):
            writer.write((records.CREATED, f"task.{i:06d}", i << 3, i, 0, "wf-1", i + 1, 1))
            if i % 1000 == 999:
                writer._flush()  # as at the end of a loop turn
        writer._flush()
        sent = writer._end
        assert sent > 16 << 20  # several times what the writer frees at once
        wait_until_sync(lambda: (writer._ask_read_up_to(), writer._read_up_to == sent)[1])
        held = os.fstat(writer._spill).st_blocks * 512
        assert held < 8 << 20, (held, sent)
    assert path.read_text().count("\n") == tasks + 1


def wait_until_sync(check: Any, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_closing_ends_the_writer_while_another_process_holds_its_pipe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process forked from the engine (a pool worker) holds the writer's
    pipe open, so the writer never sees it end: the end mark in the spill
    ends it (it was waited for, then killed, as a writer making no progress)."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"held{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        writer.write((records.CREATED, "task.000001", 8, 1, 0, "wf-1", 1, 1))
        assert writer._proc.stdin is not None
        holder = subprocess.Popen(["sleep", "60"], pass_fds=(writer._proc.stdin.fileno(),))
        try:
            writer.close()
        finally:
            holder.kill()
            holder.wait()
    assert writer._proc.returncode == 0
    assert "made no progress" not in caplog.text
    assert len(path.read_text().splitlines()) == 2  # the header and the task


# ---------------------------------------------------------------- losses are counted right


def _created(i: int) -> tuple[Any, ...]:
    return (records.CREATED, f"task.{i:06d}", i << 3, i, 0, "wf-1", i + 1, 1)


def _lost(caplog: pytest.LogCaptureFixture) -> int:
    """The number in the 'N records were not written' message (0: none)."""
    for r in caplog.records:
        text = r.getMessage()
        if "records were not written" in text:
            return int(text.rsplit(": ", 1)[1].split()[0])
    return 0


def test_a_writer_killed_for_no_progress_has_what_it_did_not_read_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer stops part-way through the spill (a hung disk) and closing
    kills it: the records it never took are counted (the count read frames
    from where the writer said it had read, the middle of a frame: 0)."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"cut{names.CHECKPOINT_SUFFIX}"
    total = 300_000
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        for i in range(total):
            writer.write(_created(i))
            if i % 1000 == 999:
                writer._flush()
        writer._flush()
        process = psutil.Process(writer._proc.pid)
        wait_until_sync(lambda: writer._ask_read_up_to())  # it took its first part
        process.suspend()
        writer._ask_read_up_to()
        assert writer._read_up_to < writer._end  # it stopped part-way
        writer.close(deadline=1.0)
    lines = len(path.read_text().splitlines()) - 1  # but the header
    lost = _lost(caplog)
    assert lost > 0
    assert lines + lost >= total  # nothing unaccounted for
    # Counted twice (written, then said lost): at most the frame it was in.
    assert lines + lost <= total + _pipe_writer.FRAME_RECORDS


def test_the_writer_says_each_frame_taken_once_its_lines_are_written() -> None:
    """The writer told the engine how far it had read once per 1 MiB read:
    frames whose lines were written before it was killed were counted lost
    as well (3.5 frames in the hunt's run). It now says so after each frame."""
    from asyncflow.telemetry import _spill, _writer_main

    frames = [_spill.frame([_created(i) for i in range(k, k + 3)]) for k in (0, 3, 6)]
    buffer = bytearray(b"".join(frames) + frames[0][:5])  # and the start of a fourth
    taken: list[int] = []
    ended = _writer_main._consume(buffer, None, None, None, taken.append, 1000)
    assert not ended
    ends = [1000 + sum(len(f) for f in frames[: i + 1]) for i in range(3)]
    assert taken == ends
    assert bytes(buffer) == frames[0][:5]  # the torn one waits for its rest
    taken.clear()
    buffer = bytearray(_spill.END_OF_RECORDS)
    assert _writer_main._consume(buffer, None, None, None, taken.append, 2000)
    assert taken == [2004]


def test_records_that_are_no_line_are_not_counted_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kind's names and session notes (OTLP only) are no line of the file:
    sent after the writer died, they were counted as records not written."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"uncounted{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        writer.write(_created(0))
        writer._flush()
        wait_until_sync(lambda: (writer._ask_read_up_to(), writer._read_up_to == writer._end)[1])
        writer._proc.kill()
        wait_until_sync(lambda: writer._broken)
        for kind in range(1, 11):
            writer.write((records.SHAPE, kind, "task", f"k{kind}", "function", "b", "w", 1, 0))
            writer.write((records.NOTE, "note", kind, {}))
            writer.write(_created(kind))
        writer._flush()
    assert _lost(caplog) == 10


def test_a_writer_that_dies_mid_run_is_reported_as_gone_not_stalled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer process is killed mid-run: it is said to be gone (not a
    stalled disk), its exit status is logged at shutdown, and every record
    sent after its death is counted."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"gone{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        for i in range(100):
            writer.write(_created(i))
        writer._flush()
        writer._proc.kill()
        wait_until_sync(lambda: writer._broken)  # noticed without waiting for the bound
        for i in range(100, 1100):
            writer.write(_created(i))
        writer._flush()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is gone" in m for m in messages) == 1, messages
    assert not any("took nothing" in m for m in messages), messages
    assert any("ended with exit status -9" in m for m in messages), messages
    lines = max(len(path.read_text().splitlines()) - 1, 0)
    assert _lost(caplog) >= 1000 and lines + _lost(caplog) >= 1100


async def test_a_kind_whose_first_records_were_dropped_is_still_named_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled writer's drops took the record of a kind's names with them:
    every later task of that kind lost its created line and span name for
    the rest of the run. Names are sent again with the next batch."""
    monkeypatch.setattr(_pipe_writer, "BACKLOG_BYTES", 256 * 1024)
    monkeypatch.setattr(_pipe_writer, "STALL_SECONDS", 0.3)
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")
    (writer_proc,) = writer_processes()
    writer = tel._writer
    try:

        @engine.function_task
        async def a(i: int) -> int:
            return i

        @engine.function_task
        async def b(i: int) -> int:
            return i

        writer_proc.suspend()
        while not writer.dropped:  # the writer stalls: batches are dropped
            await asyncio.wait_for(asyncio.gather(*[a(i) for i in range(1000)]), DEADLINE)
        for _ in range(10_000):  # until not even one task's records fit
            dropped = writer.dropped
            await asyncio.wait_for(a(0), DEADLINE)
            if writer.dropped > dropped:
                break
        dropped = writer.dropped
        await asyncio.wait_for(asyncio.gather(*[b(i) for i in range(10)]), DEADLINE)
        assert writer.dropped > dropped  # b's first records, its names among them
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            writer_proc.resume()
    await wait_until(writer._ask_read_up_to, DEADLINE)  # it reads again
    later = [b(i) for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*later), DEADLINE)
    await asyncio.wait_for(engine.shutdown(), DEADLINE)
    uids = {f.uid for f in later}
    spans = {
        r["attributes"][names.TASK_UID]: r
        for r in read_checkpoint(tel.checkpoint_file, sections=["span"])
        if r["attributes"].get(names.TASK_UID) in uids
    }
    assert len(spans) == 100
    assert {s["name"] for s in spans.values()} == {"task b"}
    assert {s["attributes"].get(names.TASK_NAME) for s in spans.values()} == {"b"}


def test_closing_waits_for_a_stopped_writer_no_longer_than_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill is at its bound and the writer stops: closing's last records
    waited STALL_SECONDS for room before closing's own deadline began
    (shutdown took 7 s, not the documented 5). One deadline covers both."""
    monkeypatch.setattr(_pipe_writer, "BACKLOG_BYTES", 256 * 1024)
    monkeypatch.setattr(_pipe_writer, "STALL_SECONDS", 4.0)
    path = tmp_path / f"deadline{names.CHECKPOINT_SUFFIX}"
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        process = psutil.Process(writer._proc.pid)
        process.suspend()
        i = 0
        while writer._end - writer._read_up_to < 200 * 1024:  # up to the bound, no wait
            for _ in range(200):
                writer.write(_created(i))
                i += 1
            writer._flush()
        assert not writer.dropped
        for _ in range(5000):  # more than the bound leaves room for
            writer.write(_created(i))
            i += 1
        started = time.monotonic()
        writer.close(deadline=1.0)
        took = time.monotonic() - started
    # 1 s without progress, then the kill; never the 4 s wait for room first.
    assert took < 4.0, took


WARNINGS_ARE_ERRORS = textwrap.dedent(
    """
    import asyncio, sys
    import asyncflow.telemetry
    from asyncflow import NoopExecutionBackend, WorkflowEngine

    # python -m runs the writer's module: the package must not import it.
    assert "asyncflow.telemetry._writer_main" not in sys.modules

    async def main():
        engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=sys.argv[1])
        tel = await engine.start_telemetry(checkpoint_path=sys.argv[1])

        @engine.function_task
        async def t(i):
            return i

        await asyncio.gather(*[t(i) for i in range(10)])
        await engine.shutdown()
        print(tel.checkpoint_file)

    asyncio.run(main())
    """
)


def test_the_writer_process_starts_with_warnings_as_errors(tmp_path: Path) -> None:
    """The package imported the writer's module (for its file appender), so
    ``python -m`` warned at every writer start, and with warnings as errors
    the writer could not start: the run's file lost everything."""
    script = tmp_path / "strict.py"
    script.write_text(WARNINGS_ARE_ERRORS)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert len(task_uids(Path(done.stdout.strip()))) == 10


@needs_root
def test_lines_held_for_a_full_disk_count_as_not_written_if_the_writer_dies(
    tmpfs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is full: the writer holds the lines of what it read. It told
    the engine those records were taken, so when it died (the kernel's OOM
    killer) they were lost uncounted (2,241 of 2,481 in the hunt's run)."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmpfs(size="1m") / f"full{names.CHECKPOINT_SUFFIX}"
    total = 0
    with _writer_process(path) as (_loop, writer):
        writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
        deadline = time.monotonic() + DEADLINE
        while not any("No space left" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the disk never filled"
            for _ in range(1000):
                writer.write(_created(total))
                total += 1
            writer._flush()
            time.sleep(0.01)
        for _ in range(2000):  # read by the writer, held for the full disk
            writer.write(_created(total))
            total += 1
        writer._flush()
        time.sleep(0.5)
        writer._proc.kill()
        wait_until_sync(lambda: writer._broken)
    lines = sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.endswith(b"}"))
    assert lines + _lost(caplog) >= total


def _thread_writer(path: Path) -> Any:
    from asyncflow.telemetry._render import LineRenderer
    from asyncflow.telemetry.checkpoint import CheckpointWriter

    writer = CheckpointWriter(path, LineRenderer("s", "n", "01" * 16), flush_interval=0.05)
    writer.write((records.SHAPE, 0, "task", "t", "function", "b", "w", 1, 0))
    return writer


def test_the_writer_thread_says_when_its_file_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As the writer process does (the thread said nothing)."""
    caplog.set_level(logging.ERROR, logger="asyncflow")
    path = tmp_path / f"removed{names.CHECKPOINT_SUFFIX}"
    writer = _thread_writer(path)
    try:
        writer.write(_created(0))
        wait_until_sync(lambda: path.read_text().count("\n") == 2)
        path.unlink()
        wait_until_sync(lambda: "was removed" in caplog.text)
    finally:
        writer.close()
    assert caplog.text.count("was removed") == 1


def test_a_writer_thread_stuck_on_the_disk_is_given_up_within_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread hangs in a write (a hung network filesystem): closing waited
    its deadline, then as long again for the lock the thread held, and the
    records of the batch in the hung write were not counted."""
    import threading

    from asyncflow.telemetry.checkpoint import CheckpointWriter

    release = threading.Event()
    write = CheckpointWriter._hand_on

    def hung(self: Any, batch: list[Any]) -> None:
        release.wait(DEADLINE)
        write(self, batch)

    monkeypatch.setattr(CheckpointWriter, "_hand_on", hung)
    caplog.set_level(logging.ERROR, logger="asyncflow")
    writer = _thread_writer(tmp_path / f"hung{names.CHECKPOINT_SUFFIX}")
    try:
        for i in range(100):
            writer.write(_created(i))
        wait_until_sync(lambda: writer._in_hand == 100)  # the thread took them, and hangs
        for i in range(100, 150):
            writer.write(_created(i))
        started = time.monotonic()
        writer.close(deadline=2.0)
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 3.5, took  # its deadline (and a poll); the old wait was twice that
    assert _lost(caplog) == 150


@needs_root
async def test_a_full_disk_at_shutdown_does_not_get_the_exporting_writer_killed(
    tmpfs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is full as the run ends and the OTLP collector never answers:
    the writer had said which lines it could not write, but never that it
    had taken the last frames (their lines were held), so closing gave up on
    it as making no progress while it exported, killed it, and counted the
    same loss again as records."""
    import socket
    import threading

    target = tmpfs(size="1m")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:  # a collector that takes connections and never answers
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    caplog.set_level(logging.WARNING, logger="asyncflow")
    try:
        engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=tmp_path)
        await engine.start_telemetry(
            checkpoint_path=target,
            otlp_endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
            otlp_protocol="http/protobuf",
        )

        @engine.function_task
        async def t(i: int) -> int:
            return i

        await asyncio.gather(*[t(i) for i in range(100)])
        with contextlib.suppress(OSError), open(target / "filler", "wb") as f:
            f.write(b"x" * (8 << 20))  # the disk is full
        await asyncio.gather(*[t(i) for i in range(1000)])
        await wait_until(lambda: "No space left" in caplog.text, DEADLINE)
        await asyncio.wait_for(engine.shutdown(), DEADLINE)
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert "lines could not be written" in caplog.text  # the writer's own count
    assert "made no progress" not in caplog.text
    assert "records were not written" not in caplog.text
