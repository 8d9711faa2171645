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


def _tail(path: str, limit: int = 4096) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def failure_of(task: dict[str, Any], kind: str, stdio_dir: str | None = None) -> BaseException:
    """The exception for a task a backend reported FAILED.

    Args:
        task: the task dict after the backend wrote its results.
        kind: ``function``, ``executable`` or ``prompt``.
        stdio_dir: for ``capture_stdio`` tasks, the directory of the
            ``<uid>.stdout``/``.stderr`` files. Their tails go into the error:
            some backends put the file paths in the ``stdout``/``stderr``
            fields, which must not pass for the output.
    """
    exc = task.get("exception")
    if isinstance(exc, BaseException):
        return exc
    if kind == "executable":
        command = [task.get("executable") or "", *(task.get("arguments") or [])]
        if stdio_dir is not None:
            base = os.path.join(stdio_dir, str(task.get("uid")))
            stderr, stdout = _tail(base + ".stderr"), _tail(base + ".stdout")
        else:
            stderr, stdout = _text(task.get("stderr")), _text(task.get("stdout"))
        if exc and not stderr:
            stderr = _text(exc)
        return ExecutableError(exit_code_of(task), stderr, stdout, [str(c) for c in command])
    if exc:
        return BackendError(_text(exc))
    stderr = _text(task.get("stderr")).strip()
    return BackendError(stderr or f"task {task.get('uid')} failed without an error message")


def stdout_file(work_dir: str | os.PathLike[str], uid: str) -> str:
    """Where backends write a ``capture_stdio`` task's standard output."""
    return os.path.join(os.fspath(work_dir), f"{uid}.stdout")
