"""The docs speak the names of asyncflow.telemetry.names, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from asyncflow.telemetry import names

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def known_names() -> set[str]:
    values = {v for v in vars(names).values() if isinstance(v, str)}
    for metric in names.PROMETHEUS_NAMES:
        values.update(names.prometheus_series(metric))
        values.add(metric)
    values.update(names.prometheus_label(a) for a in names.SPAN_ATTRIBUTES)
    return values


def test_every_asyncflow_name_in_the_docs_exists() -> None:
    text = DOC.read_text()
    mentioned = set(re.findall(r"`(asyncflow[._][A-Za-z0-9_.]+)`", text))
    allowed = known_names() | {
        "asyncflow.telemetry.names",
        "asyncflow.telemetry.read_checkpoint",
        "asyncflow.telemetry.redact",
        "asyncflow_task_name",
    }
    unknown = {m for m in mentioned if m not in allowed}
    assert not unknown, f"docs/telemetry.md names things the engine does not emit: {unknown}"


def test_every_metric_and_event_is_documented() -> None:
    text = DOC.read_text()
    for metric, series in names.PROMETHEUS_NAMES.items():
        assert f"`{metric}`" in text
        assert f"`{series}" in text
    for event in names.ENGINE_EVENTS:
        assert f"`{event}`" in text
    for attribute in names.SPAN_ATTRIBUTES:
        assert f"`{attribute}`" in text
