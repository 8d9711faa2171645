"""Running one executable task as a subprocess, in a worker thread.

A command string runs through ``/bin/sh -c`` as written, a list (or
``shell=False``) as its exact argv (see ``_shell.py``). The process gets its
own session (so cancelling kills its whole process group), and no standard
input. The task ends when its own process ends: a descendant that left the
process group (``setsid cmd &``) and still holds the output pipes gets
:data:`OUTPUT_GRACE` seconds, then the pipes are closed on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from ._base import TaskDescription
from ._shell import direct_launch, launch_argv, shell_status

__all__ = ["OUTPUT_GRACE", "kill_group", "run_executable"]

# Seconds output is still read after the process exited: enough for what its
# own children flush on the way out, short enough that a stranger holding
# the pipe cannot keep the task running.
OUTPUT_GRACE = 0.5

# How often a task whose pipes stay open checks whether its process exited.
_EXIT_POLL = 0.2


def _env(overrides: Any) -> dict[str, str] | None:
    if not overrides:
        return None
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in dict(overrides).items()})
    return env


def run_executable(
    task: TaskDescription,
    work_dir: str,
    procs: dict[str, subprocess.Popen[bytes]],
    on_start: Callable[[], None],
    extra_env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run the task's command; return ``(exit code, stdout, stderr)``.

    How it is launched comes from :func:`launch_argv`. Options come from
    ``task_backend_specific_kwargs``: ``cwd``, ``env`` (merged
    over the current environment; ``extra_env`` goes over that, e.g. the
    ``CUDA_VISIBLE_DEVICES`` of the task's GPU slots). With ``capture_stdio`` the output goes to
    ``<work_dir>/<uid>.stdout`` and ``.stderr`` and the returned strings are
    empty.

    Raises:
        OSError: the program could not be started (not found, not executable).
    """
    uid = task["uid"]
    opts = task.get("task_backend_specific_kwargs") or {}
    cmd = launch_argv(task)
    capture = bool(task.get("capture_stdio"))
    if capture:
        os.makedirs(work_dir, exist_ok=True)
        out_f = open(os.path.join(work_dir, f"{uid}.stdout"), "wb")  # noqa: SIM115
        err_f = open(os.path.join(work_dir, f"{uid}.stderr"), "wb")  # noqa: SIM115
        stdout: Any = out_f
        stderr: Any = err_f
    else:
        stdout = stderr = subprocess.PIPE
    try:
        cwd = opts.get("cwd")
        env = _env({**(opts.get("env") or {}), **(extra_env or {})})
        direct = direct_launch(cmd, env, cwd)
        if direct is not None:
            try:
                proc = _spawn(direct[0], cwd, direct[1], stdout, stderr)
            except OSError:  # the shell says why, exactly as it would have
                direct = None
        if direct is None:
            proc = _spawn(cmd, cwd, env, stdout, stderr)
        procs[uid] = proc
        try:
            on_start()
            out, err = _communicate(proc)
        finally:
            procs.pop(uid, None)
        code, note = (proc.returncode, "") if direct is None else shell_status(proc.returncode)
        if note and capture:
            err_f.write(note.encode())
    finally:
        if capture:
            out_f.close()
            err_f.close()
    if capture:
        return code, "", ""
    return (
        code,
        out.decode(errors="replace") if out else "",
        (err.decode(errors="replace") if err else "") + note,
    )


def _spawn(
    argv: list[str], cwd: str | None, env: dict[str, str] | None, stdout: Any, stderr: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def _communicate(proc: subprocess.Popen[bytes]) -> tuple[bytes | None, bytes | None]:
    """Read the output of ``proc`` until it exits, plus a short grace.

    ``communicate()`` alone waits for end of file, which never comes while a
    descendant that escaped the process group holds the pipe.
    """
    while True:
        try:
            return proc.communicate(timeout=_EXIT_POLL)
        except subprocess.TimeoutExpired:
            if proc.poll() is not None:
                break
    try:
        return proc.communicate(timeout=OUTPUT_GRACE)
    except subprocess.TimeoutExpired as exc:
        # Output read so far is kept; the pipes are ours to close.
        out, err = exc.output, exc.stderr
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    return out, err


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group of ``proc`` (ignored if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
