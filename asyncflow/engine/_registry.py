"""``engine.components``: a read-only view of every task and block by uid."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from ..telemetry.names import LEVEL_BLOCK, LEVEL_TASK, TYPE_BLOCK

if TYPE_CHECKING:
    from ..backends._base import TaskDescription
    from ._future import TaskFuture

__all__ = ["Components", "DependencyList"]


class Components(Mapping[str, dict[str, Any]]):
    """``components[uid]`` is ``{"type": "task"|"block", "future": f, "description": {...}}``.

    The entries are made on access from the engine's task records, so holding
    100,000 tasks costs no second dict per task. The description is the dict
    the backend received (results written in) once the task was released;
    before that, the arguments still hold the unresolved futures.
    """

    __slots__ = ("_describe", "_tasks")

    def __init__(
        self,
        tasks: dict[str, TaskFuture[Any]],
        describe: Callable[[TaskFuture[Any]], TaskDescription],
    ) -> None:
        self._tasks = tasks
        self._describe = describe

    def __getitem__(self, uid: str) -> dict[str, Any]:
        fut = self._tasks[uid]
        return {
            "type": LEVEL_BLOCK if fut.kind == TYPE_BLOCK else LEVEL_TASK,
            "future": fut,
            "description": self._describe(fut),
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, uid: object) -> bool:
        return uid in self._tasks


def _entry(dep: Any) -> dict[str, Any]:
    return {"uid": getattr(dep, "uid", None), "name": getattr(dep, "name", None)}


class DependencyList(Sequence[dict[str, Any]]):
    """``metadata["dependencies"]``: the ``{"uid", "name"}`` of each dependency.

    The dicts are made when read, not when every task is described: a task
    with 10,000 dependencies costs a reference, not 10,000 dicts. Compares
    equal to a tuple or list of the same dicts.
    """

    __slots__ = ("_deps",)

    def __init__(self, deps: Sequence[Any]) -> None:
        self._deps = deps

    def __len__(self) -> int:
        return len(self._deps)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[dict[str, Any], ...]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(_entry(d) for d in self._deps[index])
        return _entry(self._deps[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (_entry(d) for d in self._deps)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (DependencyList, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(self))
