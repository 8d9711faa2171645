"""Ends the engine's helper processes when the engine's process dies.

The reaper process (``_reaper_main.py``) runs beside a backend that uses
process-pool workers and a manager process. Those block on queues whose
pipes they hold themselves, so a SIGKILLed engine would leave them running
for ever. The reaper reads ``+pid`` / ``-pid`` lines (helpers to end, or not
any more) and ``exit`` on standard input, and notices the engine's death by
its parent changing: it then SIGKILLs every helper still registered and
exits. End of input proves nothing (forked workers hold the pipe too).

:class:`Reaper` is the backend's end of it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["Reaper"]


class Reaper:
    """Starts the reaper process and registers helper processes with it."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("_reaper_main.py")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(script), str(os.getpid())],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C for the run must not end it first
        )
        self.watched: set[int] = set()

    def watch(self, pids: set[int]) -> None:
        """End these processes if the engine dies (only new ones are sent)."""
        new = pids - self.watched
        if new:
            self.watched |= new
            self._say("".join(f"+{pid}\n" for pid in sorted(new)))

    def close(self) -> None:
        """The helpers ended normally: the reaper exits too."""
        self._say("exit\n")
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the reaper is gone
            assert self._proc.stdin is not None
            self._proc.stdin.write(text.encode())
            self._proc.stdin.flush()
