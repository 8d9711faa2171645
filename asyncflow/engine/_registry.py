"""``engine.components``: a read-only view of every task and block by uid."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._future import TaskFuture

__all__ = ["Components"]


class Components(Mapping[str, dict[str, Any]]):
    """``components[uid]`` is ``{"type": "task"|"block", "future": f, "description": {...}}``.

    The entries are made on access from the engine's task records, so holding
    100,000 tasks costs no second dict per task. The description is the dict
    the backend received (results written in) once the task was released;
    before that, the arguments still hold the unresolved futures.
    """

    __slots__ = ("_tasks",)

    def __init__(self, tasks: dict[str, TaskFuture[Any]]) -> None:
        self._tasks = tasks

    def __getitem__(self, uid: str) -> dict[str, Any]:
        fut = self._tasks[uid]
        desc = fut._desc
        if desc is None:
            desc = fut._engine._describe(fut, fut.args, fut.kwargs)
        return {
            "type": "block" if fut.kind == "block" else "task",
            "future": fut,
            "description": desc,
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, uid: object) -> bool:
        return uid in self._tasks
