"""What every built-in backend shares: name, callback, working directory.

The engine drives backends through a duck-typed interface (the one RHAPSODY
backends have): ``name``, ``register_callback(cb)``,
``get_task_states_map()``, ``async submit_tasks(list)``,
``async cancel_task(uid)``, ``async shutdown()``, a writable ``_work_dir``,
``is_attached`` and ``attached_to``. A backend reports each task with
``cb(task_dict, state)`` where state is ``RUNNING``, ``DONE``, ``FAILED`` or
``CANCELED``, and writes results into the task dict under the RHAPSODY field
names (``return_value``, ``stdout``, ``stderr``, ``exit_code``, ``exception``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["TASK_STATES", "BaseBackend", "StateCallback"]

logger = logging.getLogger("asyncflow.backends")

StateCallback = Callable[[dict[str, Any], str], None]

TASK_STATES: dict[str, str] = {
    "RUNNING": "RUNNING",
    "DONE": "DONE",
    "FAILED": "FAILED",
    "CANCELED": "CANCELED",
}


def _no_callback(task: dict[str, Any], state: str) -> None:
    logger.debug("task %s is %s but no callback is registered", task.get("uid"), state)


class BaseBackend:
    """The common part of the built-in backends.

    Args:
        name: the name tasks are routed by (``backend="<name>"``).
    """

    supports_implicit_data_linking = False
    supports_explicit_data_linking = False

    def __init__(self, name: str = "default") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"backend name must be a non-empty string, not {name!r}")
        self.name = name
        self._callback: StateCallback = _no_callback
        self._work_dir: str = os.getcwd()
        self.is_attached = False
        self.attached_to: list[str] = []

    def register_callback(self, callback: StateCallback) -> None:
        """Set the function that receives ``(task, state)`` reports."""
        self._callback = callback

    def get_task_states_map(self) -> dict[str, str]:
        """The state names this backend reports."""
        return dict(TASK_STATES)

    def link_implicit_data_deps(self, src_task: dict[str, Any], dst_task: dict[str, Any]) -> None:
        """Nothing to do: built-in backends share one file system."""

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> None:
        """Nothing to do: built-in backends share one file system."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
