"""A progress reporter for a terminal or a batch-job log.

``async with engine.progress():`` (or ``start_telemetry(progress=True)``)
shows how the engine's tasks stand: done, running, waiting, failed and
cached counts, the completion rate and an estimated time to go. On a
terminal it is a live bar (drawn by ``tqdm``); elsewhere (a batch job's
output file) it writes one plain line every ``interval`` seconds, and a last
one at the end.

It reads the engine's own task states a few times a second at most, on the
engine's loop: while it is off it costs nothing, and while it is on its cost
does not grow with the rate of tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Counts", "ProgressReporter", "format_line"]

# Seconds between updates: a live bar, and a log line.
TTY_INTERVAL = 0.5
LOG_INTERVAL = 30.0


@dataclass(frozen=True)
class Counts:
    """How the engine's tasks stand at one moment.

    ``done`` counts tasks that ran and succeeded; ``cached`` those whose
    result came from the cache; ``failed`` includes dependency failures.
    """

    total: int = 0
    done: int = 0
    cached: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0
    canceled: int = 0

    @property
    def finished(self) -> int:
        """Tasks that reached a final state."""
        return self.done + self.cached + self.failed + self.canceled


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_line(counts: Counts, rate: float | None, elapsed: float) -> str:
    """The log line for ``counts`` (``rate``: tasks finished per second, if known)."""
    parts = [
        f"{counts.finished}/{counts.total} finished",
        f"{counts.done} done",
        f"{counts.cached} cached",
        f"{counts.running} running",
        f"{counts.waiting} waiting",
        f"{counts.failed} failed",
    ]
    if counts.canceled:
        parts.append(f"{counts.canceled} canceled")
    tail = f"elapsed {_duration(elapsed)}"
    if rate:
        tail += f", {rate:.1f} tasks/s"
        left = counts.total - counts.finished
        if left > 0:  # at the rate tasks ran so far
            tail += f", ETA {_duration(left / rate)}"
    return "asyncflow progress: " + ", ".join(parts) + f"; {tail}"


class ProgressReporter:
    """Shows the counts ``read()`` returns, until :meth:`stop`.

    Args:
        read: returns the current :class:`Counts` (called on the loop).
        stream: where to write (default standard error).
        tty: draw a live bar (default: when ``stream`` is a terminal).
        interval: seconds between updates (default 0.5 on a terminal, 30 in a log).
    """

    def __init__(
        self,
        read: Callable[[], Counts],
        stream: IO[str] | None = None,
        *,
        tty: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self._read = read
        self._stream: IO[str] = stream if stream is not None else sys.stderr
        if tty is not None and not isinstance(tty, bool):
            raise TypeError(f"tty must be True, False or None, not {tty!r}")
        if tty is None:
            isatty = getattr(self._stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        if interval is None:
            interval = TTY_INTERVAL if tty else LOG_INTERVAL
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"interval must be a number of seconds > 0, not {interval!r}")
        self.interval = float(interval)
        self._bar: Any = None
        self._task: asyncio.Task[None] | None = None
        self._start = time.monotonic()
        self.last: Counts = Counts()

    def start(self) -> None:
        """Start updating (needs a running loop)."""
        if self._task is not None:
            return
        self._start = time.monotonic()
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=0, unit="task", file=self._stream, dynamic_ncols=True, leave=True
            )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.update()

    def _rate(self, counts: Counts, elapsed: float) -> float | None:
        # Tasks that ran, per second: cache hits come at once and would
        # make the estimate of what is left far too short.
        ran = counts.finished - counts.cached
        return ran / elapsed if ran > 0 and elapsed > 0 else None

    def update(self) -> Counts:
        """Read the counts now and show them; returns them."""
        counts = self.last = self._read()
        elapsed = time.monotonic() - self._start
        rate = self._rate(counts, elapsed)
        bar = self._bar
        if bar is not None:
            bar.total = counts.total
            bar.n = counts.finished
            bar.set_postfix_str(
                f"done {counts.done}, cached {counts.cached}, running {counts.running}, "
                f"waiting {counts.waiting}, failed {counts.failed}",
                refresh=False,
            )
            bar.refresh()
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            self._stream.write(f"{stamp} {format_line(counts, rate, elapsed)}\n")
            self._stream.flush()
        return counts

    async def stop(self) -> None:
        """Show the final counts and stop."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.update()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
