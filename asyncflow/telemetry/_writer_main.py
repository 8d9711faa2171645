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
the disk is full, lines wait (up to ``_file_out.HELD_BYTES``) and are written, on
a fresh line, once there is room.

With OTLP export on (a seventh argument: the export settings as JSON), it
also builds each finished span from the same records and sends it to the
collector (``_span_assembly``, ``_otlp_sender``), with the engine's metrics
requests that come in the spill, reporting ``otlp ...`` lines; the file
descriptor may then be ``-`` (no checkpoint file).
"""

from __future__ import annotations

import contextlib
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
from ._file_out import FileOut, finish_file
from ._records import METRICS_REQUEST, expand
from ._render import LineRenderer
from ._spill import END_MARK, READ_UP_TO, SPILL_START
from ._unencodable import LINE_ERRORS

if TYPE_CHECKING:
    from ._otlp_sender import SpanSender
    from ._span_assembly import SpanAssembler


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
    spill = _Spill(int(spill_text), out)
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
                spill.took(spill.consumed)  # what was held is written now
            ended = ended or os.getppid() != parent
        ready, _, _ = select.select([0], [], [], 0 if ended else wait)
        if ready and not os.read(0, 4096):
            ended = True  # the engine closed it, or died: read the spill to its end
    if out is not None:
        finish_file(out, path, say)
        # Every line is now written or counted lost by this process itself:
        # the engine is told it has all (and waits for the export, below).
        spill.took(spill.consumed, held=False)
    if spans is not None:
        spans[1].close(_OTLP_CLOSE_DEADLINE)
    say(f"peak_rss {_peak_rss()}")
    return 0


class _Spill:
    """The engine's spill file, read from where this process got to."""

    def __init__(self, fd: int, out: FileOut | None) -> None:
        self.fd = fd
        self.out = out
        self.at = SPILL_START  # read up to here
        self.consumed = SPILL_START  # whole frames up to here are rendered
        self.taken = SPILL_START  # and up to here, their lines are written
        self.freed = SPILL_START
        self._punch = _hole_puncher()

    def read(self) -> bytes:
        chunk = os.pread(self.fd, _READ_BYTES, self.at)
        self.at += len(chunk)
        return chunk

    def took(self, consumed: int, held: bool | None = None) -> None:
        """The frames up to ``consumed`` are rendered: if their lines are
        written (none held for a full disk), tell the engine they are this
        process's. Lines held are not: if this process dies with them, the
        engine counts them as not written."""
        self.consumed = consumed
        if held is None:
            held = self.out is not None and bool(self.out.held)
        if consumed > self.taken and not held:
            self.taken = consumed
            os.pwrite(self.fd, READ_UP_TO.pack(consumed), 0)

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
            if packed[0] == METRICS_REQUEST:  # the engine's metrics: no line
                if spans is not None:
                    spans[1].put_metrics(packed[1])
                continue
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
