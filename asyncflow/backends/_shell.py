"""How an executable task's command is launched: through ``/bin/sh`` or not.

The engine marks each executable task dict with ``shell`` (bool) and
``command`` (the shell line, or None for an exact argv). A task dict that
did not come from the engine (a RHAPSODY-style dict) has no ``shell`` key:
its ``task_backend_specific_kwargs["shell"]`` decides, and the line is its
argv quoted back with ``shlex.join``.

A shell line without shell syntax may start its program without the shell
(see :func:`direct_launch`). No asyncio here.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import shlex
import signal
import string
from collections.abc import Mapping

from ._base import SHELL, TaskDescription

__all__ = [
    "SHELL",
    "dash_environment",
    "direct_launch",
    "launch_argv",
    "plain_words",
    "shell_status",
]


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


# ---------------------------------------------------------------- direct launch
#
# A shell line without any shell syntax may start its program directly,
# without /bin/sh, as GNU make does: one fork and exec less per task. Only
# where the result is provably the one /bin/sh gives:
#
# - /bin/sh is dash (the rules below are dash's);
# - the line has only characters no shell treats specially, words are
#   separated by spaces and tabs, and the first word is neither an
#   assignment, nor a builtin or reserved word (dash would run those itself);
# - the program gets the environment dash would give it: variables with
#   invalid names dropped, PWD as dash sets it;
# - a program that cannot be started is handed to /bin/sh after all, which
#   then says "not found" (127) or runs a script without a #! line;
# - a program killed by a signal gets what dash reports: exit code 128 + n and
#   its message (no message for SIGINT and SIGPIPE). Core dumps must be
#   impossible, or dash's " (core dumped)" could not be known.

_PLAIN = frozenset(string.ascii_letters + string.digits + "_-./,:+@%=")
_BLANKS = frozenset(" \t")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_B = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# What dash runs itself rather than as a program: reserved words and builtins.
_DASH_WORDS = frozenset(
    {
        *("!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi"),
        *("for", "if", "in", "then", "until", "while"),
        *(".", ":", "[", "alias", "bg", "break", "cd", "chdir", "command"),
        *("continue", "echo", "eval", "exec", "exit", "export", "false", "fc"),
        *("fg", "getopts", "hash", "jobid", "jobs", "kill", "local", "printf"),
        *("pwd", "read", "readonly", "return", "set", "shift", "test", "times"),
        *("trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait"),
    }
)
_QUIET_SIGNALS = frozenset({signal.SIGINT, signal.SIGPIPE})


@functools.cache
def _shell_is_dash() -> bool:
    return os.path.basename(os.path.realpath(SHELL)) == "dash"


@functools.cache
def _core_pattern_is_a_pipe() -> bool:
    try:
        with open("/proc/sys/kernel/core_pattern", encoding="utf-8") as f:
            return f.read().startswith("|")
    except OSError:
        return True  # unknown: assume the worst


def _no_core_dumps() -> bool:
    # The limit is read each time: a program may lower or raise it.
    return resource.getrlimit(resource.RLIMIT_CORE)[0] == 0 and not _core_pattern_is_a_pipe()


def plain_words(line: str) -> list[str] | None:
    """The words of a shell line with no shell syntax at all, else None."""
    for char in line:
        if char not in _PLAIN and char not in _BLANKS:
            return None
    words = line.replace("\t", " ").split()
    if not words:
        return None
    first = words[0]
    if "=" in first or ("/" not in first and first in _DASH_WORDS):
        return None
    return words


def _same_dir(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def dash_environment(env: Mapping[str, str] | None, cwd: str | None) -> dict[str, str] | None:
    """The environment dash passes to a program it starts in ``cwd``.

    ``env`` None stands for this process's environment; the answer is then
    None too when dash would pass it unchanged (the common case, which
    costs no copy).
    """
    where = os.path.abspath(cwd) if cwd else os.getcwd()
    if env is None:
        pwd_b = os.environb.get(b"PWD")
        pwd_ok = pwd_b is not None and (
            os.fsdecode(pwd_b) == where
            or (pwd_b.startswith(b"/") and _same_dir(os.fsdecode(pwd_b), where))
        )
        if pwd_ok and all(map(_NAME_B.fullmatch, os.environb)):
            return None
        env = os.environ
    out = {k: v for k, v in env.items() if _NAME.fullmatch(k)}
    pwd = out.get("PWD")
    if not (pwd and pwd.startswith("/") and _same_dir(pwd, where)):
        out["PWD"] = os.path.realpath(where)
    return out


def direct_launch(
    argv: list[str], env: Mapping[str, str] | None, cwd: str | None
) -> tuple[list[str], dict[str, str] | None] | None:
    """``(argv, env)`` to start a ``[SHELL, "-c", line]`` launch directly
    (env None: inherit this process's), or None where the result could
    differ from running it through dash."""
    if len(argv) != 3 or argv[0] != SHELL or argv[1] != "-c":
        return None
    words = plain_words(argv[2])
    if words is None or not _shell_is_dash() or not _no_core_dumps():
        return None
    if "/" not in words[0]:
        path = (os.environ if env is None else env).get("PATH")
        if not path or "%" in path:  # dash's default PATH and its %builtin entries
            return None
    return words, dash_environment(env, cwd)


def shell_status(returncode: int) -> tuple[int, str]:
    """What dash reports for a program of its that ended with ``returncode``:
    its exit code and the line it writes to standard error ("" if none)."""
    if returncode >= 0:
        return returncode, ""
    signum = -returncode
    try:
        quiet = signal.Signals(signum) in _QUIET_SIGNALS
        text = signal.strsignal(signum)
    except ValueError:
        quiet, text = False, None
    note = "" if quiet else f"{text or f'Unknown signal {signum}'}\n"
    return 128 + signum, note
