"""The hand-written OTLP encoder against the SDK's: the same message, byte for byte decoded."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from asyncflow._version import __version__
from asyncflow.telemetry import names as n
from asyncflow.telemetry._otel import SpanBridge
from asyncflow.telemetry._otlp_proto import SpanEncoder

TRACE = "0af7651916cd43dd8448eb211c80319c"
RESOURCE = {n.SERVICE_NAME: "asyncflow", n.SERVICE_INSTANCE_ID: "engine.0001", "x.count": 3}


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _OnEnd:
    """A processor handing each span to an exporter at once."""

    def __init__(self, exporter: _Keep) -> None:
        self.exporter = exporter

    def on_end(self, span: Any) -> None:
        self.exporter.export([span])

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True

    def shutdown(self) -> None:
        return None


SPANS: list[dict[str, Any]] = [
    {  # a completed task with lifecycle events and an array attribute
        "name": "task prepare",
        "span_id": 0x1234_5678_9ABC_DEF0,
        "parent": 0x0FED_CBA9_8765_4321,
        "start_ns": 1_796_523_504_202_938_176,
        "end_ns": 1_796_523_504_302_938_176,
        "status": n.STATUS_OK,
        "description": "",
        "attributes": {
            n.LEVEL: n.LEVEL_TASK,
            n.TASK_NAME: "prepare",
            n.TASK_CPUS: 1,
            n.TASK_GPUS: 0,
            n.TASK_DEPENDS_ON: ["task.000001", "task.000002"],
            "user.ratio": 0.25,
            "user.flag": True,
            "user.negative": -7,
            "user.unicode": "naïve ✓",
            "user.nothing": None,
        },
        "events": [
            (n.SPAN_EVENT_RESOLVED, 1_796_523_504_202_938_200),
            (n.SPAN_EVENT_STARTED, 1_796_523_504_202_938_300),
            (n.SPAN_EVENT_ATTEMPT, 1_796_523_504_202_938_400, {n.ATTEMPT_NUMBER: 1}),
        ],
    },
    {  # a failed task: an error status keeps its message
        "name": "task explode",
        "span_id": 7,
        "parent": 9,
        "start_ns": 10,
        "end_ns": 20,
        "status": n.STATUS_ERROR,
        "description": "RuntimeError: boom",
        "attributes": {n.TASK_RESULT: n.RESULT_FAILED, n.ERROR_TYPE: "RuntimeError"},
        "events": [
            (
                n.SPAN_EVENT_EXCEPTION,
                20,
                {n.EXCEPTION_TYPE: "RuntimeError", n.EXCEPTION_MESSAGE: "boom"},
            )
        ],
    },
    {  # a root span, status unset
        "name": "session",
        "span_id": 1,
        "parent": None,
        "start_ns": 1,
        "end_ns": 2,
        "status": n.STATUS_UNSET,
        "description": "",
        "attributes": {},
        "events": [],
    },
]


def _sdk_request(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    keep = _Keep()
    bridge = SpanBridge([_OnEnd(keep)], Resource(RESOURCE))  # type: ignore[list-item]
    for s in spans:
        bridge(
            {
                "name": s["name"],
                "trace_id": TRACE,
                "span_id": f"{s['span_id']:016x}",
                "parent_span_id": f"{s['parent']:016x}" if s["parent"] else None,
                "start_ns": s["start_ns"],
                "end_ns": s["end_ns"],
                "status_code": s["status"],
                "status_description": s["description"],
                "attributes": {k: v for k, v in s["attributes"].items() if v is not None},
                "events": [
                    {"name": e[0], "time_ns": e[1], "attributes": e[2] if len(e) > 2 else None}
                    for e in s["events"]
                ],
            }
        )
    return encode_spans(keep.spans)


def _ours(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    encoder = SpanEncoder(TRACE, RESOURCE, "asyncflow", __version__)
    body = encoder.request(
        encoder.span(
            s["name"],
            s["span_id"],
            s["parent"],
            s["start_ns"],
            s["end_ns"],
            s["status"],
            s["description"],
            s["attributes"],
            s["events"],
        )
        for s in spans
    )
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


@pytest.mark.parametrize("index", range(len(SPANS)))
def test_each_span_decodes_to_what_the_sdk_sends(index: int) -> None:
    assert _ours([SPANS[index]]) == _sdk_request([SPANS[index]])


def test_a_batch_is_one_resource_and_scope_with_every_span() -> None:
    ours = _ours(SPANS)
    assert ours == _sdk_request(SPANS)
    assert len(ours.resource_spans) == 1
    assert len(ours.resource_spans[0].scope_spans[0].spans) == len(SPANS)


def test_values_the_sdk_rejects_are_sent_as_text() -> None:
    span = dict(SPANS[2], attributes={"user.object": object.__name__, "user.set": {1}})
    request = _ours([span])
    values = {
        kv.key: kv.value.WhichOneof("value")
        for kv in request.resource_spans[0].scope_spans[0].spans[0].attributes
    }
    assert values == {"user.object": "string_value", "user.set": "string_value"}
