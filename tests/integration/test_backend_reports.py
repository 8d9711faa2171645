"""Backends that report tasks as objects, report garbage, or make the engine's
handler raise: every future ends (bounded wait), one log line per bad report."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncflow import WorkflowEngine
from asyncflow.errors import BackendError
from asyncflow.telemetry import names as n

Report = Callable[[Any, str], None]


class FakeBackend:
    """The duck-typed backend interface; ``react`` decides what is reported."""

    def __init__(self, name: str, react: Callable[[FakeBackend, dict[str, Any]], None]) -> None:
        self.name = name
        self._react = react
        self._work_dir = ""
        self.is_attached = False
        self.attached_to: list[str] = []
        self.report: Report = lambda task, state: None

    def register_callback(self, callback: Report) -> None:
        self.report = callback

    def get_task_states_map(self) -> dict[str, str]:
        return {s: s for s in ("RUNNING", "DONE", "FAILED", "CANCELED")}

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            self._react(self, task)

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        return None


class AsDict:
    """A task object in the manner of ``rp.Task``: fields through ``as_dict()``."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def as_dict(self) -> dict[str, Any]:
        return dict(self._fields)


class UidOnly:
    """A task object with attributes only."""

    def __init__(self, uid: str, exception: BaseException) -> None:
        self.uid = uid
        self.exception = exception
        self.stderr = "pilot failed"


class BadAsDict:
    def __init__(self, uid: str, result: Any) -> None:
        self.uid = uid
        self._result = result

    def as_dict(self) -> Any:
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


class ExplodingTask(dict[str, Any]):
    """A task dict whose result cannot be read: the engine's handler raises."""

    def get(self, key: str, default: Any = None) -> Any:
        if key == "return_value":
            raise RuntimeError("unreadable result")
        return super().get(key, default)


async def _settle(futures: list[Any]) -> list[Any]:
    # Bounded: a future left pending fails the test instead of hanging it.
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20)


def _engine_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asyncflow" and r.levelno >= logging.ERROR]


async def test_tasks_reported_as_objects_end_with_their_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def react(backend: FakeBackend, task: dict[str, Any]) -> None:
        if task["args"] == ("ok",):
            backend.report(AsDict({**task, "return_value": "value"}), "RUNNING")
            backend.report(AsDict({**task, "return_value": "value"}), "DONE")
        else:
            backend.report(UidOnly(task["uid"], KeyError("lost")), "FAILED")

    backend = FakeBackend("objects", react)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def work(x: str) -> str:
            return x

        ok, lost = work("ok"), work("lost")
        results = await _settle([ok, lost])
    assert results[0] == "value"
    assert isinstance(results[1], KeyError)
    assert _engine_errors(caplog) == []


async def test_garbage_reports_fail_their_tasks_and_are_logged_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def react(backend: FakeBackend, task: dict[str, Any]) -> None:
        garbage: Any
        kind = task["args"][0]
        if kind == "list":
            garbage = BadAsDict(task["uid"], ["not", "a", "dict"])
        elif kind == "raises":
            garbage = BadAsDict(task["uid"], OSError("connection to the pilot lost"))
        else:  # no uid at all: nothing to fail, logged, and the real report follows
            garbage = ("not", "a", "task")

        def send() -> None:  # from a foreign thread, as RHAPSODY backends do
            backend.report(garbage, "FAILED")
            if kind == "none":
                backend.report({**task, "return_value": "after garbage"}, "DONE")

        threading.Thread(target=send).start()

    backend = FakeBackend("garbage", react)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def work(x: str) -> str:
            return x

        futures = [work("list"), work("raises"), work("none")]
        results = await _settle(futures)
    assert isinstance(results[0], BackendError)
    assert "as_dict() returned list, not a dict" in str(results[0])
    assert futures[0].uid in str(results[0])
    assert isinstance(results[1], BackendError)
    assert "OSError: connection to the pilot lost" in str(results[1])
    assert isinstance(results[1].__cause__, OSError)
    assert results[2] == "after garbage"
    errors = _engine_errors(caplog)
    assert len(errors) == 3, [r.getMessage() for r in errors]
    messages = sorted(r.getMessage() for r in errors)
    assert any("tuple without a readable uid" in m for m in messages)


