"""Forward a run's telemetry to an OpenTelemetry collector, and serve Prometheus metrics.

Start the bundled stack (``docker compose up -d``, see the stack page of the
docs): its collector listens on localhost:4317 (OTLP/gRPC) and 4318
(OTLP/HTTP), and Grafana, Jaeger and Prometheus show what it receives. Then::

    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
    export OTEL_SERVICE_NAME=md-campaign
    python examples/09-forward_telemetry.py

``--endpoint`` and ``--service-name`` do the same without the environment;
``--prometheus-port`` serves ``/metrics`` on 127.0.0.1 for a Prometheus of
your own to scrape (0 picks a free port). With no collector listening the
run is unaffected: one warning says the endpoint is down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import urllib.request

from asyncflow import WorkflowEngine


def scrape(port: int) -> list[str]:
    """The engine's task-duration series from its own /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith("asyncflow_task_duration")]


async def main(args: argparse.Namespace) -> None:
    async with await WorkflowEngine.create() as engine:
        tel = await engine.start_telemetry(
            otlp_endpoint=args.endpoint,  # None: OTEL_EXPORTER_OTLP_ENDPOINT, if set
            prometheus_port=args.prometheus_port,
            checkpoint_path=args.checkpoint_dir,
        )

        @engine.function_task
        async def simulate(replica: int) -> float:
            await asyncio.sleep(0.05)
            return replica * 0.5

        @engine.function_task
        async def analyse(values: list[float]) -> float:
            return sum(values)

        async with engine.workflow_scope(name="simulate"):  # a low-cardinality label
            total = await analyse([simulate(i) for i in range(args.replicas)])
        print(f"result {total}; trace {tel.trace_id}")
        if tel.prometheus_port is not None:
            series = await asyncio.to_thread(scrape, tel.prometheus_port)
            print(f"/metrics on 127.0.0.1:{tel.prometheus_port}: {len(series)} duration series")
            print("\n".join(line for line in series if "_count{" in line))
        if tel.checkpoint_file:
            print(f"checkpoint file: {tel.checkpoint_file}")
    # Leaving the block shut the engine down: spans and metrics are flushed.
    endpoint = args.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    service = os.environ.get("OTEL_SERVICE_NAME", "asyncflow")
    if endpoint:
        print(f"spans and metrics forwarded to {endpoint} as service {service!r}")
    else:
        print("no OTLP endpoint: nothing forwarded (set OTEL_EXPORTER_OTLP_ENDPOINT)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="OTLP endpoint (default: the environment's)")
    parser.add_argument("--service-name", help="sets OTEL_SERVICE_NAME")
    parser.add_argument("--prometheus-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--checkpoint-dir", help="also write a checkpoint file there")
    parser.add_argument("--replicas", type=int, default=8, help="simulation tasks (default 8)")
    args = parser.parse_args()
    if not 0 <= args.prometheus_port <= 65535 or args.replicas < 1:
        parser.error("--prometheus-port must be 0-65535 and --replicas at least 1")
    if args.endpoint and not args.endpoint.startswith(("http://", "https://")):
        parser.error(f"--endpoint must be a URL such as http://localhost:4317: {args.endpoint!r}")
    if args.service_name:
        os.environ["OTEL_SERVICE_NAME"] = args.service_name  # read by start_telemetry
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parse_args()))
