"""The span source interface and what its adapters share."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from typing import Any

from asyncflow.errors import AsyncFlowError

from .model import Run, RunBuilder

__all__ = ["FetchedSource", "SourceError", "SpanSource", "gc_paused"]


class SourceError(AsyncFlowError):
    """A source cannot be read now; the message says why, for the page."""


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while records pile up.

    Parsing makes a dict per line and keeps a record per task: the collector
    would rescan the growing heap again and again (three times the parse time
    on a 100,000-task file), and none of it is cyclic garbage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class SpanSource(abc.ABC):
    """Where a run's records come from.

    Attributes:
        label: what the page calls it (a path or a URL).
        refresh_seconds: how often a live page polls it.
    """

    label: str = ""
    refresh_seconds: float = 2.0

    @abc.abstractmethod
    def poll(self) -> Run:
        """Read what is new and return the run as it stands.

        Raises:
            SourceError: the input cannot be read or holds no telemetry.
        """

    def runs(self) -> list[tuple[str, str]]:
        """``(key, label)`` of the runs this source can show, newest first."""
        return []

    def select(self, key: str) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """Show the run ``key`` (one of :meth:`runs`)."""


class FetchedSource(SpanSource):
    """A source read whole at every poll; the version moves only when the spans change."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._version = 0

    def _run(self, spans: list[dict[str, Any]], key: tuple[Any, ...]) -> Run:
        if key != self._key:
            self._key = key
            self._version += 1
        builder = RunBuilder(self.label)
        with gc_paused():
            for span in spans:
                builder.add_span(span)
        return dataclasses.replace(builder.snapshot(), version=self._version)
