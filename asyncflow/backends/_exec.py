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
import selectors
import signal
import subprocess
import time
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

_READ_SIZE = 65536
# As subprocess itself: poll(2) where there is one (no descriptor of its own).
_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)


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
    """Read the output of ``proc`` until end of file, then reap it.

    While its pipes are open, whether the process exited is checked every
    :data:`_EXIT_POLL` seconds: a descendant that escaped the process group
    can hold them after it exited, and then the output gets
    :data:`OUTPUT_GRACE` seconds more before the pipes are closed on it.
    The exit is collected by a blocking wait, not by
    ``Popen.communicate(timeout=...)``, which polls for it with sleeps from
    0.5 ms up: the pipes reach end of file a moment before the process can
    be reaped, and that sleep made a short executable take up to a
    millisecond longer.
    """
    pipes = [pipe for pipe in (proc.stdout, proc.stderr) if pipe is not None]
    output: dict[int, list[bytes]] = {id(pipe): [] for pipe in pipes}
    with _Selector() as selector:
        for pipe in pipes:
            selector.register(pipe, selectors.EVENT_READ, output[id(pipe)])
        exited: float | None = None
        check = time.monotonic() + _EXIT_POLL
        while selector.get_map():
            now = time.monotonic()
            if exited is None and now >= check:
                if proc.poll() is not None:
                    exited = now
                check = now + _EXIT_POLL
            if exited is not None and now >= exited + OUTPUT_GRACE:
                break  # a stranger holds the pipes: what was read is kept
            wake = check if exited is None else exited + OUTPUT_GRACE
            for key, _ in selector.select(max(wake - now, 0.0)):
                data = os.read(key.fd, _READ_SIZE)
                if data:
                    key.data.append(data)
                else:
                    selector.unregister(key.fileobj)
    for pipe in pipes:
        with contextlib.suppress(OSError):
            pipe.close()
    proc.wait()
    out = b"".join(output[id(proc.stdout)]) if proc.stdout is not None else None
    err = b"".join(output[id(proc.stderr)]) if proc.stderr is not None else None
    return out, err


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group of ``proc`` (ignored if it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
