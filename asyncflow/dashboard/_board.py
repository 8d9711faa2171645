"""The server side of the Dash app: one source, polled under a lock, and its figures.

A :class:`Dashboard` keeps the run it last read and the last few figures
it drew, so another tab, browser or the preloading thread asking for the
same figure gets it (or waits for it) instead of building it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import plotly.graph_objects as go

from . import figures as f
from ._base import SourceError, SpanSource
from .model import Run

__all__ = ["Dashboard", "campaign", "preload"]

logger = logging.getLogger("asyncflow.dashboard")


class Dashboard:
    """The server side of the app: one source, polled under a lock, and its last run.

    Args:
        source: where the run comes from.
        capacity: slot capacities to draw when the run recorded none (``{"gpu": 4}``).
    """

    def __init__(self, source: SpanSource, capacity: Mapping[str, int] | None = None) -> None:
        self.source = source
        self.capacity = dict(capacity or {})
        self.run: Run | None = None
        self.error = ""
        self._lock = threading.Lock()
        self._figures: dict[tuple[Any, ...], _Drawn] = {}
        self._figures_lock = threading.Lock()

    def poll(self, choice: str | None = None) -> tuple[Run | None, str]:
        """Read what is new; returns the run (the last good one on error) and an error message."""
        with self._lock:
            try:
                if choice:
                    self.source.select(choice)
                self.run = self.source.poll()
                self.error = ""
            except SourceError as exc:
                self.error = str(exc)
            except Exception as exc:
                logger.exception("reading %s failed", self.source.label)
                self.error = f"Could not read {self.source.label}: {type(exc).__name__}: {exc}"
            return self.run, self.error

    def draw(self, build: Any, *args: Any, **kwargs: Any) -> go.Figure:
        """``build(run, ...)``, or a figure that says why there is nothing to draw.

        The last few figures are kept per run version and arguments: another
        tab, another browser or a preloading thread asking for the same
        figure gets it (or waits for it) instead of building it again.
        """
        run = self.run
        if run is None:
            return f.empty_figure(self.error or "Waiting for the first data...")
        name = getattr(build, "__name__", repr(build))
        key = (name, run.source, run.version, _frozen(args), _frozen(kwargs))
        with self._figures_lock:
            drawn = self._figures.get(key)
            if drawn is None:
                drawn = self._figures[key] = _Drawn()
                while len(self._figures) > _KEPT_FIGURES:
                    del self._figures[next(iter(self._figures))]
        with drawn.lock:
            if drawn.figure is None:
                try:
                    drawn.figure = build(run, *args, **kwargs)
                except Exception as exc:
                    logger.exception("drawing %s failed", name)
                    text = f"Could not draw this figure: {type(exc).__name__}: {exc}"
                    return f.empty_figure(text)
            return drawn.figure


_KEPT_FIGURES = 8


class _Drawn:
    """A figure being built, or built: whoever comes second waits for the first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.figure: go.Figure | None = None


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def campaign(
    board: Dashboard, types: Any = None, states: Any = None, zoom: Any = None
) -> go.Figure:
    """The campaign timeline of the board's run, with these filters.

    ``zoom`` is the last Plotly relayout event of the timeline's time axis:
    a zoomed, aggregated timeline is aggregated again for the window shown.
    """
    return board.draw(
        f.campaign_figure,
        types=types or None,
        states=states or None,
        capacity=board.capacity,
        window=f.zoom_window(zoom)[1],
    )


def preload(board: Dashboard, report: Callable[[str], None] | None = None) -> threading.Thread:
    """Read the source and draw the timeline in a background thread.

    The server starts listening at once, so the browser fetches the page and
    the app's scripts while the file is still being read; the first page's
    poll then waits for the read, and its timeline for the figure this
    thread is drawing. ``report`` gets one line for the terminal (tasks read
    and how long it took, or why nothing could be read).
    """

    say = report or _say

    def work() -> None:
        started = time.perf_counter()
        run, error = board.poll()
        took = time.perf_counter() - started
        if run is None:
            say(f"{board.source.label}: {error}")
            return
        say(f"{board.source.label}: {len(run.tasks)} tasks read in {took:.1f} s")
        campaign(board)

    thread = threading.Thread(target=work, name="asyncflow-preload", daemon=True)
    thread.start()
    return thread


def _say(line: str) -> None:
    print(line, flush=True)
