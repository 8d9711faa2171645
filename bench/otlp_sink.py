"""A real OTLP receiver for the benchmark, in a process of its own.

``python -m bench.otlp_sink grpc|http`` listens on 127.0.0.1 (a free port),
prints ``port <n>``, decodes every trace and metrics request it gets with the
``opentelemetry-proto`` messages (as a collector would) and counts the spans.
Each line ``count`` on its standard input is answered with ``spans <n>``;
end of input ends it. Running apart keeps the receiver's work off the
measured engine's process.
"""

from __future__ import annotations

import http.server
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

HOST = "127.0.0.1"

_lock = threading.Lock()
_spans = 0


def _traces(body: bytes) -> bytes:
    global _spans
    request = ExportTraceServiceRequest.FromString(body)
    found = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    with _lock:
        _spans += found
    return ExportTraceServiceResponse().SerializeToString()


def _metrics(body: bytes) -> bytes:
    ExportMetricsServiceRequest.FromString(body)
    return ExportMetricsServiceResponse().SerializeToString()


def _serve_grpc() -> tuple[int, Any]:
    import grpc

    def unary(handle: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            lambda body, _context: handle(body),
            request_deserializer=None,
            response_serializer=None,
        )

    handlers = [
        grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": unary(_traces)}
        ),
        grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.metrics.v1.MetricsService", {"Export": unary(_metrics)}
        ),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=handlers)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    return port, server


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        if path == "/v1/traces":
            payload = _traces(body)
        elif path == "/v1/metrics":
            payload = _metrics(body)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _serve_http() -> tuple[int, Any]:
    server = http.server.ThreadingHTTPServer((HOST, 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1]), server


def main(argv: list[str]) -> int:
    port, _server = _serve_grpc() if argv[0] == "grpc" else _serve_http()
    print(f"port {port}", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            with _lock:
                print(f"spans {_spans}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
