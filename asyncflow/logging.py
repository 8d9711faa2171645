"""``init_default_logger``: the logging set-up the older AsyncFlow programs call.

Programs written for ``radical.asyncflow`` start with::

    from asyncflow.logging import init_default_logger
    init_default_logger(logging.INFO)

This configures the standard :mod:`logging` module: a console handler on
standard output (coloured only when it is a terminal), optionally a plain
log file and a JSON Lines file. Calling it again replaces the handlers it
added before instead of adding more.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, TextIO

__all__ = ["STYLES", "init_default_logger"]

STYLES = ("modern", "core", "execution_backend", "minimal")

# Marks the handlers this module added, so a second call replaces them.
_OWNER = "_asyncflow_handler"

_RESET = "\033[0m"
_LEVEL_COLOURS = {
    logging.DEBUG: "\033[96m",
    logging.INFO: "\033[94m",
    logging.WARNING: "\033[93m",
    logging.ERROR: "\033[91m",
    logging.CRITICAL: "\033[1;91m",
}
_GREY, _PURPLE = "\033[90m", "\033[38;5;165m"

# Attributes every LogRecord has: the rest came from ``extra=``.
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "thread_id",
    "short_name",
}


def _short_name(name: str) -> str:
    if name == "__main__":
        return "main"
    return name.rsplit(".", 1)[-1] if name else "root"


class _ColumnFormatter(logging.Formatter):
    """``time │ LEVEL │ [logger] │ message``, coloured on request."""

    def __init__(self, *, colours: bool, details: bool, style: str) -> None:
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")
        self._colours = colours
        self._details = details
        self._minimal = style == "minimal"

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self._colours else text

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        level = self._paint(_LEVEL_COLOURS.get(record.levelno, ""), record.levelname)
        if self._minimal:
            return f"{level} │ {message}"
        stamp = f"{self.formatTime(record, self.datefmt)}.{int(record.msecs):03d}"
        parts = [self._paint(_GREY, stamp)]
        if self._details:
            parts.append(f"[TID:{threading.get_native_id()} PID:{record.process}]")
        parts += [level, self._paint(_PURPLE, f"[{_short_name(record.name)}]"), message]
        return " │ ".join(parts)


class _JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields given through ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _RECORD_KEYS})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _level(value: int | str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} must be a logging level (int or name), not {value!r}")
    if isinstance(value, int):
        return value
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise ValueError(f"{what} {value!r} is not a logging level name")
    return level


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _file_handler(path: str | os.PathLike[str], level: int) -> logging.FileHandler:
    target = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setLevel(level)
    return handler


def init_default_logger(
    log_level: int | str = logging.INFO,
    *,
    output_file: str | os.PathLike[str] | None = None,
    file_log_level: int | str | None = None,
    use_colors: bool = True,
    show_details: bool = False,
    style: str = "modern",
    clear_handlers: bool = False,
    logger_name: str | None = None,
    structured_logging: bool = False,
    structured_file: str | os.PathLike[str] | None = None,
) -> logging.Logger:
    """Configure logging to the console and, optionally, to files.

    Args:
        log_level: level of the console output (``logging.INFO`` or ``"INFO"``).
        output_file: also write plain (never coloured) lines to this file.
        file_log_level: level of the files; default ``log_level``.
        use_colors: colour the console, when standard output is a terminal.
        show_details: add the thread and process ids to each line.
        style: ``"modern"``, ``"core"`` and ``"execution_backend"`` give the
            column layout; ``"minimal"`` only level and message.
        clear_handlers: first remove every handler of the logger.
        logger_name: the logger to configure; default the root logger.
        structured_logging: also write JSON Lines (fields given with
            ``extra=`` included) to ``structured_file``.
        structured_file: default ``output_file`` with the suffix ``.json``,
            else ``asyncflow.logs.json`` in the current directory.

    Returns:
        The configured logger.

    Raises:
        TypeError: a flag that is not a bool, a level that is not an int or str.
        ValueError: an unknown level name or style.
    """
    for flag, value in (
        ("use_colors", use_colors),
        ("show_details", show_details),
        ("clear_handlers", clear_handlers),
        ("structured_logging", structured_logging),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, not {value!r}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    console_level = _level(log_level, "log_level")
    file_level = (
        console_level if file_log_level is None else _level(file_log_level, "file_log_level")
    )

    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        if clear_handlers or getattr(handler, _OWNER, False):
            logger.removeHandler(handler)
            handler.close()

    console = logging.StreamHandler(sys.stdout)
    console.setLevel(console_level)
    console.setFormatter(
        _ColumnFormatter(
            colours=use_colors and _is_tty(sys.stdout), details=show_details, style=style
        )
    )
    added: list[logging.Handler] = [console]
    if output_file is not None:
        plain = _file_handler(output_file, file_level)
        plain.setFormatter(_ColumnFormatter(colours=False, details=show_details, style=style))
        added.append(plain)
    if structured_logging:
        if structured_file is None:
            structured_file = (
                os.path.splitext(os.fspath(output_file))[0] + ".json"
                if output_file is not None
                else "asyncflow.logs.json"
            )
        structured = _file_handler(structured_file, file_level)
        structured.setFormatter(_JsonFormatter())
        added.append(structured)
    for handler in added:
        setattr(handler, _OWNER, True)
        logger.addHandler(handler)
    # Records below every handler's level are not even built.
    logger.setLevel(min(h.level for h in added))
    logging.captureWarnings(True)
    return logger
