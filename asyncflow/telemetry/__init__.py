"""Telemetry: OpenTelemetry traces, metrics, events and the checkpoint file.

``names`` (every telemetry name), ``events`` (event records and
``define_event``), ``checkpoint`` (the JSON Lines file) and ``otlp_json`` load
without the OpenTelemetry SDK; ``Telemetry`` itself (``manager``) needs it and
is loaded by ``engine.start_telemetry()``.
"""

from . import names
from .checkpoint import read_checkpoint
from .events import Event, define_event

__all__ = ["Event", "define_event", "names", "read_checkpoint"]
