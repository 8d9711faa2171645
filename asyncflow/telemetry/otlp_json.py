"""Spans as OTLP/JSON (the protobuf JSON mapping of ``ExportTraceServiceRequest``).

Pure functions, no SDK: used by ``Telemetry.export_as_otlp`` and readable by
any OTLP/JSON consumer (the Dash app, the collector's ``otlpjsonfile``
receiver).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .._version import __version__
from . import names as n

__all__ = ["any_value", "spans_to_otlp_json"]

_STATUS_CODES = {n.STATUS_UNSET: 0, n.STATUS_OK: 1, n.STATUS_ERROR: 2}


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue`` for a Python attribute value."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": "" if value is None else str(value)}


def _attributes(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items()]


def _event(event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"timeUnixNano": str(event["time_ns"]), "name": event["name"]}
    if event.get("attributes"):
        out["attributes"] = _attributes(event["attributes"])
    return out


def spans_to_otlp_json(spans: Iterable[dict[str, Any]], resource: dict[str, Any]) -> str:
    """One ``resourceSpans`` document for the given finished-span dicts."""
    out = []
    for span in spans:
        item: dict[str, Any] = {
            "traceId": span["trace_id"],
            "spanId": span["span_id"],
            "name": span["name"],
            "kind": 1,
            "startTimeUnixNano": str(span["start_ns"]),
            "endTimeUnixNano": str(span["end_ns"]),
            "attributes": _attributes(span["attributes"]),
            "events": [_event(e) for e in span["events"]],
            "status": {"code": _STATUS_CODES.get(span["status_code"], 0)},
        }
        if span.get("parent_span_id"):
            item["parentSpanId"] = span["parent_span_id"]
        if span.get("status_description"):
            item["status"]["message"] = span["status_description"]
        out.append(item)
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource)},
                "scopeSpans": [
                    {"scope": {"name": "asyncflow", "version": __version__}, "spans": out}
                ],
            }
        ]
    }
    return json.dumps(doc, separators=(",", ":"))
