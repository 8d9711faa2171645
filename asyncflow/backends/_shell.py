"""How an executable task's command is launched: through ``/bin/sh`` or not.

The engine marks each executable task dict with ``shell`` (bool) and
``command`` (the shell line, or None for an exact argv). A task dict that
did not come from the engine (a RHAPSODY-style dict) has no ``shell`` key:
its ``task_backend_specific_kwargs["shell"]`` decides, and the line is its
argv quoted back with ``shlex.join``.

No asyncio and no I/O here.
"""

from __future__ import annotations

import shlex

from ._base import SHELL, TaskDescription

__all__ = ["SHELL", "launch_argv"]


def launch_argv(task: TaskDescription) -> list[str]:
    """The argv that runs ``task``: ``[SHELL, "-c", line]`` or its own argv."""
    argv = [str(task["executable"]), *(str(a) for a in task.get("arguments") or ())]
    shell = task.get("shell")
    if shell is None:
        shell = (task.get("task_backend_specific_kwargs") or {}).get("shell")
    if not shell:
        return argv
    line = task.get("command")
    if not isinstance(line, str):
        line = shlex.join(argv)
    return [SHELL, "-c", line]
