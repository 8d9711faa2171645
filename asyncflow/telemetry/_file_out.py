"""Appending lines to the checkpoint file through a full disk, for the
writer process and for the writer thread alike.

Its own module, not ``_writer_main``'s: the package imports this one, and a
module the package imports cannot be the one ``python -m`` runs (runpy
warns, and with warnings as errors the writer could not start).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

__all__ = ["HELD_BYTES", "FileOut", "finish_file"]

# Rendered bytes kept while the file cannot be written; beyond, lines drop.
HELD_BYTES = 16 << 20


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
