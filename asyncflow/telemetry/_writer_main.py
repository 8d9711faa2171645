"""The checkpoint writer process: ``python -m asyncflow.telemetry._writer_main``.

Reads length-prefixed marshal batches of records from the spill file the
engine appends them to (an open file descriptor it inherits, see
``_pipe_writer``), renders them and appends the lines to the checkpoint file
(another inherited descriptor), writing after every batch. It says in the
spill's first bytes how far it has read, and frees what it has read (Linux).
Ends once the spill is read to its end after the engine's end mark in it,
the end of standard input (the engine closed it, or died) or the engine's
process being gone (forked pool workers may hold the pipe open for ever, so
end of input alone is not enough).

Talks back on standard output, one line each: ``ready``, then ``error
<cause>`` once per kind of failure and ``resumed <what>`` when writing works
again (the engine logs them), and ``peak_rss <bytes>`` as it exits. While
the disk is full, lines wait (up to :data:`HELD_BYTES`) and are written, on
a fresh line, once there is room.

With OTLP export on (a seventh argument: the export settings as JSON), it
also builds each finished span from the same records and sends it to the
collector (``_span_assembly``, ``_otlp_sender``), reporting ``otlp ...``
lines; the file descriptor may then be ``-`` (no checkpoint file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import names as n
from ._records import expand
from ._render import LineRenderer
from ._spill import END_MARK, READ_UP_TO, SPILL_START
from ._unencodable import LINE_ERRORS

if TYPE_CHECKING:
    from ._otlp_sender import SpanSender
    from ._span_assembly import SpanAssembler

# Rendered bytes kept while the file cannot be written; beyond, lines drop.
HELD_BYTES = 16 << 20

# Seconds between checks of the engine's process and of the file.
_CHECK_EVERY = 0.5

# Bytes read from the spill at once.
_READ_BYTES = 1 << 20

# After a read smaller than _READ_BYTES, look again after _COALESCE seconds;
# while there is nothing to read, after up to _IDLE seconds (the engine
# writes once per loop turn: waking for every write would take CPU from it).
_COALESCE = 0.005
_IDLE = 0.05

# Read bytes of the spill are freed once this many have gathered.
_FREE_EVERY = 4 << 20


class FileOut:
    """Appends to the checkpoint file; survives a full disk and says so once."""

    def __init__(self, fd: int, path: str, say: Callable[[str], None]) -> None:
        self.fd = fd
        self.path = path
        self.say = say
        self.held = b""  # not written yet: starts at a line start
        self.torn = 0  # bytes of a line cut short at the end of the file
        self.dropped = 0
        self.failed_with: str | None = None
        self.gone = False
        stat = os.fstat(fd)
        self.identity = (stat.st_dev, stat.st_ino)

    def add(self, data: bytes) -> None:
        if self.failed_with is not None and len(self.held) + len(data) > HELD_BYTES:
            self.dropped += data.count(b"\n")  # the file cannot take them: bounded
            return
        self.held += data
        self.flush()

    def flush(self) -> None:
        if not self.held:
            return
        if self.torn and not self._cut_torn_line():
            return
        data = self.held
        done = 0
        while done < len(data):
            try:
                done += os.write(self.fd, data[done:])
            except OSError as exc:
                # Keep whole lines: the torn one is written again in full.
                start = data.rfind(b"\n", 0, done) + 1
                self.torn = done - start
                self.held = data[start:]
                self._failed(exc)
                return
        self.held = b""
        if self.failed_with is not None:
            lost = f"; {self.dropped} lines dropped meanwhile" if self.dropped else ""
            self.say(f"resumed {self.path}: writing again{lost}")
            self.failed_with = None
            self.dropped = 0

    def _cut_torn_line(self) -> bool:
        """Take the start of a cut line off the end of the file (it is
        written again whole); else end it, so the next line starts fresh."""
        try:
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - self.torn)
        except OSError:
            try:
                os.write(self.fd, b"\n")
            except OSError as exc:
                self._failed(exc)
                return False
        self.torn = 0
        return True

    def _failed(self, exc: OSError) -> None:
        cause = errno.errorcode.get(exc.errno or 0, "") or type(exc).__name__
        if self.failed_with != cause:
            self.failed_with = cause
            self.say(f"error {self.path}: writing stopped: {exc.strerror or exc}")

    def check_file(self) -> None:
        """Say once if the file was removed (or its directory deleted)."""
        if self.gone:
            return
        try:
            stat = os.stat(self.path)
            moved = (stat.st_dev, stat.st_ino) != self.identity
        except OSError:
            moved = True
        if moved:
            self.gone = True
            self.say(f"error {self.path}: the file was removed (or its directory); lines are lost")


def main(argv: list[str]) -> int:
    """Run the writer; returns the exit code."""
    engine_pid, spill_text, fd_text, path, session_id, node_id, trace_hex = argv[:7]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the record; the pipe ends us
    _be_nice()
    # Given, not read here: the engine may have died while this one started.
    parent = int(engine_pid)

    def say(line: str) -> None:
        with contextlib.suppress(OSError):  # nobody listens any more
            os.write(1, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    out: FileOut | None = None
    renderer: LineRenderer | None = None
    if fd_text != "-":
        fd = int(fd_text)
        # Readers tell a run whose writer is gone by this lock being free.
        fcntl.flock(fd, fcntl.LOCK_SH)
        renderer = LineRenderer(session_id, node_id, trace_hex)
        out = FileOut(fd, path, say)
        out.add(renderer.header().encode("utf-8", LINE_ERRORS))
    spans = _otlp(json.loads(argv[7]), trace_hex, say) if len(argv) > 7 else None
    spill = _Spill(int(spill_text))
    buffer = bytearray()
    say("ready")
    ended = False  # no more records will come: the engine closed the pipe or is gone
    checked = time.monotonic()
    wait = _COALESCE
    while True:
        chunk = spill.read()
        if chunk:
            buffer += chunk
            # Each frame's lines written, the engine is told it is taken.
            if _consume(buffer, renderer, out, spans, spill.took, spill.at - len(buffer)):
                ended = True  # the engine's end mark: nothing follows
            spill.free()
            if len(chunk) == _READ_BYTES:
                continue
            wait = _COALESCE
        elif ended:
            break  # read to the end after the engine's last write
        else:
            wait = min(wait * 2, _IDLE)
        if time.monotonic() - checked > _CHECK_EVERY:
            checked = time.monotonic()
            if out is not None:
                out.flush()  # room again after a full disk?
                out.check_file()
            ended = ended or os.getppid() != parent
        ready, _, _ = select.select([0], [], [], 0 if ended else wait)
        if ready and not os.read(0, 4096):
            ended = True  # the engine closed it, or died: read the spill to its end
    if out is not None:
        finish_file(out, path, say)
    if spans is not None:
        spans[1].close(_OTLP_CLOSE_DEADLINE)
    say(f"peak_rss {_peak_rss()}")
    return 0


class _Spill:
    """The engine's spill file, read from where this process got to."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.at = SPILL_START  # read up to here
        self.taken = SPILL_START  # whole frames up to here are written
        self.freed = SPILL_START
        self._punch = _hole_puncher()

    def read(self) -> bytes:
        chunk = os.pread(self.fd, _READ_BYTES, self.at)
        self.at += len(chunk)
        return chunk

    def took(self, taken: int) -> None:
        """Tell the engine that the frames up to ``taken`` are this
        process's (their lines are written)."""
        self.taken = taken
        os.pwrite(self.fd, READ_UP_TO.pack(taken), 0)

    def free(self) -> None:
        """Free the pages of what this process took (once enough gathered)."""
        taken = self.taken
        if self._punch is not None and taken - self.freed >= _FREE_EVERY:
            upto = taken & ~4095
            if not self._punch(self.fd, self.freed, upto - self.freed):
                self._punch = None  # not supported here: the memory stays
            self.freed = upto


