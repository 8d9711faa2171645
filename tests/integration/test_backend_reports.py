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
