"""OTLP spans are built and sent by the telemetry process, not on the engine's loop.

A real receiver on 127.0.0.1 (gRPC and HTTP) gets every span; the engine's
process builds none of them (no SDK span, no batch processor); the caller's
own span processors still get SDK spans in process; the checkpoint file and
OTLP work together; user events reach the session span; the standard header
and compression variables are honoured; and if the telemetry process cannot
start, the spans still go, from the engine's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from asyncflow import WorkflowEngine
from asyncflow.telemetry import _otel, define_event, manager, read_checkpoint
from asyncflow.telemetry import names as n
from asyncflow.telemetry._pipe_writer import NoWriterProcess

from ..support.otlp_receiver import OTLPReceiver

TASKS = 300


@pytest.fixture
def built_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the spans the engine's process turns into SDK spans."""
    built: list[str] = []
    real = _otel.SpanBridge.__call__

    def counting(self: _otel.SpanBridge, span: dict[str, Any]) -> None:
        built.append(span["name"])
        real(self, span)

    monkeypatch.setattr(_otel.SpanBridge, "__call__", counting)
    return built


class Keep(SpanProcessor):
    """A caller's own span processor: keeps the names of the SDK spans it gets."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.names.append(span.name)


async def run(engine: WorkflowEngine, count: int) -> None:
    @engine.function_task
    async def noop(i: int) -> int:
        return i

    async with engine.workflow_scope(name="sweep"):
        assert await asyncio.gather(*(noop(i) for i in range(count))) == ["Dummy Output"] * count


def task_spans(receiver: OTLPReceiver) -> list[dict[str, Any]]:
    return [s for s in receiver.spans() if s["name"] == "task noop"]


def duration_metrics(receiver: OTLPReceiver) -> list[Any]:
    """The task duration histogram of every metrics request received, in order."""
    return [
        metric
        for request in receiver.metric_requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == n.METRIC_TASK_DURATION
    ]


async def test_every_span_arrives_and_none_is_built_in_the_engine(
    protocol: str, receiver: OTLPReceiver, built_here: list[str], tmp_path: Path
) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
        )
        assert tel.checkpoint_file is None  # OTLP only: no file is written
        tel.emit(define_event("lab.Calibrated", detector=str)(detector="A7"))
        await run(engine, TASKS)
    finally:
        await engine.shutdown()

    receiver.wait_for(lambda: any(s["name"] == "session" for s in receiver.spans()))
    spans = receiver.spans()
    assert len(task_spans(receiver)) == TASKS
    assert len({s["span_id"] for s in spans}) == len(spans) == TASKS + 2
    uids = {s["attributes"][n.TASK_UID] for s in task_spans(receiver)}
    assert len(uids) == TASKS
    assert built_here == []  # not one span was built on the engine's process
    session = next(s for s in spans if s["name"] == "session")
    assert "lab.Calibrated" in session["events"]  # the user event, on the session span
    note = session["event_attributes"][session["events"].index("lab.Calibrated")]
    assert note["detector"] == "A7"


async def test_the_file_and_otlp_together(
    protocol: str, receiver: OTLPReceiver, built_here: list[str], tmp_path: Path
) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(
            checkpoint_path=tmp_path / "ckpt",
            otlp_endpoint=receiver.endpoint,
            otlp_protocol=protocol,
            resource_poll_interval=0.1,
        )
        await run(engine, TASKS)
    finally:
        await engine.shutdown()

    receiver.wait_for(lambda: len(task_spans(receiver)) == TASKS)
    assert built_here == []
    assert tel.checkpoint_file is not None
    in_file = {
        span["span_id"]
        for span in read_checkpoint(tel.checkpoint_file, [n.SECTION_SPAN])
        if span["name"] == "task noop"
    }
    assert in_file == {s["span_id"] for s in task_spans(receiver)}


async def test_the_callers_processors_still_get_sdk_spans(
    receiver: OTLPReceiver, protocol: str, tmp_path: Path
) -> None:
    keep = Keep()
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(
            span_processors=[keep],
            otlp_endpoint=receiver.endpoint,
            otlp_protocol=protocol,
            resource_poll_interval=0.1,
        )
        await run(engine, 20)
    finally:
        await engine.shutdown()
    receiver.wait_for(lambda: len(task_spans(receiver)) == 20)
    assert keep.names.count("task noop") == 20
    assert {"session", "workflow sweep"} <= set(keep.names)


async def test_standard_headers_and_gzip(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team%20a,authorization=Bearer t0k")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
        )
        await run(engine, 10)
    finally:
        await engine.shutdown()
    receiver.wait_for(lambda: len(task_spans(receiver)) == 10)
    for headers in receiver.trace_headers:
        assert headers["x-tenant"] == "team a"
        assert headers["authorization"] == "Bearer t0k"
        if protocol != "grpc":  # gRPC keeps its encoding header to itself
            assert headers["content-encoding"] == "gzip"


async def test_without_the_telemetry_process_spans_go_from_the_engine(
    protocol: str,
    receiver: OTLPReceiver,
    built_here: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cannot(*args: Any, **kwargs: Any) -> Any:
        raise NoWriterProcess("no processes today")

    monkeypatch.setattr(manager, "ProcessCheckpointWriter", cannot)
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
        )
        await run(engine, 20)
    finally:
        await engine.shutdown()
    receiver.wait_for(lambda: len(task_spans(receiver)) == 20)
    assert built_here.count("task noop") == 20  # the fallback: built here
    # And the metrics, through the SDK's exporter here.
    receiver.wait_for(lambda: n.METRIC_TASK_DURATION in receiver.metric_names())


async def test_metrics_go_from_the_telemetry_process_with_their_own_settings(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's metrics are encoded here and sent by the telemetry
    process, with the spans: the engine's process builds no OTLP exporter,
    and the metrics' own header and compression variables are honoured."""

    def no_exporter(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine's process built an OTLP exporter")

    monkeypatch.setattr(_otel, "otlp_exporters", no_exporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-signal=traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-signal=metrics")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip")
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(otlp_endpoint=receiver.endpoint, otlp_protocol=protocol)
        await run(engine, 10)
    finally:
        await engine.shutdown()
    receiver.wait_for(lambda: len(task_spans(receiver)) == 10)
    receiver.wait_for(lambda: n.METRIC_TASK_DURATION in receiver.metric_names())
    counts = [p.count for m in duration_metrics(receiver) for p in m.histogram.data_points]
    assert sum(counts) == 10
    assert {h.get("x-signal") for h in receiver.metric_headers} == {"metrics"}
    assert {h.get("x-signal") for h in receiver.trace_headers} == {"traces"}
    if protocol != "grpc":  # gRPC keeps its encoding header to itself
        assert {h.get("content-encoding") for h in receiver.metric_headers} == {"gzip"}
        assert {h.get("content-encoding") for h in receiver.trace_headers} == {None}


_NO_CLIENT = """
import asyncio, json, sys
from asyncflow import WorkflowEngine

async def main(endpoint, protocol, work_dir):
    engine = await WorkflowEngine.create(dry_run=True, work_dir=work_dir)
    await engine.start_telemetry(otlp_endpoint=endpoint, otlp_protocol=protocol)

    @engine.function_task
    async def noop(i):
        return i

    await asyncio.gather(*[noop(i) for i in range(5)])
    await engine.shutdown()

asyncio.run(main(*sys.argv[1:4]))
print(json.dumps(sorted(
    m for m in sys.modules
    if m == "grpc" or m.startswith(("grpc.", "opentelemetry.exporter.otlp.proto.grpc",
                                    "opentelemetry.exporter.otlp.proto.http", "requests"))
)))
"""


def test_the_engine_s_process_loads_no_otlp_client(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """With the telemetry process sending spans and metrics, the engine's
    process imports neither gRPC nor the SDK's OTLP exporters (their memory,
    about 10 MB for gRPC, and their threads stay out of it)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NO_CLIENT, receiver.endpoint, protocol, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    receiver.wait_for(lambda: n.METRIC_TASK_DURATION in receiver.metric_names())


def telemetry_process() -> Any:
    """The telemetry process (the checkpoint writer) among this process's children."""
    import psutil

    found = [
        child
        for child in psutil.Process().children(recursive=True)
        if "asyncflow.telemetry._writer_main" in " ".join(child.cmdline())
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("setting", "increment"), [(None, n.TELEMETRY_NICE), ("0", 0), ("3", 3)])
async def test_the_telemetry_process_yields_to_the_work(
    setting: str | None, increment: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    if setting is None:
        monkeypatch.delenv(n.ENV_TELEMETRY_NICE, raising=False)
    else:
        monkeypatch.setenv(n.ENV_TELEMETRY_NICE, setting)
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        await engine.start_telemetry(checkpoint_path=tmp_path / "ckpt")
        own = os.nice(0)
        assert telemetry_process().nice() == min(own + increment, 19)
    finally:
        await engine.shutdown()


KILLED_RUN = """
import asyncio, os, signal, sys
from asyncflow import NoopExecutionBackend, WorkflowEngine

async def main():
    work_dir = os.path.dirname(sys.argv[3])  # the test's, not the checkout
    engine = await WorkflowEngine.create(backend=NoopExecutionBackend(), work_dir=work_dir)
    await engine.start_telemetry(otlp_endpoint=sys.argv[1], otlp_protocol=sys.argv[2])

    @engine.function_task
    async def t(i):
        return i

    done = open(sys.argv[3], "w")
    for _ in range(10):
        futs = [t(i) for i in range(200)]
        await asyncio.gather(*futs)
        done.write("".join(f.uid + "\\n" for f in futs))
        done.flush()
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_killed_engine_still_exports_every_task_that_completed(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    import psutil

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    done = tmp_path / "done.txt"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, str(script), receiver.endpoint, protocol, str(done)],
        cwd=repo,
        stderr=subprocess.PIPE,
    )
    seen: list[Any] = []
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            seen = seen or [
                c
                for c in psutil.Process(proc.pid).children()
                if "_writer_main" in " ".join(c.cmdline())
            ]
        time.sleep(0.01)  # a poll interval, not a synchronisation
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    _, alive = psutil.wait_procs(seen, timeout=60)
    assert seen and alive == []  # the telemetry process sent what it had, then ended
    finished = set(done.read_text().split())
    assert len(finished) == 10 * 200
    received = {s["attributes"].get(n.TASK_UID) for s in receiver.spans()}
    assert finished <= received


async def test_otlp_metrics_carry_the_recorders_histograms_without_a_replay(
    protocol: str, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """With the OTLP exporter as the only metric reader, the duration
    histograms go out as the recorder aggregated them: no value is kept for
    a replay into SDK instruments, and the counts are all there."""
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, otlp_protocol=protocol, resource_poll_interval=0.1
        )
        await run(engine, 40)
        recorder: Any = tel.observer
        assert recorder.task_duration.track is False
        assert recorder.task_duration.pending == {}
    finally:
        await engine.shutdown()

    def counts() -> list[int]:
        return [sum(p.count for p in m.histogram.data_points) for m in duration_metrics(receiver)]

    receiver.wait_for(lambda: 40 in counts())
    buckets = [
        (list(point.bucket_counts), list(point.explicit_bounds))
        for metric in duration_metrics(receiver)
        for point in metric.histogram.data_points
    ]
    counts_, bounds = buckets[-1]
    assert bounds == list(n.DURATION_BUCKETS)
    assert sum(counts_) == 40 and len(counts_) == len(bounds) + 1


def _span_bytes(encoder: Any, i: int) -> bytes:
    attributes = {n.TASK_UID: f"task.{i:06d}", n.TASK_NAME: "t"}
    return bytes(encoder.span("task t", i + 1, None, 10, 20, n.STATUS_OK, "", attributes, []))


def test_a_slow_collector_slows_the_sender_and_loses_nothing(
    receiver: OTLPReceiver, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The telemetry process's sender, against a receiver that takes 20 ms a
    request, with a queue of 8 KB: spans wait for room instead of being
    dropped (they were, before), and all of them arrive in order."""
    from asyncflow.telemetry import _otlp_sender
    from asyncflow.telemetry._otlp_proto import SpanEncoder

    monkeypatch.setattr(_otlp_sender, "QUEUE_BYTES", 8192)
    receiver.delay = 0.02
    encoder = SpanEncoder("ab" * 16, {"service.name": "slow"}, "asyncflow", "0")
    said: list[str] = []
    transport = _otlp_sender.make_transport(receiver.endpoint, protocol)
    sender = _otlp_sender.SpanSender(encoder.request, transport, said.append)
    count = 1500  # about 80 bytes each: 15 times the queue
    for i in range(count):
        sender.put(_span_bytes(encoder, i))
    sender.close(10.0)
    assert sender.dropped == 0, said
    uids = [s["attributes"][n.TASK_UID] for s in receiver.spans()]
    assert uids == [f"task.{i:06d}" for i in range(count)]
    assert not [line for line in said if line.startswith(("otlp down", "otlp dropped"))]


def test_a_full_queue_drops_at_once_for_an_endpoint_that_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused port: the sender marks it down and a full queue drops spans
    without waiting (a dead endpoint costs no time), counting them."""
    import socket

    from asyncflow.telemetry import _otlp_sender
    from asyncflow.telemetry._otlp_proto import SpanEncoder

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(_otlp_sender, "QUEUE_BYTES", 2048)
    encoder = SpanEncoder("ab" * 16, {"service.name": "dead"}, "asyncflow", "0")
    said: list[str] = []
    transport = _otlp_sender.make_transport(f"http://127.0.0.1:{port}", "http/protobuf")
    sender = _otlp_sender.SpanSender(encoder.request, transport, said.append)
    started = time.monotonic()
    for i in range(5000):
        sender.put(_span_bytes(encoder, i))
    queued = time.monotonic() - started
    sender.close(2.0)
    assert sender.dropped == 5000 and sender.sent == 0
    assert [line for line in said if line.startswith("otlp down")]
    # It never waited a stall limit per span: at most one, while the first
    # export was still finding the port refused.
    assert queued < 5000 * _otlp_sender.STALL_SECONDS / 10
