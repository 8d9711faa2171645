"""The hot path of telemetry: what the engine calls at every task transition.

Kept cheap enough to leave on. A task's record holds plain integers (its
lifecycle timestamps) until it ends; attributes are built once, at the end.
Checkpoint lines are rendered by the writer from queued records (their
layout is declared in ``_records.py``), and
OpenTelemetry ``ReadableSpan`` objects are built only when a span processor
wants them, event objects only when someone subscribed. The OpenTelemetry
SDK is not imported here.

Every event line is written as it happens (a live dashboard sees what waits
and what runs, and a crash loses no step already taken); the span is written
with the final event when the task ends. Subscribers get every event as it
happens.

:class:`Recorder` is the engine's :class:`~asyncflow.telemetry.observer.TaskObserver`.
"""

from __future__ import annotations

import time
from typing import Any

from . import names as n
from ._records import NOTE
from ._spans import LiveSpan, span_dict
from ._task_span import live_span
from ._task_steps import TaskSteps

__all__ = ["Recorder"]


class Recorder(TaskSteps):
    """Turns engine transitions into events, spans and metric points.

    The engine's :class:`~asyncflow.telemetry.observer.TaskObserver`.

    Args:
        session_id: the engine uid.
        node_id: this host's name.
        ring_size: how many finished spans stay in memory for ``read_traces``.
        span_sink: called with each finished span dict when span processors
            want OpenTelemetry spans (None: nobody does).
    """

    # The state and __init__ are RecorderBase's (_recorder_base.py); task
    # steps TaskSteps' (_task_steps.py); how a task ends TaskEnds' (_task_ends.py).

    # ------------------------------------------------------------------ session
    def session_started(self) -> None:
        self._event(n.EVENT_SESSION_STARTED, None, self.session.start_ns)

    def session_ended(self) -> None:
        for workflow in list(self._open_workflows.values()):
            workflow.closed = True  # a scope still open at shutdown ends here
            workflow.cut_off = True
            self._end_workflow(workflow)
        rec = self.session
        rec.end_ns = time.time_ns()
        self._event(n.EVENT_SESSION_ENDED, None, rec.end_ns)
        self.finish_span(rec, n.STATUS_UNSET, "")

    def session_note(self, name: str, t_ns: int, attributes: dict[str, Any]) -> None:
        """Keep a user event for the session span (the last ``SESSION_NOTES_KEPT``)."""
        self.session_notes.append((name, t_ns, attributes))
        if self._put is not None:
            self._put((NOTE, name, t_ns, attributes))  # records.Note

    def traces(self) -> list[dict[str, Any]]:
        """The finished spans in the ring, as dicts."""
        return [
            span_dict(rec, self.trace_hex, self._notes(rec))
            if isinstance(rec, LiveSpan)
            else span_dict(live_span(rec), self.trace_hex)
            for rec in list(self.ring)
        ]
