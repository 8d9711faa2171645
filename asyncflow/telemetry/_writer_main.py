"""The checkpoint writer process: ``python -m asyncflow.telemetry._writer_main``.

Reads length-prefixed marshal batches of records from standard input,
renders them and appends the lines to the checkpoint file, flushing after
every batch. Ends at end of input (the engine closed the pipe, or died).
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys

from ._render import LineRenderer


def _read_exact(stream: object, size: int) -> bytes:
    chunks = []
    while size:
        chunk = stream.read(size)  # type: ignore[attr-defined]
        if not chunk:
            return b""
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    """Run the writer; returns the exit code."""
    path, session_id, node_id, trace_hex = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the record; the pipe ends us
    renderer = LineRenderer(session_id, node_id, trace_hex)
    stream = sys.stdin.buffer
    failed = False
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below, errors included
    sys.stdout.write("ready\n")  # the engine waits for this before the run starts
    sys.stdout.flush()
    while True:
        head = _read_exact(stream, 4)
        if len(head) < 4:
            break
        blob = _read_exact(stream, struct.unpack("<I", head)[0])
        if not blob:
            break
        if failed:
            continue  # keep reading: the engine must never block on a full pipe
        lines = []
        for record in marshal.loads(blob):
            try:
                lines.append(renderer.render(tuple(record)))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the file
                sys.stderr.write(f"asyncflow checkpoint: skipped a record: {exc!r}\n")
        try:
            out.write("".join(lines))
            out.flush()
        except OSError as exc:  # disk full: stop writing, say so once
            failed = True
            sys.stderr.write(f"asyncflow checkpoint: {path}: writing stopped: {exc}\n")
    try:
        if not failed:
            out.flush()
            os.fsync(out.fileno())
        out.close()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
