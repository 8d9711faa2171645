"""The JSON Lines checkpoint file: a crash-safe record of a run.

One JSON object per line, ``"section"`` first (``event``, ``span`` or
``metric``), so a reader can pick sections by prefix without parsing. The
lines are rendered and appended by a writer process (a thread when no
process can be started), whole, at least once a second; a run killed
mid-way leaves a file whose complete lines all parse. Readers skip a torn
last line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import names as n
from ._render import LineRenderer

__all__ = [
    "CheckpointWriter",
    "ProcessCheckpointWriter",
    "checkpoint_files",
    "open_checkpoint",
    "read_checkpoint",
]

logger = logging.getLogger("asyncflow.telemetry")

# Lines waiting before the writer is woken early (bounds the memory held).
_WAKE_AT = 5_000


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
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="asyncflow-checkpoint", daemon=True)
        self._thread.start()

    def write(self, record: tuple[Any, ...]) -> None:
        """Queue one record. Never blocks; thread-safe."""
        queue = self._queue
        queue.append(record)
        if len(queue) > _WAKE_AT and not self._wake.is_set():
            self._wake.set()

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

    def _drain(self) -> None:
        with self._lock:
            queue = self._queue
            count = len(queue)
            if not count:
                return
            batch = [queue.popleft() for _ in range(count)]
            if self._failed:
                return
            try:
                self._hand_on(batch)
            except (OSError, ValueError) as exc:  # disk full, pipe closed, file closed
                self._failed = True
                logger.warning("checkpoint file %s: writing stopped: %s", self.path, exc)

    def close(self) -> None:
        """Hand on everything queued and finish the file. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=60)
        self._drain()
        self._finish()

    def _hand_on(self, batch: list[tuple[Any, ...]]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

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
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._start(flush_interval)

    def _hand_on(self, batch: list[tuple[Any, ...]]) -> None:
        render = self._renderer.render
        lines = []
        for record in batch:
            try:
                lines.append(render(record))
            except Exception:
                logger.exception("checkpoint file %s: a record could not be rendered", self.path)
        self._file.write("".join(lines))
        self._file.flush()

    def _finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()


class ProcessCheckpointWriter(_Sink):
    """Ships records to a writer process that renders and appends them.

    Rendering JSON costs more than the engine spends on a no-op task; in a
    process of its own it runs on another core instead of holding this
    process's GIL. Records are batched and sent at least every
    ``send_interval`` seconds; the writer process flushes the file after each
    batch. If this process dies, the writer still writes what it received.

    Args:
        path: the file to create.
        header: ``(session_id, node_id, trace_hex)`` for the renderer.
        send_interval: the longest time a record waits before it is sent.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: tuple[str, str, str],
        send_interval: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH", "")) if p
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "asyncflow.telemetry._writer_main", str(self.path), *header],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C for the run must not kill its record
        )
        assert self._proc.stdin is not None
        self._pipe = self._proc.stdin
        self._start(send_interval)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until the writer process has started (its start-up is then not
        paid during the run). Returns False if it did not say so in time."""
        out = self._proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else b""
        out.close()
        if line.strip() != b"ready":
            logger.warning("checkpoint writer for %s did not start in %.0f s", self.path, timeout)
            return False
        return True

    def _hand_on(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            blob = marshal.dumps(batch)
        except ValueError:  # an attribute value marshal cannot carry
            blob = marshal.dumps([_plain(r) for r in batch])
        self._pipe.write(struct.pack("<I", len(blob)) + blob)
        self._pipe.flush()

    def _finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()
        try:
            self._proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            logger.warning("checkpoint writer for %s did not finish; killing it", self.path)
            self._proc.kill()
            self._proc.wait()


def _plain(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A record whose values marshal can carry (others become strings)."""
    try:
        marshal.dumps(record)
        return record
    except ValueError:
        return tuple(json.loads(dumps(list(record))))


def open_checkpoint(
    path: str | os.PathLike[str], header: tuple[str, str, str], *, in_process: bool = False
) -> _Sink:
    """A checkpoint sink for ``path``: a writer process, else a writer thread."""
    if not in_process:
        try:
            return ProcessCheckpointWriter(path, header)
        except OSError as exc:
            logger.warning("no checkpoint writer process (%s): writing from a thread", exc)
    return CheckpointWriter(path, LineRenderer(*header))


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(record: Any) -> str:
    """A compact JSON text for one record (unknown types as ``str``)."""
    return _encoder.encode(record)


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

    Args:
        path: a ``.telemetry.jsonl`` file or a directory of them.
        sections: only these sections (``event``, ``span``, ``metric``).

    A line that does not parse is skipped: a torn last line is expected after
    a crash; any other bad line is counted and logged once per file.
    """
    wanted = None if sections is None else tuple(f'{{"section":"{s}"' for s in sections)
    for file in checkpoint_files(path):
        bad = 0
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if wanted is not None and not line.startswith(wanted):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(record, dict):
                    yield record
        if bad > 1:
            logger.warning("%s: skipped %d lines that did not parse", file, bad)
