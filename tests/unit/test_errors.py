"""The exception classes and how a backend's report becomes an exception.

``DependencyFailureError`` keeps the constructor of ``radical.asyncflow``
(message first) next to the engine's form, and both exception classes of
their own survive ``pickle`` and ``copy.deepcopy`` unchanged. ``failure_of``
never hands a future a ``BaseException`` that ``except Exception`` misses.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncflow.engine._results import failure_of, value_of
from asyncflow.errors import DependencyFailureError, ExecutableError

ENGINE_MESSAGE = "Cannot execute '{}' due to dependency failure"

ROUND_TRIPS: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda exc: pickle.loads(pickle.dumps(exc)),
    "deepcopy": copy.deepcopy,
}


# ---------------------------------------------------------------------- DependencyFailureError


def test_dependency_failure_message_alone() -> None:
    exc = DependencyFailureError("Stage 2 failed")
    assert str(exc) == "Stage 2 failed"
    assert exc.failed_dependencies == []
    assert exc.root_cause is None and exc.__cause__ is None
    assert exc.task_name is None and exc.chain == []


def test_dependency_failure_old_keywords_keep_the_message() -> None:
    root = KeyError("k")
    exc = DependencyFailureError("Stage 2 failed", failed_dependencies=["a"], root_cause=root)
    assert str(exc) == "Stage 2 failed"
    assert exc.failed_dependencies == ["a"]
    assert exc.root_cause is root and exc.__cause__ is root
    assert exc.original_exception is root


def test_dependency_failure_old_positional_message() -> None:
    root = ValueError("bad")
    exc = DependencyFailureError("Stage 2 failed", ["a", "b"], root)
    assert str(exc) == "Stage 2 failed"
    assert exc.failed_dependencies == ["a", "b"] and exc.__cause__ is root


def test_dependency_failure_message_keyword() -> None:
    exc = DependencyFailureError(message="x failed", failed_dependencies=("a",))
    assert str(exc) == "x failed" and exc.failed_dependencies == ["a"]


def test_dependency_failure_positional_message_is_kept_as_given() -> None:
    # The old positional form: a message, never read as a task name.
    root = KeyError("x")
    exc = DependencyFailureError("evaluate", ["train"], root)
    assert str(exc) == "evaluate" and exc.task_name is None
    assert exc.failed_dependencies == ["train"]
    assert exc.root_cause is root and exc.__cause__ is root


def test_dependency_failure_for_task() -> None:
    root = KeyError("x")
    exc = DependencyFailureError.for_task("my task", ["train"], root)
    assert str(exc) == ENGINE_MESSAGE.format("my task")
    assert exc.task_name == "my task" and exc.chain == ["my task", "train"]
    assert exc.__cause__ is root
    assert DependencyFailureError.message_for("t") == ENGINE_MESSAGE.format("t")


def test_dependency_failure_standard_message_names_the_task() -> None:
    exc = DependencyFailureError(ENGINE_MESSAGE.format("evaluate"), ["train"])
    assert str(exc) == ENGINE_MESSAGE.format("evaluate")
    assert exc.task_name == "evaluate" and exc.chain == ["evaluate", "train"]


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
@pytest.mark.parametrize(
    "make",
    [
        lambda: DependencyFailureError.for_task("evaluate", ["train"], KeyError("x")),
        lambda: DependencyFailureError("Stage 2 failed", failed_dependencies=["a"]),
        lambda: DependencyFailureError("oops"),
        lambda: DependencyFailureError.for_task(
            "c", ["b"], DependencyFailureError.for_task("b", ["a"], ValueError("boom"))
        ),
    ],
    ids=["engine-call", "old-keywords", "message-only", "nested"],
)
def test_dependency_failure_round_trips(how: str, make: Callable[[], Any]) -> None:
    exc = make()
    back = ROUND_TRIPS[how](exc)
    assert type(back) is DependencyFailureError
    assert str(back) == str(exc) and back.args == exc.args
    assert back.task_name == exc.task_name
    assert back.failed_dependencies == exc.failed_dependencies
    assert back.chain == exc.chain
    assert repr(back.root_cause) == repr(exc.root_cause)
    assert back.__cause__ is back.root_cause
    assert repr(back.original_exception) == repr(exc.original_exception)


# ---------------------------------------------------------------------- ExecutableError


@pytest.mark.parametrize("how", sorted(ROUND_TRIPS))
def test_executable_error_round_trips(how: str) -> None:
    exc = ExecutableError(2, "bad stderr\n", "some out", ["md", "-x"])
    back = ROUND_TRIPS[how](exc)
    assert type(back) is ExecutableError
    assert str(back) == str(exc) == "executable failed with exit code 2 (md -x): bad stderr"
    assert back.args == exc.args
    assert (back.exit_code, back.stderr, back.stdout, back.command) == (
        2,
        "bad stderr\n",
        "some out",
        ["md", "-x"],
    )


def test_executable_error_round_trip_keeps_extra_state() -> None:
    exc = ExecutableError(None)
    exc.add_note("while running step 3")
    back = pickle.loads(pickle.dumps(exc))
    assert str(back) == "executable failed with exit code None"
    assert back.command is None and back.__notes__ == ["while running step 3"]


# ---------------------------------------------------------------------- failure_of


def _executable_task(**fields: Any) -> dict[str, Any]:
    return {"uid": "task.000001", "name": "md", "executable": "md", "arguments": ["-n", "1"]} | (
        fields
    )


def test_dragon_system_exit_becomes_executable_error() -> None:
    # rhapsody's Dragon backend: a non-zero exit is reported as SystemExit(code).
    cause = SystemExit(3)
    task = _executable_task(exception=cause, stderr="md: segmentation fault", stdout="")
    exc = failure_of(task, "executable")
    assert isinstance(exc, ExecutableError)
    assert exc.exit_code == 3 and exc.stderr == "md: segmentation fault"
    assert exc.command == ["md", "-n", "1"]
    assert exc.__cause__ is cause


def test_system_exit_prefers_the_reported_exit_code() -> None:
    exc = failure_of(_executable_task(exception=SystemExit(1), exit_code=139), "executable")
    assert isinstance(exc, ExecutableError) and exc.exit_code == 139


def test_system_exit_with_a_message() -> None:
    exc = failure_of(_executable_task(exception=SystemExit("no input")), "executable")
    assert isinstance(exc, ExecutableError)
    assert exc.exit_code == 1 and exc.stderr == "no input"


def test_other_base_exception_of_an_executable() -> None:
    exc = failure_of(_executable_task(exception=KeyboardInterrupt()), "executable")
    assert isinstance(exc, ExecutableError)
    assert exc.exit_code is None and exc.stderr == "KeyboardInterrupt"
    assert isinstance(exc.__cause__, KeyboardInterrupt)


def test_system_exit_reads_the_captured_stderr(tmp_path: Path) -> None:
    (tmp_path / "task.000001.stderr").write_text("from the file\n")
    (tmp_path / "task.000001.stdout").write_text("partial\n")
    task = _executable_task(exception=SystemExit(4), stderr=str(tmp_path / "x.stderr"))
    exc = failure_of(task, "executable", str(tmp_path))
    assert isinstance(exc, ExecutableError)
    assert exc.exit_code == 4
    assert exc.stderr == "from the file\n" and exc.stdout == "partial\n"


@pytest.mark.parametrize("kind", ["function", "prompt"])
@pytest.mark.parametrize("cause", [SystemExit(3), KeyboardInterrupt(), GeneratorExit("gone")])
def test_base_exception_of_a_function_becomes_runtime_error(
    kind: str, cause: BaseException
) -> None:
    task = {"uid": "task.000007", "name": "train", "exception": cause}
    exc = failure_of(task, kind)
    assert type(exc) is RuntimeError
    assert "train" in str(exc) and type(cause).__name__ in str(exc)
    assert exc.__cause__ is cause


def test_exceptions_and_cancellation_pass_through() -> None:
    error = ValueError("bad")
    assert failure_of({"uid": "t", "exception": error}, "function") is error
    missing = FileNotFoundError("md")
    assert failure_of(_executable_task(exception=missing), "executable") is missing
    # The engine turns a reported CancelledError into a cancelled future.
    cancelled = asyncio.CancelledError("stop")
    assert failure_of({"uid": "t", "exception": cancelled}, "function") is cancelled


# ---------------------------------------------------------------------- value_of


def test_value_of_captured_output(tmp_path: Path) -> None:
    path = tmp_path / "task.000001.stdout"
    task = _executable_task(stdout="Dummy Output", return_value="Dummy Output", exit_code=0)
    # No file written (a dry run): the backend's own stdout.
    assert value_of(task, "executable", str(path)) == "Dummy Output"
    path.write_text("real output\n")
    assert value_of(task, "executable", str(path)) == str(path)
    assert value_of(task, "executable", None) == "Dummy Output"