async def test_a_report_that_makes_the_handler_raise_fails_only_that_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def react(backend: FakeBackend, task: dict[str, Any]) -> None:
        if task["args"] == ("bad",):
            backend.report(ExplodingTask(task), "DONE")
        else:
            backend.report({**task, "return_value": "fine"}, "DONE")

    backend = FakeBackend("raising", react)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task
        async def work(x: str) -> str:
            return x

        @engine.function_task
        async def after(x: str) -> str:
            return x

        bad, good = work("bad"), work("good")
        dependent = after(bad)
        results = await _settle([bad, good, dependent])
        # The engine still serves new tasks.
        assert await asyncio.wait_for(work("later"), 10) == "fine"
    assert isinstance(results[0], BackendError)
    assert "RuntimeError: unreadable result" in str(results[0])
    assert results[1] == "fine"
    assert type(results[2]).__name__ == "DependencyFailureError"
    errors = _engine_errors(caplog)
    assert len(errors) == 1
    assert bad.uid in errors[0].getMessage()


class _HeldWakeup(asyncio.SelectorEventLoop):
    """A loop on which the thread named ``held-reporter`` is stopped inside
    ``call_soon_threadsafe`` until ``release`` is set: as when the OS takes
    the CPU from a reporting thread between its report and its wake-up call."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()  # the held thread is inside the call
        self.release = threading.Event()

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        if threading.current_thread().name == "held-reporter":
            self.holding.set()
            self.release.wait(10)
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_a_report_made_on_the_loop_after_a_thread_s_report_is_handled_after_it(
    tmp_path: Path,
) -> None:
    """The local backend reports RUNNING from its worker thread (the engine's
    inbox) and a task's end on the loop (``call_soon_threadsafe``). While
    another thread's wake-up of the inbox is late, the end must not overtake
    the start: a retried task's late RUNNING would then take over the next
    attempt, which was never handed to the backend (it hung for ever)."""
    loop = _HeldWakeup()
    attempts: list[int] = []

    def react(backend: FakeBackend, task: dict[str, Any]) -> None:
        attempts.append(task.get("attempt", 1))

        def first() -> None:
            held = threading.Thread(
                target=backend.report,
                args=({"uid": "task.elsewhere"}, "RUNNING"),
                name="held-reporter",
            )
            held.start()
            assert loop.holding.wait(10)
            backend.report(task, "RUNNING")  # into the inbox, whose wake-up is late
            task["exception"] = RuntimeError("first try fails")
            loop.call_soon_threadsafe(backend.report, task, "FAILED")
            loop.release.set()  # the inbox's wake-up comes after the end
            held.join()

        def second() -> None:
            backend.report(task, "RUNNING")
            task["return_value"] = "second"
            backend.report(task, "DONE")

        threading.Thread(target=first if len(attempts) == 1 else second).start()

    async def main() -> tuple[Any, list[dict[str, Any]]]:
        backend = FakeBackend("ordered", react)
        async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:
            tel = await engine.start_telemetry()

            @engine.function_task(retries=1)
            async def flaky() -> str:
                return "never run here"

            fut = flaky()
            result = await asyncio.wait_for(fut, 10)
            (span,) = [s for s in tel.read_traces() if s["attributes"].get(n.TASK_UID) == fut.uid]
            return result, [e["attributes"] for e in span["events"] if e["name"] == "attempt"]

    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        result, history = runner.run(main())
    assert result == "second"
    assert attempts == [1, 2]
    # Each attempt's RUNNING was handled before its end.
    assert [e[n.ATTEMPT_NUMBER] for e in history] == [1, 2]
    assert all(e[n.ATTEMPT_STARTED] > 0 for e in history)


async def test_a_retried_task_s_start_reported_after_its_end_is_ignored(tmp_path: Path) -> None:
    """A backend that reports an attempt's RUNNING after its FAILED: the next
    attempt is still handed over and runs (the late start once took it over)."""

    def react(backend: FakeBackend, task: dict[str, Any]) -> None:
        if task.get("attempt", 1) == 1:
            task["exception"] = RuntimeError("first try fails")
            backend.report(task, "FAILED")
            backend.report(task, "RUNNING")  # late
        else:
            backend.report(task, "RUNNING")
            backend.report({**task, "return_value": "second"}, "DONE")

    backend = FakeBackend("late-start", react)
    async with await WorkflowEngine.create(backend=backend, work_dir=tmp_path) as engine:

        @engine.function_task(retries=1, retry_delay=0.05)
        async def flaky() -> str:
            return "never run here"

        assert await asyncio.wait_for(flaky(), 10) == "second"
