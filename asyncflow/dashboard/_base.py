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

__all__ = ["PROMOTE_AT", "FetchedSource", "SourceError", "SpanSource", "gc_paused"]


class SourceError(AsyncFlowError):
    """A source cannot be read now; the message says why, for the page."""


# A read that leaves at least this many young objects hands them to the
# oldest generation at once (a 100,000-task file leaves about 200,000).
PROMOTE_AT = 50_000


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while records pile up.

    Parsing makes a dict per line and keeps a record per task: the collector
    would rescan the growing heap again and again (three times the parse time
    on a 100,000-task file), and none of it is cyclic garbage.

    A large read's objects then go straight to the oldest generation. A
    record is a named tuple, which the collector never stops tracking:
    otherwise the first young passes walk every record twice, and the full
    pass their number sets off a third time, all while the first figure is
    drawn. Promoted, only the full pass walks them, when other objects set
    it off (at a million tasks 1.2 s less collection over load and three
    figures; at 100,000 the same total, later). Objects someone froze
    (``gc.freeze``) stay as they are.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_count()[0] >= PROMOTE_AT and not gc.get_freeze_count():
                # Freezing and thawing moves every tracked object to the
                # oldest generation in one step, without a pass over them.
                gc.freeze()
                gc.unfreeze()
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
