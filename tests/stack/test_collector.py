"""collector/otelcol-config.yaml: pipelines, component types, endpoints, series names.

The collector cannot run here. What can be proved without it is proved:
every pipeline references defined components, every component type is in the
allowlist of the pinned contrib release, every exporter endpoint is a compose
service and a port it listens on, the Prometheus exporter is configured so
that series keep the engine's names, and the OTLP the engine really sends
translates, under the exporter's rules, to exactly the names the engine's own
``/metrics`` serves and the dashboards query.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.telemetry import names

from ..support.collector import collector_label, collector_series, config_problems
from ..support.otlp_receiver import GrpcReceiver, decode_attributes
from ..support.prometheus import exposition, parse_exposition
from ..support.stack import (
    COLLECTOR_CONFIG,
    PROMETHEUS_CONFIG,
    TEMPO_CONFIG,
    allowlist,
    compose_model,
    endpoint_host_port,
    listening_ports,
    load_yaml,
    read_env,
)

COLLECTOR = "otel-collector"
LISTEN_HOSTS = {"0.0.0.0", "::", ""}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COLLECTOR_CONFIG)
    return loaded


@pytest.fixture(scope="module")
def svc() -> dict[str, dict[str, Any]]:
    return dict(compose_model("demo")["services"])


def test_the_allowlist_is_for_the_pinned_release() -> None:
    version, kinds = allowlist()
    assert version == read_env()["OTELCOL_VERSION"]
    assert set(kinds) == {"receiver", "processor", "exporter", "connector", "extension"}


def test_pipelines_use_defined_allowlisted_components(config: dict[str, Any]) -> None:
    _, allowed = allowlist()
    assert config_problems(config, allowed) == []
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for pipeline in pipelines.values():
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"][0] == "memory_limiter"  # first, as the collector advises
        assert "debug" in pipeline["exporters"]
    assert set(pipelines["traces"]["exporters"]) == {"otlp_grpc/jaeger", "otlp_grpc/tempo", "debug"}
    assert set(pipelines["metrics"]["exporters"]) == {"prometheus", "debug"}
    for exporter in pipelines["traces"]["exporters"]:
        if exporter.startswith("otlp_grpc/"):  # batching in the exporter's queue
            assert config["exporters"][exporter]["sending_queue"]["batch"]["flush_timeout"]


def test_the_checker_catches_broken_configs(config: dict[str, Any]) -> None:
    _, allowed = allowlist()
    broken = copy.deepcopy(config)
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/zipkin")
    broken["exporters"]["jaeger"] = {"endpoint": "jaeger:14250"}  # removed upstream long ago
    broken["processors"]["batch/unused"] = {}
    broken["connectors"] = {"spanmetrics": {}}
    broken["service"]["pipelines"]["metrics"]["receivers"].append("spanmetrics")
    problems = config_problems(broken, allowed)
    assert "pipeline 'traces': exporter 'otlp_grpc/zipkin' is not defined" in problems
    assert "exporter type 'jaeger' (jaeger) is not allowlisted" in problems
    assert "processor type 'batch' (batch/unused) is not allowlisted" in problems
    assert "processor 'batch/unused' is defined but never used" in problems
    assert any("connector 'spanmetrics'" in p for p in problems), problems


def test_receivers_listen_where_compose_publishes(
    config: dict[str, Any], svc: dict[str, dict[str, Any]]
) -> None:
    collector = svc[COLLECTOR]
    published = {int(p["target"]) for p in collector["ports"]}
    protocols = config["receivers"]["otlp"]["protocols"]
    ports = set()
    for protocol in ("grpc", "http"):
        host, port = endpoint_host_port(protocols[protocol]["endpoint"])
        assert host in LISTEN_HOSTS  # inside the container; compose binds 127.0.0.1 outside
        ports.add(port)
    assert ports == published == {4317, 4318}
    _, health = endpoint_host_port(config["extensions"]["health_check"]["endpoint"])
    assert health in listening_ports(collector)


def test_exporter_endpoints_are_compose_services_and_their_ports(
    config: dict[str, Any], svc: dict[str, dict[str, Any]]
) -> None:
    checked = []
    for exporter_id, settings in config["exporters"].items():
        endpoint = (settings or {}).get("endpoint")
        if endpoint is None:
            assert exporter_id.split("/")[0] == "debug", exporter_id
            continue
        host, port = endpoint_host_port(endpoint)
        if host in LISTEN_HOSTS:  # a pull exporter: the collector itself listens
            host = COLLECTOR
        assert host in svc, f"{exporter_id}: {host} is not a compose service"
        assert port in listening_ports(svc[host]), (
            f"{exporter_id}: {host} does not listen on {port}"
        )
        checked.append((exporter_id, host, port))
    assert sorted(checked) == [
        ("otlp_grpc/jaeger", "jaeger", 4317),
        ("otlp_grpc/tempo", "tempo", 4317),
        ("prometheus", COLLECTOR, 9464),
    ]
    # Tempo's own config: its OTLP receiver is on the port the collector sends to.
    tempo = load_yaml(TEMPO_CONFIG)["distributor"]["receivers"]["otlp"]["protocols"]
    assert endpoint_host_port(tempo["grpc"]["endpoint"])[1] == 4317
    assert load_yaml(TEMPO_CONFIG)["server"]["http_listen_port"] in listening_ports(svc["tempo"])


def test_prometheus_scrapes_the_collector_exporter_keeping_its_labels(
    config: dict[str, Any], svc: dict[str, dict[str, Any]]
) -> None:
    scrape = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    assert len(scrape) == 1
    job = scrape[0]
    assert job["job_name"] == names.DEFAULT_SERVICE_NAME
    assert job["honor_labels"] is True
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    _, port = endpoint_host_port(config["exporters"]["prometheus"]["endpoint"])
    assert targets == [f"{COLLECTOR}:{port}"]
    assert port in listening_ports(svc[COLLECTOR])


def test_the_prometheus_exporter_keeps_the_engine_names(config: dict[str, Any]) -> None:
    exporter = config["exporters"]["prometheus"]
    assert exporter["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    # Anything below would rename series or add labels the engine's /metrics lacks.
    for setting in ("namespace", "const_labels", "resource_constant_labels"):
        assert setting not in exporter, setting
    assert not exporter.get("resource_to_telemetry_conversion", {}).get("enabled", False)
    assert exporter.get("add_metric_suffixes", True) is True
    assert not exporter.get("enable_open_metrics", False)  # no extra _created series
    assert not exporter.get("without_scope_info", False)  # otel_scope_* as on /metrics


# ---------------------------------------------------------------- the OTLP the engine sends


@pytest.fixture
async def receiver() -> AsyncIterator[GrpcReceiver]:
    rx = GrpcReceiver()
    rx.start()
    try:
        yield rx
    finally:
        rx.stop()


def _otlp_metrics(receiver: GrpcReceiver) -> dict[str, dict[str, Any]]:
    """Each metric's kind, unit, monotonicity, temporalities and attribute keys."""
    found: dict[str, dict[str, Any]] = {}
    for request in receiver.metric_requests:
        for resource_metrics in request.resource_metrics:
            resource = decode_attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    entry = found.setdefault(
                        metric.name,
                        {
                            "kind": kind,
                            "unit": metric.unit,
                            "monotonic": getattr(data, "is_monotonic", False),
                            "temporality": set(),
                            "keys": set(),
                            "resource": resource,
                        },
                    )
                    if hasattr(data, "aggregation_temporality"):
                        entry["temporality"].add(data.aggregation_temporality)
                    for point in data.data_points:
                        entry["keys"] |= set(decode_attributes(point.attributes))
    return found


