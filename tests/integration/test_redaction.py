"""Secrets in a failed command line or its stderr stay out of telemetry.

The checkpoint file, ``read_traces()``, the spans handed to exporters and the
report all see the redacted, bounded description; the exception the caller
awaits keeps everything (it never leaves the process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.cli import main
from asyncflow.errors import ExecutableError
from asyncflow.telemetry.redact import DESCRIPTION_LIMIT, bound, redact

LEAKY = (
    "python3 -c 'import sys; sys.stderr.write(\"connect refused, DB_TOKEN=s3cr3t\"); sys.exit(2)'"
    " --password hunter2 --user bob api_key=abc123"
)
SECRETS = ("hunter2", "s3cr3t", "abc123")


async def failed_run(
    tmp_path: Path, command: str, **kw: Any
) -> tuple[Any, InMemorySpanExporter, list[dict[str, Any]]]:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    exporter = InMemorySpanExporter()
    tel = await engine.start_telemetry(
        checkpoint_path=tmp_path / "tel", span_processors=[SimpleSpanProcessor(exporter)], **kw
    )

    @engine.executable_task
    async def leaky() -> str:
        return command

    with pytest.raises(ExecutableError) as info:
        await leaky()
    # The caller's own exception is not telemetry: it keeps the whole story.
    assert "hunter2" not in command or "hunter2" in str(info.value)
    traces = tel.read_traces()
    await engine.shutdown()
    return tel, exporter, traces


def description(traces: list[dict[str, Any]], marker: str) -> str:
    """The status description of the span whose description has ``marker``."""
    return next(str(s["status_description"]) for s in traces if marker in s["status_description"])


async def test_secrets_are_masked_everywhere_telemetry_goes(tmp_path: Path) -> None:
    tel, exporter, traces = await failed_run(tmp_path, LEAKY)
    exported = [s.status.description or "" for s in exporter.get_finished_spans()]
    ring = [s["status_description"] for s in traces]
    checkpoint = Path(tel.checkpoint_file).read_text()
    report = tmp_path / "report.html"
    assert main(["report", str(tel.checkpoint_file), "-o", str(report)]) == 0
    for place in (" ".join(exported), " ".join(ring), checkpoint, report.read_text()):
        assert not [s for s in SECRETS if s in place], place[:2000]
    described = description(traces, "exit code 2")
    assert "--password ***" in described and "DB_TOKEN=***" in described
    assert "--user bob" in described  # what is not secret stays readable


async def test_redaction_can_be_replaced_or_turned_off(tmp_path: Path) -> None:
    _, _, traces = await failed_run(tmp_path / "off", LEAKY, redact=False)
    assert any("hunter2" in s["status_description"] for s in traces)
    _, _, traces = await failed_run(
        tmp_path / "own", LEAKY, redact=lambda text: text.replace("bob", "[user]")
    )
    described = next(
        s["status_description"] for s in traces if "exit code 2" in s["status_description"]
    )
    assert "[user]" in described and "hunter2" in described


async def test_a_huge_command_line_and_stderr_are_bounded_in_telemetry(tmp_path: Path) -> None:
    command = (
        'python3 -c \'import sys; sys.stderr.write("x" * 100000 + " the end"); sys.exit(1)\' '
        + "y" * 50_000
    )
    _, _, traces = await failed_run(tmp_path, command)
    described = next(
        s["status_description"] for s in traces if "exit code 1" in s["status_description"]
    )
    assert len(described) < DESCRIPTION_LIMIT + 100
    assert described.startswith("executable failed") and described.endswith("the end")


async def test_a_bad_redact_setting_is_rejected(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        with pytest.raises(TypeError, match="redact"):
            await engine.start_telemetry(redact="yes")  # type: ignore[arg-type]
    finally:
        await engine.shutdown()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tool --password hunter2 -v", "tool --password *** -v"),
        ("tool --api-key=abc --name x", "tool --api-key=*** --name x"),
        ("MY_SECRET=1 AUTH_HEADER='Bearer x y' run", "MY_SECRET=*** AUTH_HEADER=*** run"),
        ("passwd: --credential -v", "passwd: --credential -v"),
        ("KeyError: 'x'", "KeyError: 'x'"),
        ("git clone https://bob:pw@host/r", "git clone https://bob:***@host/r"),
        ("token=a,b", "token=***"),
    ],
)
def test_default_rules(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_bound_keeps_the_start_and_the_end() -> None:
    text = "start " + "x" * 10_000 + " end"
    cut = bound(text, 100)
    assert cut.startswith("start ") and cut.endswith(" end") and len(cut) < 200
