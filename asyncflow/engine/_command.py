"""The command an executable task's body returned, checked and read.

The contract (API.md, section 3):

- a **string** is a shell line: it runs through ``/bin/sh -c`` exactly as
  written (never split and re-joined, so its quoting stays intact); pipes,
  redirects, ``&&``, ``$VAR`` and globs work, as in the older AsyncFlow,
  Parsl's ``bash_app`` and Airflow's ``BashOperator``;
- a **list or tuple** of strings (or paths) is an exact argv, run without a
  shell;
- ``task_description={"shell": False}`` runs a string as its
  ``shlex.split`` argv, without a shell.

Either way the task description gets ``executable`` (the first word) and
``arguments`` (the rest), split with ``shlex.split`` for a string.
No asyncio and no I/O here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = ["Command", "read_command"]


class Command(NamedTuple):
    """A checked command.

    Attributes:
        argv: the words, for the description (and what runs without a shell).
        line: the shell line when it runs through ``/bin/sh -c``, else None.
    """

    argv: list[str]
    line: str | None

    @property
    def shell(self) -> bool:
        """Whether it runs through the shell."""
        return self.line is not None


def _shell_flag(task_name: str, options: Mapping[str, Any] | None) -> bool | None:
    value = options.get("shell") if options else None
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(
        f"executable task '{task_name}': task_description 'shell' must be True or False, "
        f"not {value!r}"
    )


def _words(line: str) -> list[str]:
    """``shlex.split`` for the description; shell syntax shlex cannot read
    (a lone quote in a comment) falls back to whitespace words."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def read_command(task_name: str, command: Any, options: Mapping[str, Any] | None) -> Command:
    """Check what an executable body returned and read it.

    Args:
        task_name: the task's name, for the error messages.
        command: what the body returned.
        options: the task's ``task_description`` (``shell`` is read).

    Raises:
        TypeError: not a string, list or tuple; a list item that is not a
            string or path; ``shell`` that is not a bool.
        ValueError: an empty command; a list with ``shell=True``; a string
            ``shlex`` cannot split when ``shell=False``.
    """
    shell = _shell_flag(task_name, options)
    if isinstance(command, (list, tuple)):
        if shell:
            raise ValueError(
                f"executable task '{task_name}' returned a list, which runs as an exact argv: "
                "return a string to run it through the shell"
            )
        argv: list[str] = []
        for index, item in enumerate(command):
            # A path (os.PathLike) is its __fspath__(), duck-typed: no os here.
            text = item.__fspath__() if hasattr(item, "__fspath__") else item
            if isinstance(text, str):
                argv.append(text)
            else:
                raise TypeError(
                    f"executable task '{task_name}': item {index} of the command is "
                    f"{type(item).__name__}, not str"
                )
        if not argv or not argv[0]:
            raise ValueError(f"executable task '{task_name}' must return a non-empty command")
        return Command(argv, None)
    if not isinstance(command, str) and command is not None:
        raise TypeError(
            f"executable task '{task_name}' must return a non-empty command string "
            f"(or a list of strings), not {type(command).__name__}"
        )
    if command is None or not command.strip():
        raise ValueError(f"executable task '{task_name}' must return a non-empty command string")
    if shell is False:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(
                f"executable task '{task_name}': bad command {command!r}: {exc}"
            ) from None
        if not argv or not argv[0]:
            raise ValueError(f"executable task '{task_name}': command {command!r} names no program")
        return Command(argv, None)
    return Command(_words(command) or [command], command)