async def test_the_collector_path_gives_the_series_the_engine_serves(
    receiver: GrpcReceiver, tmp_path: Path
) -> None:
    engine = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(cpus=2, gpus=1), work_dir=tmp_path
    )
    try:
        tel = await engine.start_telemetry(
            otlp_endpoint=receiver.endpoint, prometheus_port=0, resource_poll_interval=0.1
        )

        @engine.function_task
        async def simulate(i: int) -> int:
            await asyncio.sleep(0.01)
            return i

        @engine.function_task
        async def check(i: int) -> int:
            raise ValueError(f"round {i}")

        async with engine.workflow_scope(name="simulate"):
            await asyncio.gather(*(simulate(i, task_description={"gpus": 1}) for i in range(3)))
        async with engine.workflow_scope(name="analyze"):
            with pytest.raises(ValueError, match="round 1"):
                await check(1)

        attempts: list[int] = []

        @engine.function_task(retries=1, cache=True)  # the retry and cache counters
        async def flaky(i: int) -> int:
            attempts.append(i)
            if len(attempts) == 1:
                raise ConnectionError("lost a node")
            return i

        assert await flaky(1) == await flaky(1) == 1
        assert isinstance(tel.prometheus_port, int)
        direct = parse_exposition(await exposition(tel.prometheus_port))
    finally:
        await engine.shutdown()  # flushes the OTLP metric exporter

    otlp = _otlp_metrics(receiver)
    produced = {point["name"] for point in tel.read_metrics()}
    assert set(otlp) == produced
    assert produced >= set(names.PROMETHEUS_NAMES) - {names.METRIC_NODE_GPU}, produced

    direct_labels: dict[str, set[str]] = {}
    for series, labels in direct:
        direct_labels.setdefault(series, set()).update(key for key, value in labels if value)
    for metric, seen in otlp.items():
        expected = names.prometheus_series(metric)
        assert collector_series(metric, seen["unit"], seen["kind"], seen["monotonic"]) == expected
        assert set(expected) <= set(direct_labels), (metric, expected)
        if seen["kind"] in ("sum", "histogram"):
            assert seen["temporality"] == {2}, metric  # cumulative, as Prometheus needs
        # Only the counters are monotonic (they gain _total on both paths).
        assert seen["monotonic"] == (metric in names.COUNTER_METRICS), metric
        through_collector = {collector_label(key) for key in seen["keys"]}
        assert through_collector <= {
            names.prometheus_label(a) for a in names.METRIC_ATTRIBUTES[metric]
        }
        for series in expected:
            served = {
                label
                for label in direct_labels[series]
                if label != "le" and not label.startswith("otel_scope_")
            }
            assert served == through_collector, (series, served, through_collector)
        # The collector turns these into the job and instance labels.
        assert seen["resource"][names.SERVICE_NAME] == names.DEFAULT_SERVICE_NAME
        assert seen["resource"][names.SERVICE_INSTANCE_ID] == engine.uid


