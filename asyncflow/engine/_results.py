"""Turn what a backend wrote into a task dict into a value or an exception.

Backends follow the RHAPSODY field names (``return_value``, ``stdout``,
``stderr``, ``exit_code``, ``exception``) but differ in details: Dask function
tasks have no ``exit_code``, Dragon puts an executable's exit code in
``return_value`` and reports a failed executable with ``SystemExit(code)`` as
its exception, some backends store the exception as text. The engine reads
results only through these two functions.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ..backends._base import TaskDescription
from ..errors import BackendError, ExecutableError
from ..telemetry.names import TYPE_EXECUTABLE, TYPE_PROMPT

__all__ = ["exit_code_of", "failure_of", "value_of"]


def exit_code_of(task: TaskDescription) -> int | None:
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


def value_of(task: TaskDescription, kind: str, stdout_path: str | None) -> Any:
    """The awaited value of a task a backend reported DONE.

    Args:
        task: the task dict after the backend wrote its results.
        kind: ``function``, ``executable`` or ``prompt``.
        stdout_path: for ``capture_stdio`` executables, the stdout file path.
            It is the value when the backend wrote that file; a backend that
            did not (a dry run) is taken at its word, like without capture.
    """
    if kind == TYPE_EXECUTABLE:
        if stdout_path is not None and os.path.exists(stdout_path):
            return stdout_path
        stdout = task.get("stdout")
        if stdout is None:
            rv = task.get("return_value")
            # Backends that return the output as the value (not an exit code).
            if isinstance(rv, (str, bytes)):
                return _text(rv)
        return _text(stdout)
    if kind == TYPE_PROMPT:
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


def failure_of(task: TaskDescription, kind: str, stdio_dir: str | None = None) -> BaseException:
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
    if isinstance(exc, (Exception, asyncio.CancelledError)):
        return exc
    if isinstance(exc, BaseException):
        # SystemExit, KeyboardInterrupt, GeneratorExit...: raised from a
        # future they would escape ``except Exception`` and end the program.
        return _as_exception(task, kind, stdio_dir, exc)
    if kind == TYPE_EXECUTABLE:
        return _executable_error(task, stdio_dir, stderr=_text(exc) if exc else "")
    if exc:
        return BackendError(_text(exc))
    stderr = _text(task.get("stderr")).strip()
    return BackendError(stderr or f"task {task.get('uid')} failed without an error message")


def _executable_error(
    task: TaskDescription,
    stdio_dir: str | None,
    exit_code: int | None = None,
    stderr: str = "",
) -> ExecutableError:
    """An :class:`ExecutableError` from the task's fields (or its stdio files).

    ``exit_code`` and ``stderr`` stand in when the task has none of its own.
    """
    command = [task.get("executable") or "", *(task.get("arguments") or [])]
    if stdio_dir is not None:
        base = os.path.join(stdio_dir, str(task.get("uid")))
        err, out = _tail(base + ".stderr"), _tail(base + ".stdout")
    else:
        err, out = _text(task.get("stderr")), _text(task.get("stdout"))
    code = exit_code_of(task)
    return ExecutableError(
        exit_code if code is None else code, err or stderr, out, [str(c) for c in command]
    )


def _as_exception(
    task: TaskDescription, kind: str, stdio_dir: str | None, exc: BaseException
) -> Exception:
    """An ``Exception`` standing for a reported ``BaseException`` (chained to it).

    An executable gets an :class:`ExecutableError`; ``SystemExit(code)``
    (what Dragon reports for a non-zero exit) gives its exit code. Other
    tasks get a ``RuntimeError`` that names the original.
    """
    error: Exception
    if kind == TYPE_EXECUTABLE:
        code: int | None = None
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, SystemExit):
            if isinstance(exc.code, int) and not isinstance(exc.code, bool):
                code, detail = exc.code, ""
            elif exc.code is not None:
                code, detail = 1, str(exc.code)  # sys.exit("message") exits with 1
        error = _executable_error(task, stdio_dir, code, detail)
    else:
        what = f"{kind} task {task.get('name') or task.get('uid')!r}"
        error = RuntimeError(f"{what} ended with {exc!r}")
    error.__cause__ = exc
    return error


def stdout_file(work_dir: str | os.PathLike[str], uid: str) -> str:
    """Where backends write a ``capture_stdio`` task's standard output."""
    return os.path.join(os.fspath(work_dir), f"{uid}.stdout")
