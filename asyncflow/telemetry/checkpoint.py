"""The JSON Lines checkpoint file: a crash-safe record of a run.

One JSON object per line, ``"section"`` first (``event``, ``span`` or
``metric``), so a reader can pick sections by prefix without parsing. The
writer appends whole lines from a background thread, at least once a second
and whenever enough lines are waiting; a process killed mid-run leaves a file
whose complete lines all parse. Readers skip a torn last line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import names as n

__all__ = ["CheckpointWriter", "checkpoint_files", "read_checkpoint"]

logger = logging.getLogger("asyncflow.telemetry")

# Lines waiting before the writer is woken early (bounds the memory held).
_WAKE_AT = 5_000


class CheckpointWriter:
    """Appends lines to the checkpoint file from a background thread.

    Args:
        path: the file to create (its directory is created).
        flush_interval: the longest time a line waits before it is written.
    """

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._queue: deque[str] = deque()
        self._interval = flush_interval
        self._wake = threading.Event()
        self._stopping = False
        self._failed = False
        self.lines_written = 0
        self._thread = threading.Thread(target=self._run, name="asyncflow-checkpoint", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        """Queue one line (ending in a newline). Never blocks; thread-safe."""
        queue = self._queue
        queue.append(line)
        if len(queue) > _WAKE_AT:
            self._wake.set()

    def write_record(self, record: dict[str, Any]) -> None:
        """Queue one record as a JSON line."""
        self.write(dumps(record) + "\n")

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        queue = self._queue
        count = len(queue)
        if not count:
            return
        lines = [queue.popleft() for _ in range(count)]
        if self._failed:
            return
        try:
            self._file.write("".join(lines))
            self._file.flush()
            self.lines_written += count
        except (OSError, ValueError) as exc:  # disk full, file closed under us
            self._failed = True
            logger.warning("checkpoint file %s: writing stopped: %s", self.path, exc)

    def flush(self) -> None:
        """Write what is queued now (from the calling thread)."""
        self._drain()

    def close(self) -> None:
        """Write everything queued and close the file. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._drain()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except (OSError, ValueError):
            pass
        self._file.close()


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps(record: dict[str, Any]) -> str:
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
