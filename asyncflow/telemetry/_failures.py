"""What a failed task's span records: its exception, and a failed process's exit and stderr.

Pure: no I/O, no asyncio. Sizes are bounded (``names.STACKTRACE_CHARS``,
``names.STDERR_TAIL_BYTES``), and only the exception and the process's own
output are read: never its environment.
"""

from __future__ import annotations

import signal
import traceback
from typing import Any

from asyncflow.errors import ExecutableError

from . import names as n

__all__ = ["MESSAGE_CHARS", "error_text", "exception_record", "process_attributes"]

MESSAGE_CHARS = 4096  # the most of an exception message recorded


def _tail(text: str, limit: int) -> str:
    """The end of ``text``, at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut]\n" + text[-limit:]


def error_text(error: BaseException) -> str:
    """``str(error)``, or what stands for it when its ``__str__`` is broken
    (raises, or returns no string: a common slip in user exceptions)."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - telemetry never fails a task
        return f"<{type(error).__name__}: its str() failed>"


def exception_record(error: BaseException) -> tuple[str, str, str]:
    """``(type, message, stack trace)`` of ``error``, as the ``exception`` span event has them.

    The stack trace keeps its end (where it was raised) when it is too long.
    """
    kind = type(error).__name__
    message = error_text(error)
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + f" [{len(message) - MESSAGE_CHARS} characters cut]"
    try:
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:  # noqa: BLE001 - a broken __str__ or cause chain never fails a task
        stack = f"{kind}: {message}\n"
    return kind, message, _tail(stack, n.STACKTRACE_CHARS)


def stderr_tail(stderr: str) -> str:
    """The last ``names.STDERR_TAIL_BYTES`` bytes of ``stderr`` (UTF-8), whole characters."""
    data = stderr.encode("utf-8", errors="replace")
    if len(data) <= n.STDERR_TAIL_BYTES:
        return stderr
    return data[-n.STDERR_TAIL_BYTES :].decode("utf-8", errors="ignore")


def process_attributes(error: BaseException) -> dict[str, Any]:
    """A failed executable's exit code or signal and the tail of its stderr (``{}`` for others)."""
    if not isinstance(error, ExecutableError):
        return {}
    out: dict[str, Any] = {}
    code = error.exit_code
    if isinstance(code, int) and code < 0:
        try:
            out[n.PROCESS_SIGNAL] = signal.Signals(-code).name
        except ValueError:
            out[n.PROCESS_SIGNAL] = str(-code)
    elif isinstance(code, int):
        out[n.PROCESS_EXIT_CODE] = code
    if error.stderr:
        out[n.PROCESS_STDERR_TAIL] = stderr_tail(error.stderr)
    return out
