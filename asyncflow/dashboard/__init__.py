"""The Dash app and report: campaign timeline, workflow Gantt, utilisation, summary.

Needs the ``dashboard`` extra (``pip install '.[dashboard]'`` in a clone).
The pieces, each usable alone:

- ``sources``: span sources (checkpoint file or directory, OTLP/JSON file,
  Jaeger, Tempo) that yield the normalised records of ``model``;
- ``compute`` and ``figures``: pure functions from a run to numbers and to
  plotly figures;
- ``app``: the Dash application (``asyncflow dashboard``);
- ``report``: one self-contained HTML file (``asyncflow report``).

Importing this package loads neither Dash nor plotly; ``figures``, ``app``
and ``report`` do.
"""

from __future__ import annotations

from ._base import SourceError, SpanSource
from .model import ResourceSample, Run, RunBuilder, SlotSnapshot, SpanRecord
from .sources import open_source

__all__ = [
    "ResourceSample",
    "Run",
    "RunBuilder",
    "SlotSnapshot",
    "SourceError",
    "SpanRecord",
    "SpanSource",
    "open_source",
]
