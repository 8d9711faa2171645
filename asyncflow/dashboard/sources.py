"""Span sources: where a run's records come from, behind one small interface.

``SpanSource.poll()`` reads what is new and returns the run as it stands
(a :class:`~asyncflow.dashboard.model.Run`), or raises :class:`SourceError`
with a message meant for the page. Adapters:

- :class:`CheckpointSource`: a checkpoint JSON Lines file, or a directory of
  them (the run that started last first), tailed incrementally while a run
  writes it;
- :class:`OtlpFileSource`: an OTLP/JSON file;
- :class:`JaegerSource`: Jaeger v2's HTTP query API (``/api/v3``);
- :class:`TempoSource`: Tempo's HTTP API (TraceQL search, then trace by id).

Parsing is pure and lives in ``_checkpoint`` and ``_otlp``; this module only
reads files and URLs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any

from asyncflow.telemetry import names as n

from . import _finished, _otlp
from ._base import FetchedSource, SourceError, SpanSource, gc_paused
from ._checkpoint import CheckpointParser
from ._remote import JaegerSource, TempoSource
from .model import Run, RunBuilder

__all__ = [
    "CheckpointSource",
    "JaegerSource",
    "OtlpFileSource",
    "SourceError",
    "SpanSource",
    "TempoSource",
    "open_source",
]

_CHUNK = 4 * 1024 * 1024  # bytes read per step: bounds the memory a large first read takes
_PEEK = 256  # bytes of a line's start enough to tell it cannot be a telemetry record
_HEADER = b'{"section":"header"'  # how a layout 2 file starts


def _cannot_be_record(start: bytes) -> bool:
    """A line that begins with ``start`` can never become a record (a JSON object)."""
    head = start.lstrip()
    return bool(head) and not head.startswith(b"{")


class _Tail:
    """One checkpoint file read incrementally.

    ``offset`` is how far the file has been read. The bytes of a last line
    still without its newline (a run writing it, or killed mid-write) are
    kept in ``pending`` until the newline comes, so a line of any length is
    parsed whole and read from the file only once. ``base`` is added to the
    builder's versions: past those of the runs the path held before.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None
        self.base = 0
        self.may_scan = _finished.SCANNER is not None
        self._restart()

    def _restart(self) -> None:
        self.builder = RunBuilder(str(self.path))
        self.parser = CheckpointParser(self.builder)
        self.offset = 0
        self.pending = bytearray()
        self.skipping = False  # the current line is no record: drop it up to its newline
        self.scanned = False  # read by the compiled scanner (a finished file, at once)

    def snapshot(self) -> Run:
        """The run read so far, its version counted over every run this path held."""
        run = self.builder.snapshot()
        return dataclasses.replace(run, version=self.base + run.version) if self.base else run

    @property
    def torn(self) -> int:
        """Bytes of the last line read so far, waiting for the rest of it."""
        return len(self.pending)

    def read(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise SourceError(f"{self.path} does not exist (any more).") from None
        except OSError as exc:
            raise SourceError(f"Cannot read {self.path}: {exc.strerror or exc}") from None
        identity = (stat.st_dev, stat.st_ino)
        if self.identity is not None and (identity != self.identity or stat.st_size < self.offset):
            # The file was replaced or truncated: another run, read from its
            # start. Its versions go on past the last one of the old run, so
            # equal versions of this source still hold equal data.
            self.base += self.builder.version + 1
            self._restart()
        self.identity = identity
        gone = not _writer_alive(self.path)
        if self.scanned and stat.st_size != self.offset:
            # A finished file that changed after all: read the Python way, from its start.
            self.base += self.builder.version + 1
            self.may_scan = False
            self._restart()
        if stat.st_size == self.offset and self.builder.version:
            self.builder.writer_gone(gone)
            return
        if gone and self.offset == 0 and self.may_scan and self._scan():
            self._report(stat.st_size)
            self.builder.writer_gone(gone)
            return
        try:
            with open(self.path, "rb") as f, gc_paused():
                f.seek(self.offset)
                while True:
                    data = f.read(_CHUNK)
                    self.offset += len(data)
                    self._take(data)
                    if len(data) < _CHUNK:
                        break
                self.parser.flush()
        except OSError as exc:
            raise SourceError(f"Cannot read {self.path}: {exc.strerror or exc}") from None
        self._report(stat.st_size)
        # After the report: a file that is no checkpoint raised above, and is
        # read (and reported) again at the next poll.
        self.builder.writer_gone(gone)

    def _scan(self) -> bool:
        """Read a finished layout 2 file with the compiled scanner (``_finished``).

        False when it is no such file or the scanner cannot take it: the
        builder and parser are as new, for the Python reader.
        """
        try:
            with open(self.path, "rb") as f, gc_paused():
                if not f.read(len(_HEADER)).startswith(_HEADER):
                    return False
                f.seek(0)
                scanned, others, read, rest = _finished.scan(f)
                parser, builder = self.parser, self.builder
                if not parser.feed_others(others) or builder.task_count():
                    # Task lines or spans the scanner did not take: the Python
                    # reader puts them together with the others.
                    raise _finished.Unreadable("task records outside the scanner")
                builder.add_records(scanned.blocks())
                builder.add_scanned(scanned)
                parser.records += scanned.lines
                parser.hold_open_tasks(scanned.open_tasks())
                parser.flush()  # a killed run's unfinished tasks, as feed leaves them
        except _finished.Unreadable:
            self._restart()
            return False
        except OSError as exc:
            raise SourceError(f"Cannot read {self.path}: {exc.strerror or exc}") from None
        self.offset = read + len(rest)  # all of it read, a last line not yet whole held
        self.scanned = True
        self._hold(rest)
        return True

    def _take(self, data: bytes) -> None:
        """Parse the lines ``data`` completes; keep the start of a line it leaves open."""
        end = data.rfind(b"\n") + 1
        if not end:
            self._hold(data)
            return
        lines: bytes | bytearray = data[:end]
        if self.skipping:
            lines = lines[lines.find(b"\n") + 1 :]
            self.skipping = False
        elif self.pending:
            self.pending += lines
            lines, self.pending = self.pending, bytearray()
        if lines:
            self.parser.feed(lines.decode("utf-8", errors="replace").split("\n"))
        self._hold(data[end:])

    def _hold(self, data: bytes) -> None:
        """Keep ``data``, the next bytes of a line without its newline yet.

        A line that cannot become a record is counted as a bad line at once
        and skipped up to its newline rather than kept.
        """
        if self.skipping or not data:
            return
        self.pending += data
        start = bytes(self.pending[:_PEEK])
        if _cannot_be_record(start):
            self.parser.feed([start.decode("utf-8", errors="replace")])
            self.pending = bytearray()
            self.skipping = True

    def _report(self, size: int) -> None:
        builder, parser, name = self.builder, self.parser, self.path.name
        if size == 0:
            builder.problem(
                "empty",
                f"{name} is empty: no telemetry recorded yet. "
                "The page shows the run as soon as it writes.",
            )
        else:
            builder.clear_problem("empty")
        if self.torn:
            builder.problem(
                "torn",
                f"The last line of {name} is incomplete ({self.torn} bytes): it is skipped "
                "until the rest is written (a run killed mid-write leaves such a line).",
            )
        else:
            builder.clear_problem("torn")
        if parser.bad_lines and parser.records:
            builder.problem(
                "bad",
                f"Skipped {parser.bad_lines} line(s) of {name} that are not telemetry "
                f"records (first: {parser.first_bad!r}).",
            )
        if parser.bad_lines and not parser.records:
            raise SourceError(
                f"{name} is not an asyncflow checkpoint file: none of its "
                f"{parser.bad_lines} line(s) is a telemetry record "
                f"(first: {parser.first_bad!r})."
            )


_HEAD = 64 * 1024  # bytes at a file's start searched for its SessionStarted line
_Start = tuple[tuple[int, int], float | None]  # a file's (st_dev, st_ino), its session start


def _session_start(path: Path) -> float | None:
    """The time of the ``SessionStarted`` event at the start of ``path``, once written."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return None
    for line in head.split(b"\n")[:-1]:  # whole lines only
        if n.EVENT_SESSION_STARTED.encode() not in line:
            continue
        with contextlib.suppress(LookupError, TypeError, ValueError):  # not such a line
            record = json.loads(line)
            if (record[n.SECTION], record["name"]) == (n.SECTION_EVENT, n.EVENT_SESSION_STARTED):
                t = float(record["event_time"])
                return t if math.isfinite(t) else None
    return None


class CheckpointSource(SpanSource):
    """A checkpoint file, or the latest run's file of a directory, read as it grows.

    Args:
        path: a ``.telemetry.jsonl`` file or a directory of them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self._tails: dict[Path, _Tail] = {}
        self._chosen: Path | None = None
        self._starts: dict[Path, _Start] = {}

    def _files(self) -> list[Path]:
        """The files, the run that started last first (not the file written
        last: runs writing into one directory at once would take turns)."""
        if not self.path.is_dir():
            return [self.path]
        known, self._starts = self._starts, {}
        keyed = []
        for path in self.path.glob(f"*{n.CHECKPOINT_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # removed since the listing
                keyed.append((self._started(path, known.get(path)), path))
        return [path for _, path in sorted(keyed, reverse=True)]

    def _started(self, path: Path, known: _Start | None) -> tuple[float, float, str]:
        """When the run of ``path`` started, as a sort key that stays put while it writes.

        The epoch second of the file's name (``<session>.<epoch>.telemetry.jsonl``);
        within a second its ``SessionStarted`` time (a file without one yet
        started last); then the name. A file named otherwise goes by its
        ``SessionStarted`` time, else its modification time.
        """
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino)
        start = known[1] if known and known[0] == identity else _session_start(path)
        if start is not None or stat.st_size >= _HEAD:  # either will not change
            self._starts[path] = (identity, start)
        epoch = path.name.removesuffix(n.CHECKPOINT_SUFFIX).rpartition(".")[2]
        first = float(epoch) if epoch.isdigit() else stat.st_mtime if start is None else start
        return first, math.inf if start is None else start, path.name

    def runs(self) -> list[tuple[str, str]]:
        """The checkpoint files, the latest run first (a file source has just itself)."""
        try:
            return [(str(p), p.name) for p in self._files()]
        except OSError:
            return []

    def select(self, key: str) -> None:
        """Show the file ``key``."""
        self._chosen = Path(key)

    def poll(self) -> Run:
        """Read what was appended since the last poll."""
        if not self.path.exists():
            raise SourceError(f"{self.path} does not exist.")
        try:
            files = self._files()
        except OSError as exc:
            raise SourceError(f"Cannot list {self.path}: {exc.strerror or exc}") from None
        if not files:
            raise SourceError(
                f"No checkpoint files (*{n.CHECKPOINT_SUFFIX}) in {self.path} yet. Start a run "
                "with engine.start_telemetry(checkpoint_path=...) pointing here."
            )
        path = self._chosen if self._chosen in files else files[0]
        tail = self._tails.get(path)
        if tail is None:
            tail = self._tails[path] = _Tail(path)
        tail.read()
        return tail.snapshot()


class OtlpFileSource(FetchedSource):
    """An OTLP/JSON file: one document, or one document per line (collector file exporter).

    Args:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.label = str(self.path)
        self._last: Run | None = None

    def poll(self) -> Run:
        """Read the file again if it changed."""
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if self._last is not None and key == self._key:
                return self._last
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise SourceError(f"{self.path} does not exist.") from None
        except OSError as exc:
            raise SourceError(f"Cannot read {self.path}: {exc.strerror or exc}") from None
        name = self.path.name
        if not text.strip():
            raise SourceError(f"{name} is empty: no spans exported yet.")
        try:
            documents = [json.loads(text)]
        except ValueError:
            # JSON Lines; a last line without its newline may still be written.
            lines = text.split("\n")
            documents = []
            for line in lines[:-1] if not text.endswith("\n") else lines:
                with contextlib.suppress(ValueError):
                    if line.strip():
                        documents.append(json.loads(line))
        spans: list[dict[str, Any]] = []
        recognised = False
        for document in documents:
            with contextlib.suppress(ValueError):
                spans.extend(_otlp.spans_from_document(document))
                recognised = True
        if not recognised:
            raise SourceError(f"{name} is not an OTLP/JSON trace file (no resourceSpans in it).")
        self._last = self._run(spans, key)
        return self._last


def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(256).lstrip()
    except OSError:
        return ""
    if head.startswith(f'{{"{n.SECTION}"'.encode()):
        return "checkpoint"
    if any(head.startswith(b'{"' + key) for key in (b"resourceSpans", b"result", b"batches")):
        return "otlp"
    return ""


def open_source(
    path: str | os.PathLike[str] | None = None,
    *,
    jaeger: str | None = None,
    tempo: str | None = None,
    service: str = n.DEFAULT_SERVICE_NAME,
    trace_id: str | None = None,
) -> SpanSource:
    """The source for a path (checkpoint file or directory, OTLP/JSON file) or an API URL.

    Raises:
        ValueError: no input, or more than one.
    """
    given = [x for x in (path, jaeger, tempo) if x]
    if len(given) != 1:
        raise ValueError("give exactly one of a run file or directory, --jaeger URL, --tempo URL")
    if jaeger:
        return JaegerSource(jaeger, service, trace_id)
    if tempo:
        return TempoSource(tempo, service, trace_id)
    assert path is not None
    p = Path(path)
    if p.is_dir():
        return CheckpointSource(p)
    kind = _sniff(p)
    if kind == "otlp" or (not kind and p.suffix == ".json"):
        return OtlpFileSource(p)
    return CheckpointSource(p)


def _writer_alive(path: str | os.PathLike[str]) -> bool:
    """Whether a writer on this machine still has the checkpoint file open.

    The engine's checkpoint writers hold a shared ``flock`` on the file for
    as long as they run (``asyncflow.telemetry.checkpoint``); a run
    without ``SessionEnded`` whose lock is free has stopped (killed, or
    its machine went down). Files on another machine's disk answer False.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also lets go of the lock, if it was ours
    return False
