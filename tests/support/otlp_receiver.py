"""A small, real OTLP receiver for tests, and endpoints that misbehave.

``GrpcReceiver`` serves the OTLP ``TraceService`` and ``MetricsService`` over
gRPC; ``HttpReceiver`` accepts ``POST /v1/traces`` and ``POST /v1/metrics``
with protobuf bodies. Both listen on 127.0.0.1 on a free port, decode every
request with the ``opentelemetry-proto`` messages and keep it, so a test can
look at what really went over the wire. ``BlackHole`` accepts connections
and never answers; ``refused_port()`` gives a port nobody listens on.
"""

from __future__ import annotations

import gzip
import http.server
import selectors
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

__all__ = [
    "BlackHole",
    "GrpcReceiver",
    "HttpReceiver",
    "OTLPReceiver",
    "decode_attributes",
    "decode_value",
    "refused_port",
]

HOST = "127.0.0.1"

TraceRequest = trace_service_pb2.ExportTraceServiceRequest
MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest

_METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def decode_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (arrays become lists, kvlists dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP ``KeyValue`` attributes as a plain dict."""
    return {kv.key: decode_value(kv.value) for kv in attributes}


def _status_name(code: int) -> str:
    # "STATUS_CODE_ERROR" -> "ERROR", the way the SDK spells status codes.
    return Status.StatusCode.Name(code).removeprefix("STATUS_CODE_")


class OTLPReceiver:
    """What an OTLP receiver got, collected thread-safely; subclasses add a transport."""

    endpoint: str

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._traces: list[TraceRequest] = []
        self._metrics: list[MetricsRequest] = []
        # Per trace request: its headers (gRPC metadata), names lower-cased,
        # and how its body came (``gzip`` or "").
        self.trace_headers: list[dict[str, str]] = []
        self.metric_headers: list[dict[str, str]] = []  # the same, per metrics request
        # Seconds each trace request takes before it is answered (a slow collector).
        self.delay = 0.0

    # ------------------------------------------------------------------ intake
    def _add_traces(self, request: TraceRequest, headers: dict[str, str] | None = None) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self._cond:
            self._traces.append(request)
            self.trace_headers.append(headers or {})
            self._cond.notify_all()

    def _add_metrics(self, request: MetricsRequest, headers: dict[str, str] | None = None) -> None:
        with self._cond:
            self._metrics.append(request)
            self.metric_headers.append(headers or {})
            self._cond.notify_all()

    # ------------------------------------------------------------------ views
    @property
    def trace_requests(self) -> list[TraceRequest]:
        """Every trace export request received so far."""
        with self._cond:
            return list(self._traces)

    @property
    def metric_requests(self) -> list[MetricsRequest]:
        """Every metrics export request received so far."""
        with self._cond:
            return list(self._metrics)

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, as a plain dict, in arrival order."""
        return [
            {
                "trace_id": span.trace_id.hex(),
                "span_id": span.span_id.hex(),
                "parent_span_id": span.parent_span_id.hex() or None,
                "name": span.name,
                "attributes": decode_attributes(span.attributes),
                "events": [event.name for event in span.events],
                "event_attributes": [decode_attributes(event.attributes) for event in span.events],
                "status_code": _status_name(span.status.code),
                "status_message": span.status.message,
                "start_ns": span.start_time_unix_nano,
                "end_ns": span.end_time_unix_nano,
                "scope": scope_spans.scope.name,
                "resource": decode_attributes(resource_spans.resource.attributes),
            }
            for request in self.trace_requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def metric_points(self) -> list[dict[str, Any]]:
        """Every metric data point received: name, kind, unit, attributes, resource."""
        return [
            {
                "name": metric.name,
                "kind": kind,
                "unit": metric.unit,
                "attributes": decode_attributes(point.attributes),
                "resource": decode_attributes(resource_metrics.resource.attributes),
            }
            for request in self.metric_requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if (kind := metric.WhichOneof("data")) in _METRIC_KINDS
            for point in getattr(metric, kind).data_points
        ]

    def metric_names(self) -> set[str]:
        """The names of every metric received (with or without data points)."""
        return {
            metric.name
            for request in self.metric_requests
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        }

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` is true, checking at each request and every 50 ms.

        Raises:
            AssertionError: the deadline passed first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"OTLP receiver at {self.endpoint}: condition not met within {timeout} s"
                    )
                self._cond.wait(min(remaining, 0.05))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- gRPC
class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Callable[[TraceRequest, dict[str, str]], None]) -> None:
        self._sink = sink

    def Export(self, request: TraceRequest, context: Any) -> Any:
        metadata = {str(k).lower(): str(v) for k, v in context.invocation_metadata()}
        self._sink(request, metadata)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: Callable[[MetricsRequest, dict[str, str]], None]) -> None:
        self._sink = sink

    def Export(self, request: MetricsRequest, context: Any) -> Any:
        metadata = {str(k).lower(): str(v) for k, v in context.invocation_metadata()}
        self._sink(request, metadata)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver(OTLPReceiver):
    """OTLP/gRPC on ``127.0.0.1:<free port>``; ``endpoint`` is ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        super().__init__()
        self._server: grpc.Server | None = None
        self.port = 0
        self.endpoint = ""

    def start(self) -> None:
        server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _TraceService(self._add_traces), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self._add_metrics), server
        )
        self.port = server.add_insecure_port(f"{HOST}:0")
        if not self.port:
            raise RuntimeError("the gRPC receiver could not bind 127.0.0.1")
        server.start()
        self._server = server
        self.endpoint = f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None


# ---------------------------------------------------------------------- HTTP
class _Handler(http.server.BaseHTTPRequestHandler):
    receiver: HttpReceiver  # set on the per-receiver subclass
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        path = self.path.split("?", 1)[0]
        response: Any
        if path == "/v1/traces":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.receiver._add_traces(TraceRequest.FromString(body), headers)
            response = trace_service_pb2.ExportTraceServiceResponse()
        elif path == "/v1/metrics":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.receiver._add_metrics(MetricsRequest.FromString(body), headers)
            response = metrics_service_pb2.ExportMetricsServiceResponse()
        else:
            self.send_error(404)
            return
        payload = response.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what arrived, not an access log."""


class HttpReceiver(OTLPReceiver):
    """OTLP/HTTP protobuf on ``127.0.0.1:<free port>``; ``endpoint`` is the base URL."""

    def __init__(self) -> None:
        super().__init__()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.endpoint = ""

    def start(self) -> None:
        handler = type("OTLPHandler", (_Handler,), {"receiver": self})
        server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-http"
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


# ---------------------------------------------------------------------- faults
class BlackHole:
    """A TCP server on 127.0.0.1 that accepts and reads but never answers."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.port = 0
        self.endpoint = ""
        self.connections = 0

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ)
        self.port = listener.getsockname()[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._run, name="otlp-black-hole")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    try:
                        conn, _addr = sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    self._conns.append(conn)
                    self.connections += 1
                    self._selector.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the client gave up: forget the connection
                    self._selector.unregister(sock)
                    self._conns.remove(sock)
                    sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._selector.close()

    def __enter__(self) -> BlackHole:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refused_port() -> int:
    """A port on 127.0.0.1 that refuses connections (bound once, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
