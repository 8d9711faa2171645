"""OTLP/JSON documents into checkpoint-shaped span dicts. Pure: parsed JSON in, dicts out.

One reader serves three inputs, since all speak the protobuf JSON mapping
of OTLP's ``TracesData``:

- an OTLP/JSON file (``Telemetry.export_as_otlp()``, the collector's file
  exporter: one document, or one document per line);
- Jaeger v2's ``/api/v3/traces`` answers, wrapped as ``{"result": ...}``;
- Tempo's ``/api/traces/<id>`` (``{"batches": [...]}``) and
  ``/api/v2/traces/<id>`` (``{"trace": {...}}``) answers.

Ids are hex in OTLP/JSON files and Jaeger, base64 in Tempo: both are read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from asyncflow.telemetry import names as n

__all__ = [
    "any_value",
    "api_error",
    "hex_id",
    "newest_trace",
    "spans_from_document",
    "tempo_trace_ids",
]

_HEX = frozenset("0123456789abcdefABCDEF")
_STATUS = {0: n.STATUS_UNSET, 1: n.STATUS_OK, 2: n.STATUS_ERROR}


def hex_id(value: Any, size: int) -> str:
    """A trace (``size`` 16) or span (8) id as lower-case hex, from hex or base64."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) == 2 * size and _HEX.issuperset(value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.lower()
    return raw.hex() if len(raw) == size else value.lower()


def any_value(value: Any) -> Any:
    """The Python value of an OTLP ``AnyValue``."""
    if not isinstance(value, Mapping):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return value["doubleValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        array = value["arrayValue"] or {}
        return [any_value(v) for v in array.get("values") or ()]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        if isinstance(item, Mapping) and "key" in item:
            out[str(item["key"])] = any_value(item.get("value"))
    return out


def _ns(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _status(status: Any) -> tuple[str, str]:
    if not isinstance(status, Mapping):
        return n.STATUS_UNSET, ""
    code = status.get("code", 0)
    if isinstance(code, str):
        text = code.upper().removeprefix("STATUS_CODE_")
        code_name = text if text in _STATUS.values() else n.STATUS_UNSET
    else:
        code_name = _STATUS.get(_ns(code), n.STATUS_UNSET)
    return code_name, str(status.get("message") or "")


def _span(span: Mapping[str, Any]) -> dict[str, Any]:
    code, message = _status(span.get("status"))
    return {
        "name": str(span.get("name") or ""),
        "trace_id": hex_id(span.get("traceId"), 16),
        "span_id": hex_id(span.get("spanId"), 8),
        "parent_span_id": hex_id(span.get("parentSpanId"), 8) or None,
        "start_ns": _ns(span.get("startTimeUnixNano")),
        "end_ns": _ns(span.get("endTimeUnixNano")),
        "status_code": code,
        "status_description": message,
        "attributes": _attributes(span.get("attributes")),
        "events": [
            {
                "name": str(e.get("name") or ""),
                "time_ns": _ns(e.get("timeUnixNano")),
                "attributes": _attributes(e.get("attributes")),
            }
            for e in span.get("events") or ()
            if isinstance(e, Mapping)
        ],
    }


def _resource_spans(document: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(document, Mapping):
        return
    for wrapper in ("result", "trace"):  # Jaeger api_v3, Tempo api/v2
        inner = document.get(wrapper)
        if isinstance(inner, Mapping):
            yield from _resource_spans(inner)
    for key in ("resourceSpans", "batches"):  # OTLP, Tempo api/traces
        for item in document.get(key) or ():
            if isinstance(item, Mapping):
                yield item


def spans_from_document(document: Any) -> list[dict[str, Any]]:
    """Every span of an OTLP/JSON document (or a Jaeger/Tempo answer), checkpoint-shaped.

    Raises:
        ValueError: the document holds no ``resourceSpans`` at all.
    """
    found = False
    spans: list[dict[str, Any]] = []
    for resource_spans in _resource_spans(document):
        found = True
        for key in ("scopeSpans", "instrumentationLibrarySpans"):
            for scope in resource_spans.get(key) or ():
                if isinstance(scope, Mapping):
                    spans.extend(
                        _span(s) for s in scope.get("spans") or () if isinstance(s, Mapping)
                    )
    if not found:
        raise ValueError("not an OTLP/JSON trace document (no resourceSpans)")
    return spans


def newest_trace(spans: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The spans of the trace that started last (one trace is one engine session)."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(str(span.get("trace_id") or ""), []).append(dict(span))
    if not traces:
        return []
    return max(traces.values(), key=lambda group: min(_ns(s.get("start_ns")) for s in group))


def tempo_trace_ids(answer: Any) -> list[str]:
    """Trace ids of a Tempo search answer, the newest first."""
    traces = answer.get("traces") if isinstance(answer, Mapping) else None
    if not isinstance(traces, list):
        raise ValueError("not a Tempo search answer (no traces)")
    found = [t for t in traces if isinstance(t, Mapping) and t.get("traceID")]
    found.sort(key=lambda t: _ns(t.get("startTimeUnixNano")), reverse=True)
    return [str(t["traceID"]) for t in found]


def api_error(answer: Any) -> str:
    """The message of a Jaeger/Tempo error answer, or ``""``."""
    if isinstance(answer, Mapping):
        error = answer.get("error")
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        if isinstance(error, str):
            return error
    return ""
