"""What a failure leaves in telemetry: the OTel exception event, exit status, stderr tail."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncflow import LocalExecutionBackend, WorkflowEngine
from asyncflow.errors import DependencyFailureError
from asyncflow.telemetry import names, read_checkpoint

SECRET = "s3cr3t-token-value-7781"
STDERR_SCRIPT = """
import sys
sys.stderr.write("x" * 9000 + "\\n")
sys.stderr.write("the last words of the process\\n")
sys.exit(3)
"""
KILLED_SCRIPT = """
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


def task_spans(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """Task name -> its span line in the checkpoint file."""
    return {
        s["attributes"][names.TASK_NAME]: s
        for s in read_checkpoint(checkpoint, sections=[names.SECTION_SPAN])
        if s["attributes"].get(names.LEVEL) == names.LEVEL_TASK
    }


def exception_of(span: dict[str, Any]) -> dict[str, Any]:
    (event,) = [e for e in span["events"] if e["name"] == names.SPAN_EVENT_EXCEPTION]
    assert event["time_ns"] == span["end_ns"]
    return dict(event["attributes"])


async def test_failures_record_exception_exit_status_and_stderr_tail(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    exporter = InMemorySpanExporter()
    tel = await engine.start_telemetry(
        checkpoint_path=tmp_path / "telemetry", span_processors=[SimpleSpanProcessor(exporter)]
    )
    (tmp_path / "loud.py").write_text(STDERR_SCRIPT)
    (tmp_path / "killed.py").write_text(KILLED_SCRIPT)
    env = {"task_backend_specific_kwargs": {"env": {"ASYNCFLOW_TEST_SECRET": SECRET}}}

    def deep_helper(size: int) -> None:
        raise ValueError(f"no data for size {size}")

    @engine.function_task
    async def analyse(size: int) -> None:
        deep_helper(size)

    @engine.function_task
    async def after(_: Any) -> None:
        return None

    @engine.executable_task
    async def loud() -> str:
        return f"{sys.executable} {tmp_path / 'loud.py'}"

    @engine.executable_task
    async def killed() -> list[str]:  # an exact argv: the signal as the process got it
        return [sys.executable, str(tmp_path / "killed.py")]

    @engine.executable_task
    async def killed_in_shell() -> str:  # a shell line: what dash reports, 128 + 9
        return f"{sys.executable} {tmp_path / 'killed.py'}"

    failed = analyse(7)
    results = await asyncio.gather(
        failed,
        after(failed),
        loud(task_description=env),
        killed(task_description=env),
        killed_in_shell(),
        return_exceptions=True,
    )
    assert all(isinstance(r, BaseException) for r in results)
    await engine.shutdown()
    assert tel.checkpoint_file is not None
    spans = task_spans(tel.checkpoint_file)

    # A failed function task: type, message and the stack trace down to the raise.
    got = exception_of(spans["analyse"])
    assert got[names.EXCEPTION_TYPE] == "ValueError"
    assert got[names.EXCEPTION_MESSAGE] == "no data for size 7"
    trace = got[names.EXCEPTION_STACKTRACE]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in deep_helper" in trace and trace.rstrip().endswith("ValueError: no data for size 7")
    # A cascade says so too.
    assert exception_of(spans["after"])[names.EXCEPTION_TYPE] == "DependencyFailureError"

    # A failed executable: exit code and the last 4 KiB of its stderr, whole.
    attrs = spans["loud"]["attributes"]
    assert attrs[names.PROCESS_EXIT_CODE] == 3
    tail = attrs[names.PROCESS_STDERR_TAIL]
    assert len(tail.encode()) <= names.STDERR_TAIL_BYTES
    assert tail.endswith("the last words of the process\n")
    assert tail.startswith("x") and len(tail.encode()) > names.STDERR_TAIL_BYTES - 100
    assert exception_of(spans["loud"])[names.EXCEPTION_TYPE] == "ExecutableError"
    # Killed by a signal: the signal, no exit code.
    killed_attrs = spans["killed"]["attributes"]
    assert killed_attrs[names.PROCESS_SIGNAL] == "SIGKILL"
    assert names.PROCESS_EXIT_CODE not in killed_attrs
    shell_attrs = spans["killed_in_shell"]["attributes"]
    assert shell_attrs[names.PROCESS_EXIT_CODE] == 128 + 9
    assert shell_attrs[names.PROCESS_STDERR_TAIL] == "Killed\n"  # dash's word for it
    # Bounded: no span line carries more than the bounds allow.
    for span in spans.values():
        for event in span["events"]:
            stack = event.get("attributes", {}).get(names.EXCEPTION_STACKTRACE, "")
            assert len(stack) <= names.STACKTRACE_CHARS + 40

    # No environment variable (or its secret value) reaches the file or the spans.
    assert SECRET not in tel.checkpoint_file.read_text()
    assert "ASYNCFLOW_TEST_SECRET" not in tel.checkpoint_file.read_text()

    # The same event on the OpenTelemetry spans.
    (otel,) = [s for s in exporter.get_finished_spans() if s.name == "task analyse"]
    (event,) = [e for e in otel.events if e.name == names.SPAN_EVENT_EXCEPTION]
    assert event.attributes is not None
    assert event.attributes[names.EXCEPTION_TYPE] == "ValueError"
    assert "in deep_helper" in str(event.attributes[names.EXCEPTION_STACKTRACE])
    for span in exporter.get_finished_spans():
        assert SECRET not in str(dict(span.attributes or {}))

    # OTLP/JSON keeps it, and the dashboard reads it back from there.
    from asyncflow.dashboard import open_source

    otlp = tel.export_as_otlp(tmp_path / "run.otlp.json")
    tasks = {t.name: t for t in open_source(otlp).poll().tasks}
    assert "in deep_helper" in tasks["analyse"].failure
    assert "exit code 3" in tasks["loud"].failure
    assert "the last words of the process" in tasks["loud"].failure
    assert "killed by signal SIGKILL" in tasks["killed"].failure


async def test_run_time_and_queue_wait_histograms(tmp_path: Path) -> None:
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    tel = await engine.start_telemetry()

    @engine.function_task
    async def nap(*_: Any) -> None:
        await asyncio.sleep(0.2)

    first = nap()
    await nap(first)
    points = {p["name"]: p for p in tel.read_metrics() if p["name"] in names.METRIC_PHASES}
    run = points[names.METRIC_TASK_RUN_DURATION]
    queue = points[names.METRIC_TASK_QUEUE_DURATION]
    total = points[names.METRIC_TASK_DURATION]
    assert run["count"] == queue["count"] == total["count"] == 2
    # Two naps of 0.2 s. Telemetry stamps a start when the engine's loop sees
    # the worker's report, which may come a little after the nap began.
    assert run["sum"] >= 0.4 - 0.05
    # The second task waited 0.2 s for the first: in its total, not its run time or queue wait.
    assert total["sum"] >= run["sum"] + 0.2 - 0.05
    assert queue["sum"] < total["sum"] - run["sum"]
    await engine.shutdown()


class BrokenStr(Exception):
    """A user exception whose ``__str__`` returns None (a common slip)."""

    def __str__(self) -> str:
        return None  # type: ignore[return-value]


async def test_an_exception_whose_str_is_broken_fails_its_task_and_no_more(
    tmp_path: Path,
) -> None:
    """With telemetry on, str() of such an exception raised inside the
    recorder, and the engine stopped half-way: the dependent of the failed
    task never ended, a retried task failed with the wrong error and a
    workflow scope raised a TypeError instead of the user's exception."""
    engine = await WorkflowEngine.create(backend=await LocalExecutionBackend(), work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry(checkpoint_path=tmp_path / "tel")

        @engine.function_task
        async def load() -> None:
            raise BrokenStr()

        @engine.function_task
        async def use(cfg: Any) -> Any:
            return cfg

        cfg = load()
        out = use(cfg)
        with pytest.raises(DependencyFailureError):
            await asyncio.wait_for(out, 30)
        with pytest.raises(BrokenStr):
            await cfg
        with pytest.raises(BrokenStr):
            await asyncio.wait_for(load(retries=1, retry_delay=0), 30)
        with pytest.raises(BrokenStr):
            async with engine.workflow_scope(name="w"):
                raise BrokenStr()
    finally:
        await engine.shutdown()
    assert tel.checkpoint_file is not None
    spans = [
        s
        for s in read_checkpoint(tel.checkpoint_file, sections=[names.SECTION_SPAN])
        if s["attributes"].get(names.TASK_NAME) == "load"
    ]
    assert len(spans) == 2
    for span in spans:
        assert span["status_description"] == "<BrokenStr: its str() failed>"
        assert exception_of(span)[names.EXCEPTION_MESSAGE] == "<BrokenStr: its str() failed>"


async def test_a_telemetry_hook_that_raises_is_logged_once_and_stops_no_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hooks must never raise; if one does all the same (a bug, a bad
    enricher), the task ends and its dependents run."""
    engine = await WorkflowEngine.create(dry_run=True, work_dir=tmp_path)
    try:
        tel = await engine.start_telemetry()
        # An enricher that returns no dict: logged and removed, as one that raises.
        tel.register_span_enricher(lambda task, attrs: ["team=physics"])

        @engine.function_task
        async def step(*deps: Any) -> int:
            return 1

        assert await asyncio.wait_for(step(step()), 30) == "Dummy Output"
        assert "a span enricher returns a dict or None, not list" in caplog.text
        observer = engine._observer
        assert observer is not None

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug in a hook")

        caplog.clear()
        for hook in ("completed", "task_finished"):
            setattr(observer, hook, broken)
        first = step()
        assert await asyncio.wait_for(step(first, step(first)), 30) == "Dummy Output"
    finally:
        await engine.shutdown()
    assert caplog.text.count("telemetry failed in completed") == 1
    assert "a bug in a hook" in caplog.text
