"""The manual smoke script is valid, and docs/stack.md names what the stack has."""

from __future__ import annotations

import json
import py_compile
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from ..support.grafana import provisioned_datasources
from ..support.prometheus import missing_tool
from ..support.stack import DASHBOARDS, DATASOURCES, ROOT, compose_model, read_env

SCRIPTS = ROOT / "scripts"
SHELL_SCRIPTS = [SCRIPTS / "stack-smoke.sh", SCRIPTS / "stack-ready.sh"]
DOC = ROOT / "docs" / "stack.md"


def test_the_shell_scripts_parse_and_pass_shellcheck() -> None:
    for script in SHELL_SCRIPTS:
        shell = "sh" if script.name == "stack-ready.sh" else "bash"  # busybox sh runs it
        result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        missing_tool("shellcheck not found: apt-get install shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", *(str(s.relative_to(ROOT)) for s in SHELL_SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_smoke_checker_compiles(tmp_path: Path) -> None:
    py_compile.compile(
        str(SCRIPTS / "stack_smoke.py"), cfile=str(tmp_path / "smoke.pyc"), doraise=True
    )


def _compose_run_services(script: str) -> list[str]:
    """The service of every ``compose run`` in a shell script."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    joined = code.replace("\\\n", " ")
    found = []
    for match in re.finditer(r"compose run ([^\n)]*)", joined):
        words = shlex.split(match.group(1))
        while words and words[0].startswith("-"):
            option = words.pop(0)
            if option in ("-e", "-v", "--entrypoint", "--env", "--volume"):
                words.pop(0)
        found.append(words[0])
    return found


def test_the_smoke_script_uses_services_and_files_that_exist() -> None:
    text = (SCRIPTS / "stack-smoke.sh").read_text(encoding="utf-8")
    services = set(compose_model("demo")["services"])
    used = _compose_run_services(text)
    assert set(used) == {"otel-collector", "prometheus", "dash"}, used
    assert set(used) <= services
    for path in re.findall(r"\$PWD/([\w./-]+)", text):
        assert (ROOT / path).exists(), path
    checker = (SCRIPTS / "stack_smoke.py").read_text(encoding="utf-8")
    hosts = set(re.findall(r'"http://([\w-]+):\d+', checker))
    assert hosts == {"grafana", "tempo", "jaeger", "dash"}, hosts
    assert hosts <= services


def test_the_stack_page_names_every_service_port_and_dashboard() -> None:
    doc = DOC.read_text(encoding="utf-8")
    model = compose_model("demo")
    for name, service in model["services"].items():
        assert f"`{name}`" in doc, name
        for port in service.get("ports", []):
            assert str(port["published"]) in doc, (name, port)
    env = read_env()
    for key in env:
        if key.endswith("_VERSION") and key != "PYTHON_VERSION":
            assert key in doc, key
    for uid in provisioned_datasources(DATASOURCES):
        assert uid.split("-")[-1] in doc.lower(), uid
    for board in DASHBOARDS.glob("*.json"):
        dashboard = json.loads(board.read_text(encoding="utf-8"))
        assert dashboard["uid"] in doc and dashboard["title"].split(": ")[-1] in doc.lower()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317" in doc
    assert "scripts/stack-smoke.sh" in doc
    assert "never run in CI" in doc
