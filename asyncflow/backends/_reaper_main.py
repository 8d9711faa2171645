"""The reaper process: ``python _reaper_main.py <engine pid>`` (see ``_reaper``).

Run as a plain script, so it starts in milliseconds: it imports nothing of
the package. The engine's pid comes as an argument, as the engine may die
before this process has even started.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys

# Seconds between checks of the engine's process.
_CHECK_EVERY = 0.2


def main(argv: list[str]) -> int:
    """Run the reaper; returns the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = int(argv[0])
    helpers: set[int] = set()
    pending = b""
    reading = True
    while True:
        ready, _, _ = select.select([0] if reading else [], [], [], _CHECK_EVERY)
        if ready:
            data = os.read(0, 4096)
            reading = bool(data)
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line == b"exit":
                    return 0
                if line[:1] == b"+":
                    helpers.add(int(line[1:]))
                elif line[:1] == b"-":
                    helpers.discard(int(line[1:]))
        if os.getppid() != parent:
            for pid in helpers:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