def _hole_puncher() -> Callable[[int, int, int], bool] | None:
    """``punch(fd, start, length)``: frees a range of a file's pages
    (``fallocate`` with ``FALLOC_FL_PUNCH_HOLE``, Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    keep_size_punch_hole = 0x01 | 0x02

    def punch(fd: int, start: int, length: int) -> bool:
        return length <= 0 or fallocate(fd, keep_size_punch_hole, start, length) == 0

    return punch


# Seconds the spans still queued at the end may go without progress.
_OTLP_CLOSE_DEADLINE = 6.0


def _be_nice() -> None:
    """Run at a lower priority: on a node whose cores are all busy, the
    workflow's processes go first and this one catches up in their gaps."""
    text = os.environ.get(n.ENV_TELEMETRY_NICE, "").strip()
    try:
        increment = int(text) if text else n.TELEMETRY_NICE
    except ValueError:
        sys.stderr.write(f"asyncflow: {n.ENV_TELEMETRY_NICE}={text!r} is not an integer\n")
        increment = n.TELEMETRY_NICE
    if increment > 0:
        with contextlib.suppress(OSError):
            os.nice(increment)


def finish_file(out: FileOut, path: str, say: Callable[[str], None]) -> None:
    """Write what is held, say what was lost, and close the file."""
    out.flush()
    if out.torn:
        # The last write was cut short (a full disk) and will not be written
        # again: take its start off, so that the file ends with a whole line.
        with contextlib.suppress(OSError):
            os.ftruncate(out.fd, os.fstat(out.fd).st_size - out.torn)
    if out.held or out.dropped:
        lost = out.held.count(b"\n") + out.dropped
        say(f"error {path}: {lost} lines could not be written ({out.failed_with})")
    with contextlib.suppress(OSError):
        os.fsync(out.fd)
    os.close(out.fd)


