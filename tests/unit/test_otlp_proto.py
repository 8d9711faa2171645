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


# ---------------------------------------------------------------- from the recorder's records


class _Task:
    """A task as the observer sees it (the TaskInfo protocol)."""

    def __init__(self, uid: str, name: str, kind: str = n.TYPE_FUNCTION) -> None:
        self.uid = uid
        self.name = name
        self.kind = kind
        self.workflow_id = "wf-1"
        self.workflow_name = "training"
        self.task_description = {"cpus": 2, "gpus": 1}


class _Sink:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def write(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)


def _one_span(request: ExportTraceServiceRequest) -> Any:
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    return scope_spans.spans


def test_the_records_give_the_span_the_in_process_path_sends() -> None:
    """Recorder -> records -> assembler -> bytes decodes to exactly the SDK's
    encoding of the same spans built in process (SpanBridge), for a task that
    was retried and failed, a block, two plain tasks (one with a dependency,
    each ended by a short Completed record) and the session span with a
    user event."""
    from asyncflow.telemetry._recorder import Recorder
    from asyncflow.telemetry._span_assembly import SpanAssembler
    from asyncflow.telemetry._spans import span_dict
    from asyncflow.telemetry._task_span import live_span

    recorder = Recorder("sess", "node", 100, None)
    sink = _Sink()
    recorder.attach(sink)
    recorder.task_spans = True
    recorder.session_started()
    block = recorder.task_created(_Task("block.000001", "stage", n.TYPE_BLOCK), "", None, None)
    plain = recorder.task_created(_Task("task.000002", "prepare"), "default", block, None)
    failed = recorder.task_created(_Task("task.000003", "train"), "gpu", None, None)
    after = recorder.task_created(_Task("task.000004", "prepare"), "default", None, None)
    for span in (plain, failed, after):
        recorder.resolved(span)
        recorder.queued(span)
        recorder.submitted_all([span])
    recorder.assigned(failed, ["gpu:0"])
    recorder.started(failed)
    recorder.attempt_ended(failed, 1, failed.span_started, RuntimeError("flaky"), True)
    recorder.started(plain)
    recorder.task_finished(plain, n.RESULT_COMPLETED, None, False, ())
    recorder.completed(after, False, ("task.000002",))  # a dry run's way out
    kinds = [r[0] for r in sink.records]
    assert (kinds.count("d"), kinds.count("i")) == (1, 1)  # plain, and after, packed
    try:
        raise RuntimeError("out of memory on gpu:0")
    except RuntimeError as exc:
        recorder.task_finished(failed, n.RESULT_FAILED, exc, False, ("task.000002",))
    recorder.task_finished(block, n.RESULT_COMPLETED, None, False, ())
    recorder.session_note("lab.Calibrated", failed.span_end, {"detector": "A7"})
    recorder.session_ended()

    encoder = SpanEncoder(recorder.trace_hex, RESOURCE, "asyncflow", __version__)
    assembler = SpanAssembler(encoder, recorder.session.span_id)
    encoded = [s for s in (assembler.add(r) for r in sink.records) if s is not None]
    ours = ExportTraceServiceRequest.FromString(encoder.request(encoded))
    assert assembler.kept == 0  # nothing stays behind per task

    keep = _Keep()
    bridge = SpanBridge([_OnEnd(keep)], Resource(RESOURCE))  # type: ignore[list-item]
    for task in (plain, failed, after, block):
        bridge(span_dict(live_span(task), recorder.trace_hex))
    bridge(span_dict(recorder.session, recorder.trace_hex, recorder._notes(recorder.session)))
    sdk = encode_spans(keep.spans)
    assert len(_one_span(ours)) == 5
    by_id = {s.span_id: s for s in _one_span(sdk)}
    for span in _one_span(ours):
        assert span == by_id[span.span_id], span.name


@pytest.mark.parametrize(
    ("parent", "workflow_id", "depends_on", "steps"),
    [
        (None, "", (), (11, 12, 13, 14)),
        (0xBEEF, "wf.7", ("task.000001", "task.000002"), (11, 0, 13, 14)),
        (0xBEEF, 'w"f', ("t\u00e9",), (0, 0, 0, 0)),
    ],
)
def test_a_plainly_completed_task_is_the_same_bytes_the_quick_way(
    parent: int | None, workflow_id: str, depends_on: tuple[str, ...], steps: tuple[int, ...]
) -> None:
    """The encoder's quick way for a task that completed with nothing more
    to say writes exactly the bytes of its general way."""
    from asyncflow.telemetry._spans import own_attributes, shared_attributes

    encoder = SpanEncoder("ab" * 16, RESOURCE, "asyncflow", __version__)
    sort = (n.LEVEL_TASK, "sims", "simulate", n.TYPE_FUNCTION, "default", 1, 0)
    shared = shared_attributes(*sort)
    own = own_attributes(n.LEVEL_TASK, "task.000009", workflow_id, depends_on, (), "completed", "")
    names = (
        n.SPAN_EVENT_RESOLVED,
        n.SPAN_EVENT_QUEUED,
        n.SPAN_EVENT_SUBMITTED,
        n.SPAN_EVENT_STARTED,
    )
    events = [(name, t) for name, t in zip(names, steps, strict=True) if t]
    for _ in range(2):  # the second time from the encoder's caches
        general = encoder.span(
            "task simulate", 0xF00D, parent, 10, 20, n.STATUS_OK, "", own, events, (sort, shared)
        )
        quick = encoder.completed_task(
            "task simulate",
            0xF00D,
            parent,
            10,
            20,
            (sort, shared),
            workflow_id,
            "task.000009",
            depends_on,
            steps,
        )
        assert quick == general
