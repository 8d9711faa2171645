"""The JSON Lines checkpoint file: a crash-safe record of a run.

One JSON object per line, ``"section"`` first, so a reader can pick
sections by prefix without parsing. Layout 2 (docs/telemetry.md) starts
with a ``header`` line and writes a task's steps as small ``task`` lines;
:func:`read_checkpoint` reads both layouts into layout 1's ``event``,
``span`` and ``metric`` records. The
lines are rendered and appended by a writer process (a thread when no
process can be started), whole, at least once a second; a run killed
mid-way leaves a file whose complete lines all parse. Readers skip a torn
last line.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import names as n
from ._file_out import FileOut, finish_file
from ._layout import Layout1Records
from ._pipe_writer import (
    CLOSE_DEADLINE,
    NoWriterProcess,
    ProcessCheckpointWriter,
    Stall,
    file_size,
)
from ._records import SHAPE
from ._render import LineRenderer
from ._spill import counted, dumps
from ._unencodable import LINE_ERRORS

__all__ = [
    "CheckpointWriter",
    "ProcessCheckpointWriter",
    "checkpoint_files",
    "open_checkpoint",
    "read_checkpoint",
]

logger = logging.getLogger("asyncflow.telemetry")

# Lines waiting before the writer is woken early.
_WAKE_AT = 5_000

# Records waiting for a slow (or stalled) writer thread; beyond, they drop.
MAX_QUEUED = 500_000


class _Sink:
    """Where checkpoint records go: queued here, handed on by a background thread.

    Subclasses say what handing on means (:meth:`_hand_on`) and how to finish
    (:meth:`_finish`); queueing never blocks the caller and is thread-safe.
    """

    path: Path

    def _start(self, interval: float) -> None:
        self._queue: deque[tuple[Any, ...]] = deque()
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self._failed = False
        self.dropped = 0
        self._in_hand = 0  # records of the batch being written
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="asyncflow-checkpoint", daemon=True)
        self._thread.start()

    def write(self, record: tuple[Any, ...]) -> None:
        """Queue one record. Never blocks; thread-safe."""
        queue = self._queue
        # A kind's names are never dropped: its later records need them.
        if len(queue) >= MAX_QUEUED and record[0] != SHAPE:
            if not self.dropped:
                logger.error(
                    "checkpoint writer for %s is not keeping up (stalled disk?): dropping "
                    "records; the count is reported at the end",
                    self.path,
                )
            self.dropped += 1
            return
        queue.append(record)
        if len(queue) > _WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def flush_soon(self) -> None:
        """Nothing to do: a writer thread dies with this process anyway."""

    def write_line(self, line: str) -> None:
        """Queue one rendered line."""
        self.write(("L", line))

    def write_record(self, record: dict[str, Any]) -> None:
        """Queue one record as a JSON line."""
        self.write(("L", dumps(record) + "\n"))

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
            with self._lock:
                self._retry()

    def _drain(self, timeout: float = -1) -> None:
        if not self._lock.acquire(timeout=timeout):
            return  # the writer thread is stuck on the disk
        try:
            queue = self._queue
            count = len(queue)
            if not count:
                return
            batch = [queue.popleft() for _ in range(count)]
            self._in_hand = counted(batch)  # lost if the disk never lets this write end
            try:
                self._hand_on(batch)
            except (OSError, ValueError) as exc:  # not the disk (that waits): a closed file
                if not self._failed:
                    self._failed = True
                    logger.error("checkpoint file %s: writing failed: %s", self.path, exc)
                self.dropped += counted(batch)
            self._in_hand = 0
        finally:
            self._lock.release()

    def close(self, deadline: float = CLOSE_DEADLINE) -> None:
        """Hand on everything queued and finish the file, within ``deadline``
        seconds whatever the disk does. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        # A thread that gets on with it is waited for; one stuck for
        # ``deadline`` seconds on the disk is not.
        stalled = Stall(deadline, lambda: (len(self._queue), file_size(self.path)))
        while self._thread.is_alive() and not stalled():
            self._thread.join(0.25)
        # A thread stuck on the disk holds the lock: the deadline is spent.
        self._drain(0 if self._thread.is_alive() else deadline)
        lost = len(self._queue) + self.dropped + self._in_hand
        if self._thread.is_alive():
            logger.error("checkpoint file %s: the writer thread is stuck; not waiting", self.path)
        else:
            self._finish()
        if lost:
            logger.error("checkpoint file %s: %d records were not written", self.path, lost)

    def _hand_on(self, batch: list[tuple[Any, ...]]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _retry(self) -> None:
        """Try again what failed (called now and then by the thread)."""

    def _finish(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class CheckpointWriter(_Sink):
    """Renders and appends records from a background thread of this process.

    The fallback when the writer process cannot start: the rendering then
    competes with the engine for the GIL.

    Args:
        path: the file to create (its directory is created).
        renderer: turns records into lines.
        flush_interval: the longest time a line waits before it is written.
    """

    def __init__(
        self, path: str | os.PathLike[str], renderer: LineRenderer, flush_interval: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._renderer = renderer
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Readers tell a run whose writer is gone by this lock being free.
        fcntl.flock(fd, fcntl.LOCK_SH)
        # What the writer process does with a full disk, done here: lines
        # wait (bounded) and are written on a fresh line once there is room.
        self._out = FileOut(fd, str(self.path), _say)
        # Lone surrogates (bytes of a name that is not UTF-8) written escaped.
        self._out.add(renderer.header().encode("utf-8", LINE_ERRORS))
        self._start(flush_interval)

    def _hand_on(self, batch: list[tuple[Any, ...]]) -> None:
        render = self._renderer.render
        lines = []
        for record in batch:
            try:
                lines.append(render(record))
            except Exception:
                logger.exception("checkpoint file %s: a record could not be rendered", self.path)
        self._out.add("".join(lines).encode("utf-8", LINE_ERRORS))

    def _retry(self) -> None:
        self._out.flush()  # room again after a full disk?
        self._out.check_file()  # said once if the file was removed

    def _finish(self) -> None:
        finish_file(self._out, str(self.path), _say)


def _say(line: str) -> None:
    """Log what the file's writer says, as the writer process's lines are."""
    kind, _, text = line.partition(" ")
    if kind == "resumed":
        logger.warning("checkpoint file: %s", text)
    else:
        logger.error("checkpoint file: %s", text)


def open_checkpoint(
    path: str | os.PathLike[str],
    header: tuple[str, str, str],
    *,
    in_process: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
) -> _Sink | ProcessCheckpointWriter:
    """A checkpoint sink for ``path``: a writer process, else a writer thread.

    Raises:
        OSError: the file cannot be created or written; the message names it.
    """
    if not in_process:
        try:
            return ProcessCheckpointWriter(path, header, loop)
        except NoWriterProcess as exc:
            logger.warning("no checkpoint writer process (%s): writing from a thread", exc)
    return CheckpointWriter(path, LineRenderer(*header))


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint files at ``path``: the file itself, or those in a directory."""
    p = Path(path)
    if p.is_dir():
        return sorted(p.glob(f"*{n.CHECKPOINT_SUFFIX}"))
    return [p]


def read_checkpoint(
    path: str | os.PathLike[str], sections: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the records of a checkpoint file (or of every file in a directory).

    Either layout reads the same: a layout 2 file's task lines come out as
    the ``event`` and ``span`` records layout 1 wrote (docs/telemetry.md).

    Args:
        path: a ``.telemetry.jsonl`` file or a directory of them.
        sections: only these sections (``event``, ``span``, ``metric``).

    A line that does not parse, or parses into something that is not a
    record (a span whose ``attributes`` is not an object, say), is skipped:
    a torn last line is expected after a crash; the number of other bad
    lines is logged once per file.
    """
    chosen = None if sections is None else frozenset(sections)
    wanted = None
    if chosen is not None:
        # Task lines and the header make up layout 2's events and spans.
        wanted = tuple(f'{{"section":"{s}"' for s in (*chosen, n.SECTION_TASK, n.SECTION_HEADER))
    for file in checkpoint_files(path):
        bad = 0
        torn = False
        first = ""
        layout = Layout1Records(events=chosen is None or n.SECTION_EVENT in chosen)
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if wanted is not None and not line.startswith(wanted):
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # deep nesting is not a record
                    problem: str | None = "not JSON"
                else:
                    problem = n.record_problem(record)
                if problem is None:
                    for out in layout.records(record):
                        if chosen is None or out[n.SECTION] in chosen:
                            yield out
                elif not line.endswith("\n"):
                    torn = True  # the last line, cut short: expected after a crash
                else:
                    bad += 1
                    first = first or problem
        if bad:
            logger.warning(
                "%s: skipped %d line(s) that are not telemetry records (first: %s)%s",
                file,
                bad,
                first,
                " and a torn last line" if torn else "",
            )
