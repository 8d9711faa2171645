"""Turn what a backend wrote into a task dict into a value or an exception.

Backends follow the RHAPSODY field names (``return_value``, ``stdout``,
``stderr``, ``exit_code``, ``exception``) but differ in details: Dask function
tasks have no ``exit_code``, Dragon puts an executable's exit code in
``return_value``, some backends store the exception as text. The engine reads
results only through these two functions.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import BackendError, ExecutableError

__all__ = ["exit_code_of", "failure_of", "value_of"]


def exit_code_of(task: dict[str, Any]) -> int | None:
    """The exit code of an executable task, wherever the backend put it."""
    code = task.get("exit_code")
    if code is None and task.get("executable"):
        rv = task.get("return_value")
        if isinstance(rv, int) and not isinstance(rv, bool):
            code = rv
    if code is None:
        return None
    try:
        return int(code)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def value_of(task: dict[str, Any], kind: str, stdout_path: str | None) -> Any:
    """The awaited value of a task a backend reported DONE.

    Args:
        task: the task dict after the backend wrote its results.
        kind: ``function``, ``executable`` or ``prompt``.
        stdout_path: for ``capture_stdio`` executables, the stdout file path.
    """
    if kind == "executable":
        if stdout_path is not None:
            return stdout_path
        stdout = task.get("stdout")
        if stdout is None:
            rv = task.get("return_value")
            # Backends that return the output as the value (not an exit code).
            if isinstance(rv, (str, bytes)):
                return _text(rv)
        return _text(stdout)
    if kind == "prompt":
        rv = task.get("return_value")
        return rv if rv is not None else _text(task.get("stdout"))
    return task.get("return_value")


def failure_of(task: dict[str, Any], kind: str) -> BaseException:
    """The exception for a task a backend reported FAILED."""
    exc = task.get("exception")
    if isinstance(exc, BaseException):
        return exc
    if kind == "executable":
        command = [task.get("executable") or "", *(task.get("arguments") or [])]
        stderr = _text(task.get("stderr"))
        if exc and not stderr:
            stderr = _text(exc)
        return ExecutableError(
            exit_code_of(task), stderr, _text(task.get("stdout")), [str(c) for c in command]
        )
    if exc:
        return BackendError(_text(exc))
    stderr = _text(task.get("stderr")).strip()
    return BackendError(stderr or f"task {task.get('uid')} failed without an error message")


def stdout_file(work_dir: str | os.PathLike[str], uid: str) -> str:
    """Where backends write a ``capture_stdio`` task's standard output."""
    return os.path.join(os.fspath(work_dir), f"{uid}.stdout")
