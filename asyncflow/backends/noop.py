"""``NoopExecutionBackend``: a dry run that never runs user code."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import SUBMITTED, BaseBackend, Submitted, TaskDescription

__all__ = ["NoopExecutionBackend"]

DUMMY_OUTPUT = "Dummy Output"
DUMMY_PROMPT_OUTPUT = "Dummy Prompt Output"


class NoopExecutionBackend(BaseBackend):
    """Completes every task at once with ``"Dummy Output"``.
    Tasks are reported DONE without a RUNNING report; with telemetry on, the
    engine records their run as starting and ending at that moment.

    Prompt tasks get ``"Dummy Prompt Output"``. Useful to check a workflow's
    shape, routing and telemetry without running anything, and to measure
    the engine's own cost.

    Args:
        name: the backend name.
    """

    dry_run: ClassVar[bool] = True
    """Its results are placeholders: the engine never caches them."""

    # What this class's submit_tasks does (see the Backend protocol); a
    # subclass that overrides submit_tasks does not inherit these claims.
    reports_inline: ClassVar[bool] = True
    """Every task is reported before ``submit_tasks`` returns, on the calling
    thread (the event loop's): the engine registers a callback that skips
    the thread check."""

    reads_metadata: ClassVar[bool] = False
    """A task's ``metadata`` is never read: the engine makes it when
    ``engine.components`` reads the description."""

    def __init__(self, name: str = "default") -> None:
        super().__init__(name)

    def submit_tasks(self, tasks: list[TaskDescription]) -> Submitted:
        """Report every task DONE with a dummy result (before returning)."""
        callback = self._callback
        for task in tasks:
            if task.get("function") is not None:  # a function task (checked first: most are)
                task["return_value"] = DUMMY_OUTPUT
            elif task.get("prompt") is not None:
                task["return_value"] = DUMMY_PROMPT_OUTPUT
            elif task.get("executable"):
                task["stdout"] = DUMMY_OUTPUT
                task["stderr"] = ""
                task["exit_code"] = 0
                task["return_value"] = DUMMY_OUTPUT
            else:
                task["return_value"] = DUMMY_OUTPUT
            callback(task, "DONE")
        return SUBMITTED

    async def cancel_task(self, uid: str) -> bool:
        """Nothing runs, so nothing can be cancelled."""
        return False

    async def shutdown(self) -> None:
        """Nothing to stop."""

    def __await__(self) -> Any:
        async def _self() -> NoopExecutionBackend:
            return self

        return _self().__await__()