def _ottl_rewrites(statements: list[str]) -> list[tuple[re.Pattern[str], str]]:
    """The (regex, replacement) of each replace statement, as Python sees them."""
    out = []
    for statement in statements:
        pattern, replacement = re.findall(r'"((?:[^"\\]|\\.)*)"', statement)[-2:]
        # OTTL strings double their backslashes; "$$" is this file's literal "$".
        regex = re.compile(pattern.replace("\\\\", "\\"))
        out.append((regex, replacement.replace("$$", "$").replace("$1", r"\1")))
    return out


def test_the_collector_masks_secrets_in_span_messages_too(config: dict[str, Any]) -> None:
    traces = config["service"]["pipelines"]["traces"]["processors"]
    assert traces[:2] == ["memory_limiter", "transform/redact"]
    (block,) = config["processors"]["transform/redact"]["trace_statements"]
    assert block["context"] == "span"
    message = [s for s in block["statements"] if s.startswith("replace_pattern(status.message")]
    assert len(message) == 2
    text = "exit code 1 (tool --password hunter2 DB_TOKEN=s3cr3t --user bob): api_key=abc"
    for regex, replacement in _ottl_rewrites(message):
        text = regex.sub(replacement, text)
    assert text == "exit code 1 (tool --password *** DB_TOKEN=*** --user bob): api_key=***"
