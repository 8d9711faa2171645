"""The spill file between the engine and its writer process: its layout.

The engine appends frames, each a little-endian 32-bit length and a
``marshal`` list of at most ``FRAME_RECORDS`` record tuples; a length of
``0xffffffff`` (``END_OF_RECORDS``) says no frame follows. Frames start at
``SPILL_START``; the bytes before are the writer's: where its last whole
frame ended (``READ_UP_TO``), so the engine knows how far behind it is and,
if the writer is ended, how many records it never took. Both sides import
this module; the writer's start-up stays light (no asyncio, no OTel).
"""

from __future__ import annotations

import contextlib
import json
import marshal
import math
import os
import struct
import tempfile
from typing import Any

from ._records import METRICS_REQUEST, NOTE, SHAPE

__all__ = [
    "END_MARK",
    "END_OF_RECORDS",
    "FRAME_RECORDS",
    "READ_UP_TO",
    "SPILL_START",
    "UNCOUNTED",
    "counted",
    "dumps",
    "frame",
    "make_spill",
    "records_in",
]

# Where the frames start: a page, so that the writer frees what it has read
# by whole pages and never the header.
SPILL_START = 4096
READ_UP_TO = struct.Struct("<Q")

# A frame length that says no frame follows.
END_MARK = 0xFFFFFFFF
END_OF_RECORDS = struct.pack("<I", END_MARK)

# Records per frame: a loop turn that creates a million tasks still reaches
# the writer in pieces it renders one at a time.
FRAME_RECORDS = 4096


def make_spill() -> int:
    """A new spill: memory on Linux (``memfd``), else an unnamed temporary
    file; its header says nothing has been read yet."""
    make = getattr(os, "memfd_create", None)
    if make is not None:
        fd: int = make("asyncflow-records", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        with tempfile.TemporaryFile() as unnamed:
            fd = os.dup(unnamed.fileno())  # not inheritable, as a dup
    try:
        os.pwrite(fd, READ_UP_TO.pack(SPILL_START), 0)
    except OSError:
        os.close(fd)
        raise
    return fd  # close-on-exec: ``pass_fds`` hands it to the writer alone


# Records that are no line of their own: a kind's names (the lines of its
# tasks are rendered with them) and a session note (for OTLP only). A count
# of records not written leaves them out.
UNCOUNTED = frozenset({SHAPE, NOTE, METRICS_REQUEST})


def counted(records: list[tuple[Any, ...]]) -> int:
    """How many of ``records`` a count of records not written counts."""
    return sum(1 for record in records if record[0] not in UNCOUNTED)


def records_in(spill: int, start: int, end: int) -> int:
    """How many counted records the frames of ``spill`` between ``start``
    and ``end`` hold: what a writer that was ended never took."""
    count = 0
    with contextlib.suppress(OSError, ValueError, EOFError, struct.error, TypeError):
        while start + 4 <= end:
            (size,) = struct.unpack("<I", os.pread(spill, 4, start))
            if size == END_MARK:
                break
            count += counted(marshal.loads(os.pread(spill, size, start + 4)))
            start += 4 + size
    return count


def frame(batch: list[tuple[Any, ...]]) -> bytes:
    """Length-prefixed marshal frames of at most ``FRAME_RECORDS`` records each."""
    if len(batch) > FRAME_RECORDS:
        return b"".join(
            frame(batch[i : i + FRAME_RECORDS]) for i in range(0, len(batch), FRAME_RECORDS)
        )
    try:
        blob = marshal.dumps(batch)
    except ValueError:  # an attribute value marshal cannot carry
        blob = marshal.dumps([_plain(r) for r in batch])
    return struct.pack("<I", len(blob)) + blob


def _plain(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A record whose values marshal can carry (others become strings)."""
    try:
        marshal.dumps(record)
        return record
    except ValueError:
        return tuple(json.loads(dumps(list(record))))


_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
).encode


def dumps(record: Any) -> str:
    """``record`` as compact JSON: anything JSON cannot carry as its ``str``,
    a float that is not finite too (``"nan"``, ``"inf"``: ``NaN`` is no JSON,
    and no reader would take the line)."""
    try:
        return _encode(record)
    except ValueError:  # a float that is not finite (or a cycle: as str)
        return _encode(_finite(record, 64))


def _finite(value: Any, depth: int) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth <= 0:
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth - 1) for v in value]
    return value
