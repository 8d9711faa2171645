"""Secrets out of telemetry: the redaction applied to error descriptions.

A failed executable's error names its command line and ends with its
standard error; both can carry a password. Before such text becomes a span's
status description (the checkpoint file, ``read_traces()``, OTLP, the
report), telemetry passes it through :func:`redact` and bounds it with
:func:`bound`. ``engine.start_telemetry(redact=...)`` replaces the rules
with your own function, or turns them off. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "DESCRIPTION_LIMIT",
    "MASK",
    "SECRET_WORDS",
    "bound",
    "describer",
    "redact",
    "redactor",
]

# A key containing one of these (any case) marks its value as secret.
SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "key",
    "credential",
    "auth",
)

MASK = "***"

# Characters of a description kept: the start (what failed) and the end
# (the last of its standard error).
DESCRIPTION_LIMIT = 2048

_WORD = "|".join(re.escape(w) for w in SECRET_WORDS)
_NAME = rf"[\w.-]*(?:{_WORD})[\w.-]*"
_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s"']+)"""
# KEY=VALUE, --key=VALUE
_PAIR = re.compile(rf"(?i)(?<![\w.-])(-{{0,2}}{_NAME}=)({_VALUE})")
# --password VALUE, -token VALUE (a value that is not itself an option)
_OPTION = re.compile(rf"(?i)(?<![\w-])(--?{_NAME}\s+)(?!-)({_VALUE})")
# scheme://user:password@host
_URL = re.compile(r"(?i)(\b[a-z][\w+.-]*://[^\s:/@]+:)([^\s@/]+)(@)")


def redact(text: str) -> str:
    """``text`` with secret values replaced by ``***``.

    Masks the value of every ``KEY=VALUE`` and of every ``--option VALUE``
    whose key or option name contains a word of :data:`SECRET_WORDS` (any
    case), and the password of ``scheme://user:password@host``.
    """
    text = _PAIR.sub(rf"\1{MASK}", text)
    text = _OPTION.sub(rf"\1{MASK}", text)
    return _URL.sub(rf"\1{MASK}\3", text)


def bound(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters: its start and its end."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]} [... {len(text) - limit} characters ...] {text[-tail:]}"


def redactor(setting: Any) -> Callable[[str], str]:
    """The redaction ``setting`` asks for, as a function of text (unbounded).

    Used for a failed task's exception message, stack trace and stderr tail,
    which have bounds of their own.

    Args:
        setting: ``True`` (the default rules), ``False`` (no redaction), or
            a function from text to text (your own rules).

    Raises:
        TypeError: anything else.
    """
    if setting is True:
        return redact
    if setting is False:
        return lambda text: text
    if callable(setting):
        custom: Callable[[str], str] = setting
        return lambda text: str(custom(text))
    raise TypeError(f"redact must be True, False or a function of a string, not {setting!r}")


def describer(setting: Any) -> Callable[[str], str]:
    """The function that turns error text into a span description: redacted
    as ``setting`` says (see :func:`redactor`), then bounded.

    Raises:
        TypeError: ``setting`` is not True, False or a function.
    """
    rules = redactor(setting)
    return lambda text: bound(rules(text))