def _otlp(
    settings: dict[str, Any], trace_hex: str, say: Callable[[str], None]
) -> tuple[SpanAssembler, SpanSender] | None:
    """The span assembler and sender for ``settings``, or None if they cannot be made."""
    from .._version import __version__
    from ._otlp_proto import SpanEncoder
    from ._otlp_sender import SpanSender, make_transport
    from ._span_assembly import SpanAssembler

    try:
        transport = make_transport(settings["endpoint"], settings["protocol"])
    except Exception as exc:  # noqa: BLE001 - said once; the file goes on
        say(f"otlp down {type(exc).__name__}: {exc}")
        return None
    encoder = SpanEncoder(trace_hex, settings["resource"], "asyncflow", __version__)
    sender = SpanSender(encoder.request, transport, say)
    return SpanAssembler(encoder, int(settings["session_span"])), sender


def _consume(
    buffer: bytearray,
    renderer: LineRenderer | None,
    out: FileOut | None,
    spans: tuple[SpanAssembler, SpanSender] | None,
    took: Callable[[int], None],
    start: int,
) -> bool:
    """Render and write every whole frame in ``buffer`` (and hand finished
    spans to OTLP), and take those frames out of it. True at the engine's
    end mark (a frame length of ``0xffffffff``). After each frame,
    ``took(offset)``: the spill's offset (``buffer`` starts at ``start``)
    up to which every frame's lines are written.

    Frame by frame (the engine sends at most ``FRAME_RECORDS`` records in
    one): what this process holds does not grow with the run.
    """
    done = 0
    while len(buffer) - done >= 4:
        size = struct.unpack_from("<I", buffer, done)[0]
        if size == END_MARK:
            took(start + done + 4)
            del buffer[:]
            return True
        if len(buffer) - done < 4 + size:
            break
        with memoryview(buffer) as view:  # released before the buffer shrinks
            batch = marshal.loads(view[done + 4 : done + 4 + size])
        done += 4 + size
        lines: list[str] = []
        for packed in batch:
            try:
                record = expand(packed)  # once, for the renderer and the spans
            except Exception:  # noqa: BLE001 - they skip it and say so, below
                record = packed
            if renderer is not None:
                try:
                    lines.append(renderer.render(tuple(record)))
                except Exception as exc:  # noqa: BLE001 - one bad record must not stop the file
                    sys.stderr.write(f"asyncflow checkpoint: skipped a record: {exc!r}\n")
            if spans is not None:
                try:
                    span = spans[0].add(record)
                except Exception as exc:  # noqa: BLE001 - nor the spans
                    sys.stderr.write(f"asyncflow OTLP: skipped a record: {exc!r}\n")
                else:
                    if span is not None:
                        spans[1].put(span)
        if lines and out is not None:
            out.add("".join(lines).encode("utf-8", LINE_ERRORS))
        took(start + done)
    del buffer[:done]
    return False


def _peak_rss() -> int:
    """This process's peak resident set size, in bytes.

    Linux's ``VmHWM`` counts this program alone; ``ru_maxrss`` would also
    count the engine's pages this process held between fork and exec.
    """
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as status,
    ):
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
