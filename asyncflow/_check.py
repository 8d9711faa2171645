"""Checks of user-supplied options: flags, counts, durations, ports, uids, names.

Strict on purpose: a flag read from a config file as the string ``"false"``
is truthy, and ``1.7`` CPUs truncated to 1 is a silent lie. Each check
raises with a message naming the option and what it got.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["count", "flag", "port", "safe_uid", "seconds", "slot_counts", "text_or_none"]


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Raises:
        TypeError: anything else (``"false"``, ``0``, ``None``).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def count(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``.

    Raises:
        TypeError: not an int (``1.7``, ``"2"``, ``True``).
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def seconds(name: str, value: Any) -> float:
    """``value`` if it is a finite, non-negative number of seconds.

    Raises:
        TypeError: not a number (or a bool).
        ValueError: negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value}")
    return float(value)


def port(name: str, value: Any) -> int:
    """``value`` if it is a TCP port number (0: any free port).

    Raises:
        TypeError: not an int.
        ValueError: outside 0-65535.
    """
    number = count(name, value)
    if number > 65535:
        raise ValueError(f"{name} must be a port number (0-65535), not {number}")
    return number


def safe_uid(name: str, value: Any) -> str:
    """``value`` if it can name a file inside a directory, and nothing else.

    Raises:
        TypeError: not a string.
        ValueError: empty, absolute, or containing ``/``, ``\\``, ``..`` or NUL
            (it would escape the work directory or the checkpoint directory).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    bad = (
        not value
        or os.path.isabs(value)
        or "/" in value
        or "\\" in value
        or "\0" in value
        or ".." in value
    )
    if bad:
        raise ValueError(
            f"{name} {value!r} must name a file, not a path: no '/', '\\\\', '..' or NUL, not empty"
        )
    return value


def text_or_none(name: str, value: Any) -> str | None:
    """``value`` as a plain ``str`` (a subclass made plain), or None.

    Raises:
        TypeError: anything else, a number included (``str()`` of a number
            is one call away for the caller; of an object, a surprise).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, not {type(value).__name__} {value!r}")
    return str(value)


def slot_counts(description: Mapping[str, Any]) -> None:
    """Check the ``cpus`` and ``gpus`` of a task description, when given.

    Raises:
        TypeError: a count that is not an int.
        ValueError: a negative count.
    """
    for key in ("cpus", "gpus"):
        if key in description:
            count(key, description[key])
