"""The engine's end of the checkpoint writer process.

Records queue up and go to the writer in one write at the end of any
event-loop turn that completes a task's future (the engine asks for it
before it completes the future, see ``flush_soon``), else within a quarter
second. They are written to a spill file the writer process holds open as
well (a ``memfd`` on Linux: memory, no disk), which it reads behind the
engine: a task's records are in the writer's hands before whoever awaits
its future runs, however far behind the writer is, and a SIGKILL of the
engine loses nothing that finished. The spill is bounded: the writer says
how far it has read in the file's first bytes, and a run more than
``BACKLOG_BYTES`` ahead of it waits while it keeps reading and drops (counted,
reported) once it stalls; a task never waits for the disk. The pipe to the
writer's standard input carries no data: its end tells the writer that the
engine closed (or died). Closing gives up on a writer that makes no progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._otlp_sender import EXPORT_TIMEOUT
from ._records import SHAPE
from ._spill import (
    END_OF_RECORDS,
    FRAME_RECORDS,
    READ_UP_TO,
    SPILL_START,
    counted,
    dumps,
    make_spill,
    records_in,
)
from ._spill import frame as _frame

__all__ = [
    "BACKLOG_BYTES",
    "CLOSE_DEADLINE",
    "FRAME_RECORDS",
    "RELIEVE_RECORDS",
    "NoWriterProcess",
    "ProcessCheckpointWriter",
    "Stall",
    "file_size",
]

logger = logging.getLogger("asyncflow.telemetry")

# Bytes of records written to the spill and not yet read by the writer;
# beyond, the sender waits for a writer that keeps reading, and drops them
# for one that read nothing for STALL_SECONDS.
BACKLOG_BYTES = 64 << 20
STALL_SECONDS = 2.0

# Seconds close() waits for a writer that makes no progress (takes nothing,
# writes nothing) before it gives up on it.
CLOSE_DEADLINE = 5.0

_WRITER_MODULE = "asyncflow.telemetry._writer_main"

# Records queued before the recorder's relieve() sends them on at once.
RELIEVE_RECORDS = 8 * FRAME_RECORDS

# Seconds between hand-ons of records from other threads.
_THREAD_INTERVAL = 0.25


class NoWriterProcess(Exception):
    """The writer process could not be started (the file itself is fine)."""


class ProcessCheckpointWriter:
    """Ships records to a writer process that renders and appends them.

    Rendering JSON costs more than the engine spends on a no-op task; in a
    process of its own it runs on another core instead of holding this
    process's GIL. If this process dies, the writer still writes what it
    received, then exits.

    With ``otlp`` settings, the same process also builds the finished
    spans from the records and exports them over OTLP (see
    ``_writer_main``); ``path`` may then be None (no checkpoint file). What
    it reports of the endpoint goes to ``health``: one warning while it is
    down, as for the metrics the engine exports itself.

    Args:
        path: the file to create (its directory too), or None.
        header: ``(session_id, node_id, trace_hex)`` for the renderer.
        loop: the engine's loop: :meth:`flush_soon`, called on it, sends
            the queued records at the end of the current turn.
        otlp: ``endpoint``, ``protocol``, ``resource`` (attributes) and
            ``session_span`` (the session span's id), or None.
        health: told of the OTLP endpoint's failures and recovery.

    Raises:
        OSError: the file cannot be created or written (e.g. a read-only
            directory); the message names the path.
        NoWriterProcess: no process could be started.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        header: tuple[str, str, str],
        loop: asyncio.AbstractEventLoop | None = None,
        otlp: dict[str, Any] | None = None,
        health: Any = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._what = str(self.path) if self.path is not None else "OTLP export"
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else None
        self._health = health
        self.otlp_sent = 0  # spans the process exported: its progress at close
        self._export_time = EXPORT_TIMEOUT if otlp is not None else 0.0
        fd = _open_for_append(self.path) if self.path is not None else -1
        try:
            self._spill = make_spill()
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise NoWriterProcess(f"no spill file for the writer: {exc}") from exc
        try:
            package_parent = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (package_parent, env.get("PYTHONPATH", "")) if p
            )
            argv = [
                str(os.getpid()),
                str(self._spill),
                str(fd) if fd >= 0 else "-",
                str(path or ""),
                *header,
            ]
            if otlp is not None:
                argv.append(json.dumps(otlp, default=str))
            self._proc = subprocess.Popen(
                [*_writer_command(), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=(self._spill, fd) if fd >= 0 else (self._spill,),
                start_new_session=True,  # a Ctrl-C for the run must not kill its record
            )
        except OSError as exc:
            os.close(self._spill)
            raise NoWriterProcess(str(exc)) from exc
        finally:
            if fd >= 0:
                os.close(fd)
        # Records from any thread, in the order they were written. A list:
        # appending is atomic, and taking them all is two C calls (_take).
        self._pending: list[tuple[Any, ...]] = []
        # write() without its call: the recorder queues four records a task.
        self.put: Callable[[tuple[Any, ...]], None] = self._pending.append
        self._scheduled = False
        self._end = SPILL_START  # where the next frame goes in the spill
        self._read_up_to = SPILL_START  # what the writer said it has read, last asked
        self._stalled = False  # the writer read nothing for STALL_SECONDS
        self._stalled_said = False
        self._close_stall: Stall | None = None  # closing's deadline, once it started
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = False
        self._broken = False
        self._closed = False  # nothing more is sent
        self.dropped = 0
        # The writer process's peak RSS in bytes, as it reports at exit (after close()).
        self.writer_peak_rss: int | None = None
        self._thread = threading.Thread(target=self._run, name="asyncflow-checkpoint", daemon=True)
        self._thread.start()
        self._listener: threading.Thread | None = None

    # ------------------------------------------------------------------ start
    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the writer process has started (its start-up is then not
        paid during the run). Returns False if it did not say so in time."""
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else b""
        if line.strip() != b"ready":
            logger.warning("telemetry writer for %s did not start in %.0f s", self._what, timeout)
            return False
        self._listener = threading.Thread(
            target=self._listen, name="asyncflow-checkpoint-reports", daemon=True
        )
        self._listener.start()
        return True

    def _listen(self) -> None:
        """Log what the writer process reports (failures, resumption)."""
        out = self._proc.stdout
        assert out is not None
        for raw in out:
            kind, _, text = raw.decode("utf-8", "replace").strip().partition(" ")
            if kind == "error":
                logger.error("checkpoint file: %s", text)
            elif kind == "resumed":
                logger.warning("checkpoint file: %s", text)
            elif kind == "otlp":
                self._otlp_report(text)
            elif kind == "peak_rss" and text.isdigit():
                self.writer_peak_rss = int(text)

    def _otlp_report(self, text: str) -> None:
        """What the process says of OTLP export: progress, failure, recovery."""
        what, _, detail = text.partition(" ")
        if what == "sent":
            self.otlp_sent = int(detail)
        elif what in ("down", "up") and self._health is not None:
            self._health.outcome(what == "up", detail)
        elif what == "dropped":
            down = self._health is not None and self._health.down
            # While the endpoint is down, its one warning said it all.
            logger.log(
                logging.INFO if down else logging.WARNING,
                "OTLP export: %s spans were not sent",
                detail,
            )

    # ------------------------------------------------------------------ records
    def write(self, record: tuple[Any, ...]) -> None:
        """Queue one record. Never blocks; thread-safe.

        Records go out at the end of a loop turn that completes a future
        (:meth:`flush_soon`), else within a quarter second.
        """
        self._pending.append(record)

    def write_line(self, line: str) -> None:
        """Queue one rendered line."""
        self.write(("L", line))

    def write_record(self, record: dict[str, Any]) -> None:
        """Queue one record as a JSON line."""
        self.write(("L", dumps(record) + "\n"))

    def flush_soon(self) -> None:
        """Send what is queued at the end of this loop turn, before the
        callbacks scheduled from now on run (call before completing a future)."""
        if self._scheduled or self._loop_thread != threading.get_ident():
            return
        assert self._loop is not None
        try:
            self._loop.call_soon(self._flush)
        except RuntimeError:  # the loop is closed: the hand-on thread sends them
            self._wake.set()
        else:
            self._scheduled = True

    @property
    def queued(self) -> int:
        """Records queued and not yet sent (not yet in the spill)."""
        return len(self._pending)

    def relieve(self) -> None:
        """Send what is queued now if it grew past a few frames (call on the
        thread that queues, now and then).

        One loop turn that creates a million tasks queues millions of records
        before any future completes: sent as they come, at most
        ``RELIEVE_RECORDS`` of them wait as objects, and a writer slower than
        the burst slows it (see :meth:`_send`) instead of the queue growing
        the engine's memory without bound.
        """
        if len(self._pending) > RELIEVE_RECORDS:
            with self._lock:
                batch = _take(self._pending)
                if batch:
                    self._send(batch)

    def _flush(self) -> None:
        self._scheduled = False
        # Taken and sent under the lock: whoever flushes, order is kept.
        with self._lock:
            batch = _take(self._pending)
            if batch:
                self._send(batch)

    def _send(self, batch: list[tuple[Any, ...]]) -> None:
        """Append a batch to the spill, where the writer reads it.

        A run more than ``BACKLOG_BYTES`` ahead of the writer waits while the
        writer keeps reading (a writer slower than the run slows the run
        instead of losing its record), and drops the batch once the writer
        read nothing for ``STALL_SECONDS`` (a hung disk, a stopped process:
        the run goes on). Called with the lock held.
        """
        if self._closed:
            return
        if self._broken:  # the writer is gone: counted, said once
            self.dropped += counted(batch)
            return
        blob = _frame(batch)
        end = self._end + len(blob)
        # Room: the writer read all but BACKLOG_BYTES of the spill with the
        # batch (a batch larger than that: all before it).
        need = min(end - BACKLOG_BYTES, self._end)
        if self._read_up_to < need and not self._room_for(need):
            if self._broken:
                self.dropped += counted(batch)
            else:
                self._drop(batch)
            return
        try:
            done = 0
            while done < len(blob):  # a file takes it all, short of an error
                done += os.pwrite(self._spill, blob[done:], self._end + done)
        except OSError as exc:  # no memory (or disk) for the spill
            self._broke(exc)
            self.dropped += counted(batch)
            return
        self._end = end

    def _room_for(self, need: int) -> bool:
        """Wait until the writer has read the spill up to ``need``; False once
        it read nothing for ``STALL_SECONDS`` (at once while it still reads
        nothing after that), or is gone, or closing gave up on it."""
        since = time.monotonic()
        while True:
            if self._ask_read_up_to():
                since = time.monotonic()
                self._stalled = False
            if self._read_up_to >= need:
                return True
            if self._broken or self._closed or self._writer_ended():
                return False
            closing = self._close_stall
            if closing is not None and closing():
                return False  # closing's own deadline, counted from its start
            if self._stalled or time.monotonic() - since > STALL_SECONDS:
                self._stalled = True
                return False
            time.sleep(0.01)

    def _writer_ended(self) -> bool:
        """Whether the writer process ended on its own (then: gone, said once)."""
        code = self._proc.poll()
        if code is None:
            return False
        self._broke(OSError(f"the writer process ended with exit status {code}"))
        return True

    def _ask_read_up_to(self) -> bool:
        """Ask the writer where it has read the spill up to (it says so in
        the spill's first bytes); whether that moved since last asked."""
        with contextlib.suppress(OSError, struct.error):
            (read_up_to,) = READ_UP_TO.unpack(os.pread(self._spill, READ_UP_TO.size, 0))
            if read_up_to > self._read_up_to:
                self._read_up_to = read_up_to
                return True
        return False

    def _drop(self, batch: list[tuple[Any, ...]]) -> None:
        """Drop a batch for a stalled writer, but its kinds' names: later
        records of a kind are rendered with them, so they are sent again
        (first) with the next batch."""
        if not self._stalled_said:
            self._stalled_said = True
            logger.error(
                "checkpoint writer for %s took nothing for %.0f s (stalled disk?): "
                "dropping records; the count is reported at the end",
                self._what,
                STALL_SECONDS,
            )
        shapes = [r for r in batch if r[0] == SHAPE]
        if shapes:
            self._pending[:0] = shapes  # one C call: appends from other threads keep their place
        self.dropped += counted(batch)

    def _broke(self, exc: OSError) -> None:
        if not self._broken:
            self._broken = True
            logger.error("checkpoint writer for %s is gone: %s", self._what, exc)

    # ------------------------------------------------------------------ hand-on thread
    def _run(self) -> None:
        """Hand on records queued by other threads (and by a loop that
        stopped), and notice a writer process that ended on its own."""
        while not self._stopping:
            self._wake.wait(_THREAD_INTERVAL)
            self._wake.clear()
            if not self._broken:
                self._writer_ended()
            self._flush()

    # ------------------------------------------------------------------ close
    def close(self, deadline: float = CLOSE_DEADLINE) -> None:
        """Hand on everything queued and finish the file. Idempotent.

        A writer that makes progress (reads the spill, grows the file,
        exports spans) is waited for; one that makes none for ``deadline``
        seconds (stopped, or on a hung disk) is given up on and ended.
        """
        if self._stopping:
            return
        # One deadline for it all: the last records' room, then the end.
        stalled = self._close_stall = Stall(deadline, self._progress)
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._flush()
        with self._lock:
            # The end, said twice: in the spill, after the last records (a
            # process forked from this one may hold the pipe open), and by
            # closing the pipe.
            if not self._broken:
                with contextlib.suppress(OSError):
                    os.pwrite(self._spill, END_OF_RECORDS, self._end)
            self._closed = True
            with contextlib.suppress(OSError):
                self._proc.stdin.close()  # type: ignore[union-attr]
        # The process reads the rest of the spill and finishes the file, then
        # sends the spans still queued: an export in flight may take its
        # whole timeout.
        exporting = Stall(deadline + self._export_time, self._progress)
        while self._proc.poll() is None:
            # Until it has read the spill, the short deadline; then the export's.
            self._ask_read_up_to()
            if stalled() if self._read_up_to < self._end else exporting():
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(0.25)
        if self._proc.poll() is None:
            logger.error(
                "checkpoint writer for %s made no progress for %.0f s: killed it",
                self._what,
                deadline,
            )
            self._proc.kill()
            self._proc.wait()
        elif self._proc.returncode:
            # It died on its own (a fault in it, the kernel's OOM killer):
            # what it had not written is not in the file.
            logger.error(
                "checkpoint writer for %s ended with exit status %d: the rest of the run "
                "may be missing from it",
                self._what,
                self._proc.returncode,
            )
        lost = self.dropped
        if self._proc.returncode:  # it did not read to the end: what it left
            self._ask_read_up_to()
            lost += records_in(self._spill, self._read_up_to, self._end)
        os.close(self._spill)
        if self._listener is not None:
            self._listener.join(deadline)  # the process is gone: its output ends
        if self._listener is None or not self._listener.is_alive():
            self._proc.stdout.close()  # type: ignore[union-attr]
        if lost:
            logger.error("checkpoint file %s: %d records were not written", self._what, lost)

    def _progress(self) -> tuple[int, int, int]:
        """What grows while the process works: what it read, the file, the spans exported."""
        return (
            self._read_up_to,
            file_size(self.path) if self.path is not None else 0,
            self.otlp_sent,
        )


class Stall:
    """Whether a watched value stayed the same for ``seconds`` (no progress)."""

    def __init__(self, seconds: float, progress: Callable[[], Any]) -> None:
        self._seconds = seconds
        self._progress = progress
        self._last = progress()
        self._since = time.monotonic()

    def __call__(self) -> bool:
        now = self._progress()
        if now != self._last:
            self._last, self._since = now, time.monotonic()
        return time.monotonic() - self._since > self._seconds


def _writer_command() -> list[str]:
    """How to start the writer process: its module from this package.

    ``python -m`` puts the current directory first on ``sys.path``: run from
    a folder that holds another ``asyncflow`` (a clone of another version),
    the writer would be that one's and could not read this engine's
    records. ``-P`` (Python 3.11) leaves it out; before 3.11 the command
    takes it out itself.
    """
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", _WRITER_MODULE]
    start = (
        "import runpy, sys; del sys.path[0]; "
        f"runpy.run_module({_WRITER_MODULE!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", start]


def file_size(path: Path) -> int:
    """The size of ``path`` in bytes (-1: it cannot be read)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _take(queue: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Everything in ``queue`` now (other threads may append meanwhile: what
    they append after the copy stays, as the delete removes only the copied
    head; each of the two is one C call, which no thread interrupts)."""
    taken = queue[:]
    del queue[: len(taken)]
    return taken


def _open_for_append(path: Path) -> int:
    """Create (or open) the checkpoint file; a clear error if that cannot be done."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot write the checkpoint file {path}: {exc.strerror or exc}"
        ) from exc
    return fd  # close-on-exec: ``pass_fds`` hands it to the writer alone
