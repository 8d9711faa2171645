"""Engine-level task description keys, translated for RHAPSODY's backends.

A ``task_description`` reaches the backend as ``task_backend_specific_kwargs``.
The engine itself understands ``cpus`` and ``gpus`` (the slots of
``LocalExecutionBackend``); two of RHAPSODY's backends would misread them:

- Dask hands every key to ``Client.submit``, which passes unknown keys on as
  keyword arguments of the user's function, and keys its tasks cluster-wide
  by the task uid. The adapter gives each task a session-unique ``key``, drops
  ``cpus`` (a Dask worker's threads are its CPU slots) and turns ``gpus: n``
  into Dask's worker resources ``{"GPU": n}``, so a GPU task runs only on a
  worker started with ``--resources GPU=...`` and fails at once, with Dask's
  message, where none is connected.
- RADICAL-Pilot builds ``rp.TaskDescription`` from the dict: ``cpus`` and
  ``gpus`` become ``cores_per_rank`` and ``gpus_per_rank``.

Keys the user gave in the backend's own terms (``resources``, ``key``,
``cores_per_rank``...) always win. The adapters work on a copy: the task's own
``task_description`` (what telemetry records) keeps the engine's keys.

Executables: RHAPSODY's execution backends run ``executable`` and
``arguments`` as an exact argv (Concurrent and Dask as a subprocess argv,
RADICAL-Pilot as ``rp.TaskDescription.executable``/``arguments``, Dragon as
a process template's target and args), and the ``shell`` mode of the first
two joins them back with spaces (losing the quoting). So a command string,
which is a shell line, reaches every one of them as the exact argv
``/bin/sh -c <line>`` with ``shell`` off, and a list or ``shell=False``
command as its argv with ``shell`` off. They get a copy of the task dict;
the engine's description keeps the command's own words.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

from ..backends._base import SHELL, TaskDescription

Adapter = Callable[[str, str, dict[str, Any]], dict[str, Any]]


def dask_kwargs(engine_uid: str, task_uid: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``Client.submit`` keyword arguments for one task."""
    out = dict(kwargs)
    out.setdefault("key", f"{engine_uid}.{task_uid}")
    out.pop("cpus", None)
    gpus = out.pop("gpus", None)
    if gpus and "resources" not in out:
        out["resources"] = {"GPU": gpus}
    return out


def pilot_kwargs(engine_uid: str, task_uid: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``rp.TaskDescription`` fields for one task."""
    if "cpus" not in kwargs and "gpus" not in kwargs:
        return kwargs
    out = dict(kwargs)
    if "cpus" in out:
        out.setdefault("cores_per_rank", out.pop("cpus"))
    if "gpus" in out:
        out.setdefault("gpus_per_rank", out.pop("gpus"))
    return out


# RHAPSODY's backend classes that need a translation, by the module that
# defines them. Looked up only in modules already imported: a backend object
# of one of these classes means its module is loaded, and nothing here
# imports RHAPSODY.
_ADAPTED: tuple[tuple[str, str, Adapter], ...] = (
    ("rhapsody.backends.execution.dask_parallel", "DaskExecutionBackend", dask_kwargs),
    ("rhapsody.backends.execution.radical_pilot", "RadicalExecutionBackend", pilot_kwargs),
)


def adapter_for(backend: object) -> Adapter | None:
    """The translation a backend needs, or None to pass the description as is.

    Decided by the backend's type (subclasses included), never by its name.
    """
    for module_name, class_name, adapter in _ADAPTED:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(backend, cls):
            return adapter
    return None


def runs_exact_argv(backend: object) -> bool:
    """Whether executables must reach ``backend`` as an exact argv: any of
    RHAPSODY's execution backends (see above), recognised by type."""
    module = sys.modules.get("rhapsody.backends.base")
    base = getattr(module, "BaseBackend", None) if module is not None else None
    return isinstance(base, type) and isinstance(backend, base)


def exact_argv_task(desc: TaskDescription) -> TaskDescription:
    """A copy of an executable task dict that runs as an exact argv, shell off."""
    kwargs = {**(desc.get("task_backend_specific_kwargs") or {}), "shell": False}
    line = desc.get("command") if desc.get("shell") else None
    if line is None:
        return cast(TaskDescription, {**desc, "task_backend_specific_kwargs": kwargs})
    return cast(
        TaskDescription,
        {
            **desc,
            "executable": SHELL,
            "arguments": ["-c", line],
            "task_backend_specific_kwargs": kwargs,
        },
    )
